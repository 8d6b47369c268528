"""Teacher forcing through the engine's own cache, with gradients: one round of a stream with its
true reply, for training on the view the engine has (`train.replay`).

Built on the session's round API (`StreamingSession.begin_round` / `feed` / `end_round`): the reply
is fed in its own round (not with the next second's prefill, as `step(..., reply=)` does) in one
forward pass that autograd can follow, and every new token's logits come back.
"""

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..cache.layout import Span
from ..engine import StreamingSession


@dataclass
class Forced:
    """One teacher-forced round: the spans fed and their tokens' logits. The spans are the layout's
    own: read them before the next round edits the layout."""

    spans: list[Span]  # the round's new spans (user turn, reply and its close; round 0: the prefix too)
    logits: torch.Tensor  # (n, vocab) over their n tokens: logits[i] predicts token i + 1

    @property
    def ids(self) -> torch.Tensor:
        return torch.cat([s.ids for s in self.spans])


def force(
    session: StreamingSession,
    frames: np.ndarray,
    reply: str,
    start: float | None = None,
    end: float | None = None,
    context: Callable | None = None,
) -> Forced:
    """The next round of `session` with `reply` as its commentary. Old rows come from the cache as
    they are: call `session.cache.detach()` once the round's loss is back-propagated, so the next
    round's graph ends at the cache. `context(ids, cached)`, given every retained token id in
    cache-row order and how many of them are cached already, returns a context manager the forward
    pass runs in (e.g. an auxiliary objective's, `train.auxiliary`)."""
    layout = session.layout
    if session.round and layout.fed_rows != len(layout):  # (the prefix goes with round 0)
        raise RuntimeError("force() needs every earlier token in the cache: do not mix it with step()")
    index, _, _ = session.begin_round(frames, start, end)
    layout.extend(session.renderer.reply(index, reply))
    spans = layout.unfed_spans()
    with context(layout.token_ids(), layout.fed_rows) if context else contextlib.nullcontext():
        logits = session.feed(all_logits=True)
    session.end_round()
    return Forced(spans, logits)
