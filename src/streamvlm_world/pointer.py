"""Pointer supervision of a copy head: an attention loss that teaches one head where the number to
copy is (an auxiliary objective, `streamvlm.train.auxiliary`).

Carrying a running score forward ("Blue scores! Red three Blue four" after "... Red three Blue
three", hundreds of tokens back) needs a head that attends, right before a number said after "Red"
(resp. "Blue"), to the latest number said after that same word. `CopyPointer` tells head `head` of
layer `layer` exactly there where that number is (`pointer_targets`); the loss is -log(attention
weight on it), averaged over those positions; elsewhere the head is free. It only shapes training:
inference and the saved model are unchanged. Measured history: docs/world.md.

The hook is the public one transformers has for this, an attention function registered with
`AttentionInterface`: it runs the stock SDPA attention and, in the supervised layer, recomputes the
softmax of the supervised head (one (L, L) map) to read off the loss.
"""

import contextlib
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from streamvlm.data.sample import number_tokens
from streamvlm.errors import StreamvlmError

NAME = "streamvlm_pointer_sdpa"
_state: dict = {"targets": None, "layer": None, "heads": (), "loss": None}


@dataclass
class CopyPointer:
    """The copy head's pointer loss as an auxiliary objective of SFT and replay fine-tuning."""

    words: tuple[str, ...] = ("Red", "Blue")  # the words before the numbers to copy
    layer: int = 2
    head: int = 0
    weight: float = 1.0
    key = "pointer_targets"
    name = "pointer"

    def __post_init__(self):
        self.watching = False

    def check(self, model) -> None:
        text = model.config.text_config
        if not 0 <= self.layer < text.num_hidden_layers or not 0 <= self.head < text.num_attention_heads:
            raise StreamvlmError(
                f"pointer supervision: layer {self.layer} / head {self.head} outside the model's "
                f"{text.num_hidden_layers} layers x {text.num_attention_heads} heads"
            )
        if self.weight <= 0:
            raise StreamvlmError(f"pointer supervision: weight must be > 0, got {self.weight}")

    def enable(self, model) -> None:
        enable(model)

    def disable(self, model) -> None:
        disable(model)

    def sample_targets(self, ids: torch.Tensor, tokenizer) -> torch.Tensor:
        return pointer_targets(ids, tokenizer, list(self.words))

    def watch(self, targets: torch.Tensor | None):
        self.watching = targets is not None and bool((targets >= 0).any())
        if not self.watching:  # nothing to find in this pass: no loss, and no stale one read
            return contextlib.nullcontext()
        return supervise(targets, self.layer, (self.head,))

    def loss(self) -> torch.Tensor | None:
        return loss() if self.watching else None


def pointer_targets(ids: torch.Tensor, tokenizer, words: list[str]) -> torch.Tensor:
    """(1, n): at the position right before each number said after `words[i]`, the index of word i's
    latest number before it; -1 elsewhere (the head looks up the number about to be said, whichever
    word asks for it, and nothing is asked of it anywhere else)."""
    is_number = number_tokens(tokenizer)
    text = {i: tokenizer.decode([i]).strip() for i in set(ids.tolist())}
    latest, previous = [-1] * len(words), None
    asked = [-1] * len(ids)
    for j, token in enumerate(ids.tolist()):
        if previous in words and is_number[token]:
            asked[j - 1] = latest[words.index(previous)]
            latest[words.index(previous)] = j
        previous = text[token] or previous  # a lone space token does not part a word from its number
    return torch.tensor([asked], dtype=torch.long)


def _attention(module, query, key, value, attention_mask, **kwargs):
    output = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    targets = _state["targets"]
    if (
        targets is not None
        and getattr(module, "layer_idx", None) == _state["layer"]
        and getattr(module, "is_causal", False)
    ):
        n, total = query.shape[2], key.shape[2]  # with a cache the queries are the last n keys
        past = total - n
        keys = torch.arange(total, device=query.device)[None]
        rows = past + torch.arange(n, device=query.device)[:, None]  # each query's own key
        allowed = (keys <= rows)[None, None]
        if attention_mask is not None:  # 4-D (padding, `streaming_mask`): bool, or 0 where allowed
            mask = attention_mask[:, :, :, :total]
            allowed = allowed & (mask if mask.dtype == torch.bool else mask == 0)
            allowed = allowed | (keys == rows)  # no empty row
        allowed = allowed.expand(query.shape[0], 1, n, total)
        group = query.shape[1] // key.shape[1]
        losses = []
        for i, head in enumerate(_state["heads"]):
            target = targets[:, i, :n]
            for b in range(query.shape[0]):  # only the rows that have a target (a copy head: a few)
                told = (target[b] >= 0).nonzero()[:, 0]
                if not len(told):
                    continue
                scores = query[b, head, told].float() @ key[b, head // group].float().T
                logp = (scores * module.scaling).masked_fill(~allowed[b, 0, told], float("-inf"))
                logp = logp.log_softmax(-1)
                losses.append(-logp.gather(-1, target[b, told, None])[:, 0])
        _state["loss"] = torch.cat(losses).mean() if sum(x.numel() for x in losses) else None
    return output


def enable(model) -> None:
    """Route the model's attention through the supervised SDPA (same outputs as "sdpa", masks
    included: without a registered mask function transformers would build none, which a cached
    forward pass cannot do without)."""
    AttentionInterface.register(NAME, _attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    model.set_attn_implementation(NAME)


def disable(model) -> None:
    model.set_attn_implementation("sdpa")


@contextmanager
def supervise(targets: torch.Tensor, layer: int, heads: tuple[int, ...]):
    """Inside: a forward pass records the pointer loss of `targets` ((batch, len(heads), n) key
    indices, -1 = none; with a cache, n is the number of new tokens and the indices count every
    cached row first); read it with `loss()`."""
    _state.update(targets=targets, layer=layer, heads=heads, loss=None)
    try:
        yield
    finally:
        _state.update(targets=None)


def loss() -> torch.Tensor | None:
    """The pointer loss of the last supervised forward pass (None if no position had a target)."""
    return _state["loss"]
