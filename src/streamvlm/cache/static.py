"""The K/V store at a fixed capacity, for a one-token decode step whose shapes never change (issue 28).

`StaticKVCache` is a `StreamingKVCache` whose buffers are allocated once, at a capacity the policy
bounds (`static_capacity`), so that a compiled decode step (`engine.forward.CompiledDecode`) sees
the same tensors, at the same shapes, for the whole stream:

- **prefill** (eager, any length) goes through `StreamingKVCache` unchanged: rows are appended at
  `length`, attention reads rows `[0, length)`, the mask is transformers' causal mask;
- **decode** (inside `stepping()`): the new token's K/V are written at row `step_index` (a 1-element
  tensor, = `length`, set before the step) with `index_copy_`, and attention reads *all* `capacity`
  rows. `step_mask()` hides the rows past `step_index` (a (1, 1, 1, capacity) boolean mask that the
  engine hands the model as its prepared mask). No Python integer that changes from token to token
  is read inside the step, so it compiles once.
- **eviction** (`reindex`, inherited) compacts and re-rotates in place: new row j is written into
  row j of the same buffers, rows past the new length keep stale (finite) values the mask hides.

The buffers start zeroed (a masked row must never hold NaN: SDPA multiplies masked weights by the
values, 0 · NaN = NaN). If the rows ever outgrow the capacity (a long multiple-choice question, a
margin too small), the buffers are reallocated at twice the size (`regrowths` counts it) and the
compiled step recompiles once for the new shape: correct, and bounded by log2 of the growth.
"""

import math
import warnings
from collections.abc import Callable

import torch

from ..errors import StreamvlmError
from .kv import StreamingKVCache, StreamingLayer
from .layout import VISION_KINDS, Kind, Layout
from .policy import FullPolicy, Policy, SlidingPolicy, StreamingPolicy

#: Tokens added to every round's own count: its time stamp grows a digit now and then, and the
#: end of turn after a reply cut at the token limit.
ROUND_SLACK = 16
#: Rows added to the whole capacity, and the multiple it is rounded up to.
MARGIN = 64


def rounds_kept(policy: Policy) -> int:
    """The most rounds whose rows the cache holds at once (the current one included)."""
    if isinstance(policy, StreamingPolicy):  # (and recompute, a subclass)
        return max(policy.vision_window, policy.text_rounds) + 1
    if isinstance(policy, SlidingPolicy):
        return policy.reset_every + 1
    if isinstance(policy, FullPolicy):
        raise StreamvlmError(
            "compile needs a bounded cache, and policy 'full' keeps every round: use streaming, "
            "sliding or recompute, or run without compile"
        )
    raise StreamvlmError(f"compile: no capacity rule for policy {policy.name!r}")


def static_capacity(policy: Policy, layout: Layout, max_new_tokens: int) -> int:
    """Rows a stream under `policy` can hold at once, from `layout` as it stands before its first
    feed (the prefix and round 0, whose vision span gives the vision tokens of a second):

        prefix + text memory (text_sink + text_window) + rounds kept × (tokens of round 0's user turn
        and reply header + max_new_tokens + ROUND_SLACK) + MARGIN, rounded up to a multiple of MARGIN.

    Every round is counted with its vision, whether or not the policy still keeps it (vision_window
    and text_rounds differ: the larger wins); a query in round 0 is counted in every round.
    """
    rounds = rounds_kept(policy)
    fixed = sum(s.n for s in layout.spans if s.round < 0 and s.kind != Kind.MEMORY)
    memory = layout.find(Kind.MEMORY)
    memory_rows = memory.n if memory is not None else 0
    if isinstance(policy, StreamingPolicy):
        memory_rows = max(memory_rows, policy.text_sink + policy.text_window)
    first = [s for s in layout.spans if s.round >= 0]
    first_round = first[0].round if first else None
    per_round = sum(s.n for s in first if s.round == first_round) + max_new_tokens + ROUND_SLACK
    if not any(s.kind in VISION_KINDS for s in first):
        per_round += MARGIN  # no frames seen yet: a guess, regrown if wrong
    rows = fixed + memory_rows + rounds * per_round + MARGIN
    return MARGIN * math.ceil(rows / MARGIN)


class StaticLayer(StreamingLayer):
    """One layer's rows in buffers of the cache's capacity."""

    is_compileable = True

    def __init__(self, owner: "StaticKVCache"):
        super().__init__()
        self.owner = owner

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        b, h, _, d = key_states.shape
        self.device, self.dtype = key_states.device, key_states.dtype
        capacity = self.owner.capacity
        self.keys = key_states.new_zeros(b, h, capacity, d)
        self.keys_orig = key_states.new_zeros(b, h, capacity, d)
        self.values = value_states.new_zeros(b, h, capacity, value_states.shape[-1])
        self.is_initialized = True
        self.owner.mark_static(self)

    def reserve(self, rows: int) -> None:
        capacity = self.keys.shape[-2]
        if rows <= capacity:
            return
        self.owner.regrow(max(rows, 2 * capacity))
        for name in ("keys", "keys_orig", "values"):
            old = getattr(self, name)
            new = old.new_zeros(*old.shape[:2], self.owner.capacity, old.shape[-1])
            new[:, :, : self.length] = old[:, :, : self.length]
            setattr(self, name, new)
        self.owner.mark_static(self)

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.owner.is_stepping:
            return super().update(key_states, value_states, *args, **kwargs)
        index = self.owner.step_index
        self.keys.index_copy_(2, index, key_states)
        self.keys_orig.index_copy_(2, index, key_states)
        self.values.index_copy_(2, index, value_states)
        return self.keys, self.values

    def get_max_length(self) -> int:
        return self.keys.shape[-2] if self.is_initialized else -1


class StaticKVCache(StreamingKVCache):
    """`StreamingKVCache` at a fixed capacity, with a fixed-shape one-token step (module docstring).

    `capacity` is a row count, or a function giving it, called once, at the first feed (the session
    passes `static_capacity` over its layout then, when the first second's vision tokens are known).
    """

    def __init__(self, inv_freq: torch.Tensor, capacity: int | Callable[[], int]):
        super().__init__(inv_freq, layer_class=lambda: StaticLayer(self))
        self._capacity = capacity
        self.is_stepping = False
        self.step_index: torch.Tensor | None = None  # (1,) long, on the layers' device
        self.regrowths = 0

    @property
    def capacity(self) -> int:
        if callable(self._capacity):
            self._capacity = int(self._capacity())
        return self._capacity

    def regrow(self, capacity: int) -> None:
        if capacity != self.capacity:  # (the first layer to grow sets it; the others follow)
            warnings.warn(
                f"static K/V cache: {capacity} rows needed, {self.capacity} allocated; reallocating "
                "(the compiled decode step recompiles once)",
                stacklevel=3,
            )
            self._capacity = capacity
            self.regrowths += 1

    def mark_static(self, layer: StaticLayer) -> None:
        """On CUDA, tell torch.compile the buffers keep their address, so CUDA graphs may write them."""
        if layer.device.type == "cuda":
            for buf in (layer.keys, layer.keys_orig, layer.values):
                torch._dynamo.mark_static_address(buf)

    def step_mask(self) -> torch.Tensor:
        """(1, 1, 1, capacity) bool: the rows the one-token step attends to, `[0, step_index]`."""
        keys = self.layers[0].keys
        rows = torch.arange(keys.shape[-2], device=keys.device)
        return (rows <= self.step_index).view(1, 1, 1, -1)

    def begin_step(self) -> None:
        """Before a one-token step: the new row goes at `rows`; attention reads every buffer row."""
        if not self.layers or not self.layers[0].is_initialized:
            raise RuntimeError("the one-token step needs a prefilled cache")
        self.reserve_all(self.rows + 1)
        if self.step_index is None:
            self.step_index = torch.zeros(1, dtype=torch.long, device=self.layers[0].device)
            if self.step_index.device.type == "cuda":
                torch._dynamo.mark_static_address(self.step_index)
        self.step_index.fill_(self.rows)
        self.is_stepping = True

    def end_step(self, ok: bool = True) -> None:
        """After a one-token step: count the row (length, shift) unless the step failed."""
        self.is_stepping = False
        if ok:
            for layer in self.layers:
                layer.length += 1
            self.shift = torch.cat((self.shift, self.shift.new_zeros(1)))

    def reserve_all(self, rows: int) -> None:
        for layer in self.layers:
            layer.reserve(rows)

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        if self.is_stepping:  # (shift and length are counted by end_step, outside the compiled step)
            return self.layers[layer_idx].update(key_states, value_states)
        return super().update(key_states, value_states, layer_idx, *args, **kwargs)
