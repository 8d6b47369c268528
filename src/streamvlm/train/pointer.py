"""Pointer supervision: a throw-away attention loss that teaches a head to find the latest number.

Carrying a running score forward ("Blue scores! Red three Blue four" after "... Red three Blue
three", hundreds of tokens back in the chat layout) needs a head that attends from where the number
is about to be said to the *latest* number said after "Red" (resp. "Blue"). Learned from the number
loss alone this is slow on a tiny model: it attends to several earlier scores and answers one off.
Here head `heads[i]` of layer `layer` is told, at every position, where that number is
(`data.sample.pointer_targets`): the loss is -log(attention weight on it), averaged over the
positions that have one. Like the vision warm-up's per-second head, it only shapes training;
inference and the saved model are unchanged.

The hook is the public one `transformers` has for this, an attention function registered with
`AttentionInterface`: it runs the stock SDPA attention and, in the supervised layer, recomputes the
softmax of the supervised heads (one (L, L) map each) to read off the loss.

Measured on the world (two heads of layer 2): on frame-less 24 s chat windows from the shipped
model (batch 16, 10 min) the heads put 99 % of their weight on the right number within 150 steps
and the teacher-forced copy of the score in serve lines went 69 % -> 96 %; in the full SFT recipe
(`streamvlm world train-model --pointer-supervision`) serve lines 79.5 % -> 92.8 %, but point lines
(copy + 1) 40.5 % -> 31.1 %: the increment, not the lookup, is then what fails.
"""

from contextlib import contextmanager

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from ..errors import StreamvlmError

NAME = "streamvlm_pointer_sdpa"
_state: dict = {"targets": None, "layer": None, "heads": (), "loss": None}


def supervised_heads(num_heads: int, count: int) -> tuple[int, ...]:
    """`count` heads spread over the layer (with grouped KV heads, different groups first)."""
    if not 1 <= count <= num_heads:
        raise StreamvlmError(f"pointer supervision: {count} words for {num_heads} attention heads")
    return tuple(i * (num_heads // count) for i in range(count))


def _attention(module, query, key, value, attention_mask, **kwargs):
    output = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    targets = _state["targets"]
    if (
        targets is not None
        and getattr(module, "layer_idx", None) == _state["layer"]
        and getattr(module, "is_causal", False)
    ):
        n = query.shape[2]
        causal = torch.ones(n, n, dtype=torch.bool, device=query.device).tril()
        group = query.shape[1] // key.shape[1]
        losses = []
        for i, head in enumerate(_state["heads"]):
            scores = query[:, head].float() @ key[:, head // group].float().transpose(1, 2)
            logp = (scores * module.scaling).masked_fill(~causal, float("-inf")).log_softmax(-1)
            target = targets[:, i, :n]
            picked = logp.gather(-1, target.clamp(min=0)[..., None])[..., 0]
            losses.append(-picked[target >= 0])
        _state["loss"] = torch.cat(losses).mean() if sum(x.numel() for x in losses) else None
    return output


def enable(model) -> None:
    """Route the model's attention through the supervised SDPA (same outputs as "sdpa")."""
    AttentionInterface.register(NAME, _attention)
    model.set_attn_implementation(NAME)


def disable(model) -> None:
    model.set_attn_implementation("sdpa")


@contextmanager
def supervise(targets: torch.Tensor, layer: int, heads: tuple[int, ...]):
    """Inside: a forward pass records the pointer loss of `targets` ((batch, len(heads), n) key
    indices, -1 = none); read it with `loss()`."""
    _state.update(targets=targets, layer=layer, heads=heads, loss=None)
    try:
        yield
    finally:
        _state["targets"] = None


def loss() -> torch.Tensor | None:
    """The pointer loss of the last supervised forward pass (None if no position had a target)."""
    return _state["loss"]
