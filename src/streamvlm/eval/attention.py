"""Where attention goes: the share of attention mass on each part of the retained sequence.

At a probe second t the current round's tokens (its user turn and assistant header) are the
queries; every key is put in one group:

    sink            system prompt, query, the memory block's header and end (never evicted)
    memory          text memory (previous text head + tail, retired commentary)
    recent_text     time stamps, turn markers and replies of rounds the streaming policy keeps in place
    recent_vision   vision of the rounds inside the vision window
    evicted_text    text of older rounds (the streaming cache moved or dropped it)
    evicted_vision  vision of older rounds (gone from the streaming cache)
    current         round t itself

Per text layer, share[group] = mean over heads and query tokens of the summed softmax weights on
that group's keys (shares sum to 1). `probe_attention` measures them for the streaming cache and
for full attention over exactly the same tokens: a shadow `full` session that watches the same
frames and replays the streamed session's generated tokens one for one.

The probabilities are read through a public seam: an attention function registered with
transformers' `AttentionInterface` that runs the usual SDPA and, while a recorder is armed, also
computes softmax(QK^T / sqrt(d) + mask) for that call. Nothing in transformers is patched.
"""

import contextlib
from collections import deque
from dataclasses import replace

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ..cache.layout import VISION_KINDS, Kind
from ..config import StreamConfig
from ..engine import StreamingSession

ATTN_NAME = "streamvlm_probe"
GROUPS = ("sink", "memory", "recent_text", "recent_vision", "evicted_text", "evicted_vision", "current")
_recorders: list["Recorder"] = []  # the armed recorder, if any


def _probe_attention(module, query, key, value, attention_mask, **kwargs):
    out = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if _recorders:
        _recorders[-1].record(module.layer_idx, query, key, attention_mask, kwargs.get("scaling"))
    return out


AttentionInterface.register(ATTN_NAME, _probe_attention)
AttentionMaskInterface.register(ATTN_NAME, sdpa_mask)


class Recorder:
    """Per text layer, every attention call while armed: (keys seen, head-mean probabilities (q, k))."""

    def __init__(self):
        self.calls: dict[int, list[tuple[int, torch.Tensor]]] = {}

    def record(self, layer: int, query, key, mask, scaling) -> None:
        q, k = query[0].float(), key[0].float()  # (heads, q, d), (kv_heads, k, d); batch 1
        k = k.repeat_interleave(q.shape[0] // k.shape[0], dim=0)  # grouped-query heads share keys
        scores = q @ k.transpose(1, 2) * (scaling if scaling is not None else q.shape[-1] ** -0.5)
        nq, nk = scores.shape[-2:]
        if mask is None:  # SDPA's causal shortcut: query i sees keys up to nk - nq + i
            mask = torch.arange(nk)[None, :] <= torch.arange(nq)[:, None] + (nk - nq)
        mask = mask[0, 0].to(scores.device)
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask.float()
        self.calls.setdefault(layer, []).append((nk, scores.softmax(-1).mean(0).cpu()))

    def probs_ending_at(self, n_keys: int) -> list[torch.Tensor]:
        """Per layer, the probabilities of the call that saw exactly `n_keys` keys."""
        out = []
        for layer in sorted(self.calls):
            found = [p for nk, p in self.calls[layer] if nk == n_keys]
            if not found:
                raise RuntimeError(f"no attention call of layer {layer} saw {n_keys} keys")
            out.append(found[0])
        return out


@contextlib.contextmanager
def recording(model):
    """Route the text model's attention through the probe function and arm a fresh recorder."""
    text_config = model.config.text_config
    before = text_config._attn_implementation
    model.set_attn_implementation({"text_config": ATTN_NAME})
    recorder = Recorder()
    _recorders.append(recorder)
    try:
        yield recorder
    finally:
        _recorders.remove(recorder)
        model.set_attn_implementation({"text_config": before})


def group_of(span, t: int, vision_window: int, text_rounds: int) -> str:
    if span.kind in (Kind.PREFIX, Kind.MEMORY_END):
        return "sink"
    if span.kind == Kind.MEMORY:
        return "memory"
    if span.round == t:
        return "current"
    age = t - span.round
    if span.kind in VISION_KINDS:
        return "recent_vision" if age < vision_window else "evicted_vision"
    return "recent_text" if age < text_rounds else "evicted_text"


def key_groups(layout, t: int, vision_window: int, text_rounds: int) -> list[str]:
    """The group of every cached row, in row order."""
    groups: list[str | None] = [None] * layout.fed_rows
    for span in layout.spans:
        for row in span.rows.tolist():
            groups[row] = group_of(span, t, vision_window, text_rounds)
    return groups


def round_prompt_rows(layout, t: int) -> list[int]:
    """Cache rows of round t's prompt tokens (user turn + assistant header, not its reply)."""
    return sorted(
        row
        for s in layout.spans
        if s.round == t and s.kind not in (Kind.REPLY, Kind.REPLY_CLOSE)
        for row in s.rows.tolist()
    )


def shares(probs: torch.Tensor, groups: list[str], query_rows: list[int]) -> dict[str, float]:
    """Mean over `query_rows` of the attention mass on each group; `probs` holds the last q rows."""
    nq, nk = probs.shape
    first = nk - nq  # global row of the first query
    picked = probs[[r - first for r in query_rows]]  # (queries, keys)
    mass = picked.mean(0)
    index = torch.tensor([GROUPS.index(g) for g in groups[:nk]])
    totals = torch.zeros(len(GROUPS), dtype=mass.dtype).index_add_(0, index, mass)
    return {g: float(v) for g, v in zip(GROUPS, totals, strict=True)}


def layer_shares(recorder: Recorder, session, t: int) -> tuple[int, list[dict[str, float]]]:
    """Keys seen by round t's prefill in `session` and, per layer, its shares (call right after the step)."""
    cfg = session.config
    rows = round_prompt_rows(session.layout, t)
    groups = key_groups(session.layout, t, cfg.vision_window, cfg.text_rounds)
    n_keys = rows[-1] + 1
    return n_keys, [shares(p, groups, rows) for p in recorder.probs_ending_at(n_keys)]


class _Recording:
    """Wraps a session's sampler and keeps every token it picks."""

    def __init__(self, sampler):
        self.sampler, self.tokens = sampler, deque()

    def __getattr__(self, name):
        return getattr(self.sampler, name)

    def __call__(self, logits, seen):
        token = self.sampler(logits, seen)
        self.tokens.append(token)
        return token


class _Replay:
    """Hands back the tokens another session picked, in order (the shadow session's sampler)."""

    repetition_penalty = 1.0

    def __init__(self, tokens: deque):
        self.tokens = tokens

    def __call__(self, logits, seen):
        return self.tokens.popleft()


def probe_attention(loaded, config: StreamConfig, source, probes: list[int], on_second=None) -> dict:
    """Attention shares per probe second and layer, streamed cache vs full attention on the same tokens.
    `source` yields the stream's seconds (chunks with `frames`, `start`, `end`) at least up to the last
    probe; `config` carries the stream's prompt (previous text, query)."""
    stream = StreamingSession(loaded, config)
    shadow = StreamingSession(loaded, replace(config, policy="full"))
    stream.sampler = _Recording(stream.sampler)
    shadow.sampler = _Replay(stream.sampler.tokens)
    results = []
    for chunk in source:
        if stream.round > max(probes):
            break
        t = stream.round
        if t not in probes:
            stream.step(chunk.frames, chunk.start, chunk.end)
            shadow.step(chunk.frames, chunk.start, chunk.end)
        else:
            probe = {"t": t}
            for name, session in (("streaming", stream), ("full", shadow)):
                with recording(loaded.model) as recorder:
                    session.step(chunk.frames, chunk.start, chunk.end)
                probe[f"{name}_keys"], probe[name] = layer_shares(recorder, session, t)
            results.append(probe)
        if on_second is not None:
            on_second(t)
    return {"groups": list(GROUPS), "probes": results}
