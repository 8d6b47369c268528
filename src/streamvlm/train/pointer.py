"""Pointer supervision: a throw-away attention loss that teaches a head to find the latest number.

Carrying a running score forward ("Blue scores! Red three Blue four" after "... Red three Blue
three", hundreds of tokens back in the chat layout) needs a head that attends from where the number
is about to be said to the *latest* number said after "Red" (resp. "Blue"). Learned from the number
loss alone this is slow on a tiny model: it attends to several earlier scores and answers one off.
Here head `heads[i]` of layer `layer` is told, at every position, where that number is
(`data.sample.pointer_targets`): the loss is -log(attention weight on it), averaged over the
positions that have one. Like the vision warm-up's per-second head, it only shapes training;
inference and the saved model are unchanged.

Two variants, both off by default:
- a copy head (`pointer_copy_head`, `data.sample.pointer_targets(copy=True)`): one head, told only
  at the position right before a number said after one of the words, where that word's latest
  number is; elsewhere it is free. Its output there is the very number to say, whichever team asks;
- a readout loss (`readout_loss`): what the supervised heads write into the residual stream (their
  attention output through their slice of `o_proj`), read through the model's final norm and output
  head (held fixed), must name the copied number. Finding the number is not enough if the layers
  after the heads ignore what they bring; this asks the heads to say it;
- a code loss (`code_loss`): what the heads write must tell every copied number apart by its
  direction alone (a supervised contrastive loss over the batch), without asking it to be a logit.
  In the world model the copy head hands on a nearly one-dimensional code (n and 11 - n alike).

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
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ..errors import StreamvlmError

NAME = "streamvlm_pointer_sdpa"
_state: dict = {"targets": None, "layer": None, "heads": (), "loss": None, "write": False, "written": []}


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
        losses, written = [], []
        for i, head in enumerate(_state["heads"]):
            target = targets[:, i, :n]
            if _state["write"]:  # zero where the head is not told anything (never read there)
                hidden = module.o_proj.weight.shape[0]
                written.append(query.new_zeros(query.shape[0], n, hidden, dtype=value.dtype))
            for b in range(query.shape[0]):  # only the rows that have a target (a copy head: a few)
                told = (target[b] >= 0).nonzero()[:, 0]
                if not len(told):
                    continue
                scores = query[b, head, told].float() @ key[b, head // group].float().T
                logp = (scores * module.scaling).masked_fill(~allowed[b, 0, told], float("-inf"))
                logp = logp.log_softmax(-1)
                losses.append(-logp.gather(-1, target[b, told, None])[:, 0])
                if _state["write"]:  # the head's output through its slice of o_proj
                    out = logp.exp().to(value.dtype) @ value[b, head // group]
                    d = out.shape[-1]
                    written[-1][b, told] = out @ module.o_proj.weight[:, head * d : (head + 1) * d].T
        _state["written"] = written
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
def supervise(targets: torch.Tensor, layer: int, heads: tuple[int, ...], write: bool = False):
    """Inside: a forward pass records the pointer loss of `targets` ((batch, len(heads), n) key
    indices, -1 = none; with a cache, n is the number of new tokens and the indices count every
    cached row first), read it with `loss()`, and with `write` what the heads wrote (`written()`)."""
    _state.update(targets=targets, layer=layer, heads=heads, loss=None, write=write, written=[])
    try:
        yield
    finally:
        _state.update(targets=None, write=False)


def loss() -> torch.Tensor | None:
    """The pointer loss of the last supervised forward pass (None if no position had a target)."""
    return _state["loss"]


def copy_positions(
    input_ids: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor, copy_head: bool
) -> torch.Tensor:
    """(batch, rows, n - 1) bool: per row of the pointer targets, the positions whose next (labelled)
    token is the number that row points at, i.e. where the reply copies the number its supervised head
    finds. A per-word row counts only where that next token is a number said after its own word (the
    row's latest number then moves to it); a copy head's row is set only there already."""
    n = input_ids.shape[1]
    targets = targets[..., :n]
    here = targets[..., :-1]
    pointed = input_ids[:, None].expand(-1, targets.shape[1], -1).gather(2, here.clamp(min=0))
    mask = (here >= 0) & (pointed == labels[:, None, 1:])
    if not copy_head:
        mask &= targets[..., 1:] == torch.arange(1, n, device=targets.device)
    return mask


def written() -> list[torch.Tensor]:
    """What each supervised head wrote into the residual stream in the last supervised forward pass
    with `supervise(..., write=True)`: one (batch, n, hidden) tensor per head, zero at the positions
    where the head was not told where to look (only those are computed)."""
    return _state["written"]


def code_loss(written: list[torch.Tensor], following, mask, temperature: float = 0.1):
    """Supervised contrastive loss (Khosla et al. 2020) on what the supervised heads wrote at the
    positions of `mask` (`copy_positions`), labelled by the number that follows: over the batch, each
    such vector must be nearer in direction (cosine / `temperature`) to those of the same number than
    to the others. Scale-free: the code must separate the numbers, the layers after it decide how to
    read it. None where no position has another of its number in the batch."""
    losses = []
    for i, contribution in enumerate(written):
        m = mask[:, i]
        z = torch.nn.functional.normalize(contribution[:, :-1][m].float(), dim=-1)
        labels = following[m]
        if len(labels) < 2:
            continue
        eye = torch.eye(len(labels), dtype=torch.bool, device=z.device)
        logp = (z @ z.T / temperature).masked_fill(eye, float("-inf")).log_softmax(-1)
        positive = (labels[:, None] == labels[None]) & ~eye
        anchors = positive.any(-1)
        if not anchors.any():
            continue
        mean = logp.masked_fill(~positive, 0.0).sum(-1)[anchors] / positive.sum(-1)[anchors]
        losses.append(-mean)
    return torch.cat(losses).mean() if losses else None


def readout_loss(model, written: list[torch.Tensor], hidden: torch.Tensor, following, mask):
    """Cross-entropy of the copied numbers read off what the supervised heads wrote (their direct
    effect on the logits: the model's final norm, with the scale of the residual stream `hidden`, and
    output head, both held fixed), at the positions of `mask` (`copy_positions`): a head that finds the
    number must also say it, so the layers after it need not learn to decode it. None where `mask` is
    empty."""
    norm, head = model.get_decoder().norm, model.get_output_embeddings()
    losses = []
    for i, contribution in enumerate(written):
        m = mask[:, i]
        if not m.any():
            continue
        h = hidden[:, :-1][m].detach().float()
        scale = torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
        c = contribution[:, :-1][m].float() * scale * norm.weight.detach().float()
        logits = torch.nn.functional.linear(c, head.weight.detach().float())
        losses.append(torch.nn.functional.cross_entropy(logits, following[m], reduction="none"))
    return torch.cat(losses).mean() if losses else None
