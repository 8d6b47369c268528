"""The retained token sequence, as spans, and the 3-D positions its tokens hold.

A span is a run of tokens with one role in the chat layout (the prefix, the text memory, a round's
time stamp, its vision tokens, its reply...). Policies edit the span list — drop spans, move a
reply into the memory, cut the memory to head + tail — and `commit()` turns the edit into the plan
the K/V cache applies: which old cache rows survive, in which order, and how far each one moved.

Positions are contiguous by default: after every commit each span starts where the previous one
ends, exactly as a fresh prefill of the retained tokens would place it. Text spans advance one
position per token; a vision span carries its own offsets (t, h, w) and advances by
max(offsets) + 1. With `contiguous=False` ("append" positions) spans keep the positions they were
given and new spans continue after the largest one ever handed out.

Tokens are "fed" once the model has computed their K/V: fed tokens always precede unfed ones.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum

import torch


class Kind(IntEnum):
    PREFIX = 0  # system prompt, query, "previous text" header: never evicted
    MEMORY = 1  # text memory content: head + tail of the previous text and retired commentary
    MEMORY_END = 2  # closes the memory block
    USER_OPEN = 3  # opens a round's user turn
    TIME = 4  # the round's time stamp text
    VISION_OPEN = 5
    VISION = 6  # the round's vision tokens
    VISION_CLOSE = 7
    USER_CLOSE = 8  # closes the user turn
    REPLY_OPEN = 9  # opens the assistant turn
    REPLY = 10  # commentary content: moved into the memory when the round's text retires
    REPLY_CLOSE = 11  # silence marker and end of turn
    QUESTION = 12  # a question asked mid-stream (multiple choice), taken out again once answered


#: Spans that leave with a round's vision, with its text, and when both have left.
VISION_KINDS = frozenset({Kind.VISION_OPEN, Kind.VISION, Kind.VISION_CLOSE})
TEXT_KINDS = frozenset({Kind.TIME, Kind.QUESTION, Kind.REPLY_OPEN, Kind.REPLY, Kind.REPLY_CLOSE})
SHELL_KINDS = frozenset({Kind.USER_OPEN, Kind.USER_CLOSE})
ROUND_KINDS = VISION_KINDS | TEXT_KINDS | SHELL_KINDS

_EMPTY = torch.zeros(0, dtype=torch.long)


@dataclass(eq=False)
class Span:
    kind: Kind
    ids: torch.Tensor  # (n,) token ids
    round: int = -1  # the stream second it belongs to; -1 for prefix and memory
    rel: torch.Tensor | None = None  # (3, n) offsets from the span start (vision); None for text
    pos: torch.Tensor = field(default_factory=lambda: torch.zeros(3, 0, dtype=torch.long))  # (3, n)
    rows: torch.Tensor = field(default_factory=lambda: _EMPTY)  # cache rows of the fed tokens

    def __post_init__(self):
        self.ids = torch.as_tensor(self.ids, dtype=torch.long).reshape(-1)
        if self.rel is not None and self.rel.shape != (3, self.n):
            raise ValueError(f"{self.kind.name}: offsets {tuple(self.rel.shape)} for {self.n} tokens")

    @property
    def n(self) -> int:
        return self.ids.numel()

    @property
    def fed(self) -> int:
        return self.rows.numel()

    @property
    def extent(self) -> int:
        """How many positions the span occupies."""
        if self.rel is None or self.n == 0:
            return self.n
        return int(self.rel.max()) + 1

    def offsets(self) -> torch.Tensor:
        if self.rel is not None:
            return self.rel
        return torch.arange(self.n).expand(3, self.n)


class Layout:
    def __init__(self, contiguous: bool = True):
        self.spans: list[Span] = []
        self.contiguous = contiguous
        self.next_position = 0
        self.fed_rows = 0

    # -- building ---------------------------------------------------------------------------
    def append(self, span: Span) -> Span:
        span.pos = self.next_position + span.offsets()
        span.rows = _EMPTY
        self.next_position += span.extent
        self.spans.append(span)
        return span

    def extend(self, spans: Iterable[Span]) -> None:
        for span in spans:
            self.append(span)

    def append_tokens(self, kind: Kind, round_index: int, ids) -> Span:
        """Add text tokens, growing the last span when it has the same role and round."""
        ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
        last = self.spans[-1] if self.spans else None
        if last is None or last.kind != kind or last.round != round_index or last.rel is not None:
            return self.append(Span(kind, ids, round_index))
        start = int(last.pos[0, -1]) + 1 if last.n else self.next_position
        last.ids = torch.cat((last.ids, ids))
        last.pos = torch.cat((last.pos, (start + torch.arange(ids.numel())).expand(3, -1)), dim=1)
        self.next_position = max(self.next_position, start + ids.numel())
        return last

    def snapshot(self) -> tuple:
        """What `restore` needs to undo every append, token append and feed made after this call
        (span tensors are replaced, never written in place, so references suffice)."""
        kept = [(span, span.ids, span.pos, span.rows) for span in self.spans]
        return kept, self.fed_rows, self.next_position

    def restore(self, snapshot: tuple) -> None:
        kept, self.fed_rows, self.next_position = snapshot
        self.spans = [span for span, *_ in kept]
        for span, ids, pos, rows in kept:
            span.ids, span.pos, span.rows = ids, pos, rows

    # -- reading ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return sum(span.n for span in self.spans)

    def find(self, kind: Kind, round_index: int = -1) -> Span | None:
        for span in self.spans:
            if span.kind == kind and span.round == round_index:
                return span
        return None

    def token_ids(self) -> torch.Tensor:
        return torch.cat([s.ids for s in self.spans]) if self.spans else _EMPTY

    def positions(self) -> torch.Tensor:
        if not self.spans:
            return torch.zeros(3, 0, dtype=torch.long)
        return torch.cat([s.pos for s in self.spans], dim=1)

    def max_position(self) -> int:
        return max((int(s.pos.max()) for s in self.spans if s.n), default=-1)

    def rounds(self) -> list[int]:
        return sorted({s.round for s in self.spans if s.round >= 0})

    def unfed_spans(self) -> list[Span]:
        """The spans holding unfed tokens: always at the end, so walk back to the first fed one."""
        k = len(self.spans)
        while k and (self.spans[k - 1].fed < self.spans[k - 1].n or not self.spans[k - 1].n):
            k -= 1
        return self.spans[k:]

    def unfed(self) -> tuple[torch.Tensor, torch.Tensor, list[Span]]:
        """Ids and positions of the tokens the model has not seen yet, and their vision spans."""
        ids, pos, vision = [], [], []
        for span in self.unfed_spans():
            if span.fed < span.n:
                ids.append(span.ids[span.fed :])
                pos.append(span.pos[:, span.fed :])
                if span.kind == Kind.VISION:
                    if span.fed:
                        raise RuntimeError("a vision span was fed in part")
                    vision.append(span)
        if not ids:
            return _EMPTY, torch.zeros(3, 0, dtype=torch.long), []
        return torch.cat(ids), torch.cat(pos, dim=1), vision

    def mark_fed(self) -> int:
        """Record that every token is now in the cache; returns how many were added."""
        added = 0
        for span in self.unfed_spans():
            missing = span.n - span.fed
            if missing:
                new_rows = torch.arange(self.fed_rows + added, self.fed_rows + added + missing)
                span.rows = torch.cat((span.rows, new_rows))
                added += missing
        self.fed_rows += added
        return added

    def split_last(self, at: int, kind: Kind) -> None:
        """Give the tokens of the last span from index `at` on a new role `kind` (a span of their own)."""
        last = self.spans[-1]
        if at >= last.n:
            return
        if last.rel is not None:
            raise RuntimeError("vision spans cannot be split")
        if at <= 0:
            last.kind = kind
            return
        tail = Span(kind, last.ids[at:], last.round)
        tail.pos, tail.rows = last.pos[:, at:], last.rows[at:]
        last.ids, last.pos, last.rows = last.ids[:at], last.pos[:, :at], last.rows[:at]
        self.spans.append(tail)

    # -- editing (policies) -----------------------------------------------------------------
    def drop(self, where: Callable[[Span], bool]) -> None:
        self.spans = [s for s in self.spans if not where(s)]

    def move_reply_to_memory(self, round_index: int) -> None:
        """Append the round's commentary to the text memory, keeping its K/V rows."""
        reply = self.find(Kind.REPLY, round_index)
        memory = self.find(Kind.MEMORY)
        if reply is None:
            return
        if memory is None:
            raise RuntimeError("the layout has no text memory to move commentary into")
        if reply.fed != reply.n or memory.fed != memory.n:
            raise RuntimeError("only tokens already in the cache can be moved")
        memory.ids = torch.cat((memory.ids, reply.ids))
        memory.pos = torch.cat((memory.pos, reply.pos), dim=1)
        memory.rows = torch.cat((memory.rows, reply.rows))
        self.spans.remove(reply)

    def trim_memory(self, head: int, tail: int) -> None:
        """Keep the first `head` and last `tail` tokens of the text memory."""
        memory = self.find(Kind.MEMORY)
        if memory is None or memory.n <= head + tail:
            return
        keep = torch.cat((torch.arange(head), torch.arange(memory.n - tail, memory.n)))
        if 0 < memory.fed < memory.n:
            raise RuntimeError("the text memory is fed in part")
        memory.ids = memory.ids[keep]
        memory.pos = memory.pos[:, keep]
        if memory.fed:
            memory.rows = memory.rows[keep]

    def unfeed(self) -> None:
        """Forget every cached row (the recompute baseline re-encodes everything)."""
        for span in self.spans:
            span.rows = _EMPTY
        self.fed_rows = 0

    # -- the plan ---------------------------------------------------------------------------
    def commit(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Settle positions after edits; return `(src, delta)` for `StreamingKVCache.reindex`."""
        seen_unfed = False
        for span in self.spans:
            if seen_unfed and span.fed:
                raise RuntimeError(f"{span.kind.name} of round {span.round} is cached after uncached tokens")
            seen_unfed = seen_unfed or span.fed < span.n
        fed_spans = [s for s in self.spans if s.fed]
        src = torch.cat([s.rows for s in fed_spans]) if fed_spans else _EMPTY
        old = torch.cat([s.pos[:, : s.fed] for s in fed_spans], dim=1) if fed_spans else None
        if self.contiguous:
            start = 0
            for span in self.spans:
                span.pos = start + span.offsets()
                start += span.extent
            self.next_position = start
        if old is None:
            delta = _EMPTY
        else:
            new = torch.cat([s.pos[:, : s.fed] for s in fed_spans], dim=1)
            moved = new - old
            delta = moved[0]
            if not bool((moved == delta).all()):
                raise RuntimeError("a retained span moved by different amounts on the t/h/w axes")
        offset = 0
        for span in self.spans:
            span.rows = torch.arange(offset, offset + span.fed)
            offset += span.fed
        self.fed_rows = offset
        return src, delta
