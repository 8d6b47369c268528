"""Cutting long annotated videos into short overlapped training windows (method §5).

A window [s, s + window_s) keeps the words whose end time falls inside it; everything said before
s becomes the window's `previous` text: the record's own context followed by the earlier words,
cut to its first `text_sink` and last `text_window` tokens (counted with the model's tokenizer,
piece by piece exactly as the engine's text memory grows: the context, then " word" per word).
"""

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from ..cache.policy import Windows
from .formats import DataError, StreamRecord


@dataclass
class ChunkStats:
    windows: int = 0
    skipped_empty: int = 0  # records with no words at all
    skipped_past_end: int = 0  # windows beyond the real length of the video


def truncate_pieces(pieces: list[str], tokenizer, head: int, tail: int) -> str:
    """Keep whole pieces: as many from the start as fit in `head` tokens, from the end in `tail`."""
    counts = [len(tokenizer.encode(p, add_special_tokens=False)) for p in pieces]
    if sum(counts) <= head + tail:
        return "".join(pieces)
    first, used = 0, 0
    while first < len(pieces) and used + counts[first] <= head:
        used += counts[first]
        first += 1
    last, used = len(pieces), 0
    while last > first and used + counts[last - 1] <= tail:
        used += counts[last - 1]
        last -= 1
    kept_head = pieces[:first]
    if first == 0 and head:  # a single long context piece: cut it by tokens
        ids = tokenizer.encode(pieces[0], add_special_tokens=False)[:head]
        kept_head = [tokenizer.decode(ids)]
    return "".join(kept_head + pieces[last:])


def make_chunks(
    record: StreamRecord,
    tokenizer,
    window_s: float = 24.0,
    stride_s: float = 12.0,
    text_sink: int = Windows.text_sink,
    text_window: int = Windows.text_window,
    duration_s: float | None = None,
    stats: ChunkStats | None = None,
) -> Iterator[StreamRecord]:
    """Windows of `record` every `stride_s` seconds; a last shorter window is kept if >= stride_s."""
    if window_s <= 0 or stride_s <= 0:
        raise DataError("window and stride must be positive")
    stats = stats or ChunkStats()
    if not record.words:
        stats.skipped_empty += 1
        return
    words = sorted(record.words, key=lambda w: w[1])
    end = record.video_end
    start = record.video_start
    while start < end:
        stop = min(start + window_s, end)
        if stop - start < min(stride_s, window_s) and start > record.video_start:
            break
        if duration_s is not None and stop > duration_s + 1e-3:
            stats.skipped_past_end += 1
            start += stride_s
            continue
        before = [w for w in words if w[1] <= start]
        pieces = [record.previous] + [" " + w[2].strip() for w in before if w[2].strip()]
        stats.windows += 1
        yield replace(
            record,
            video_start=start,
            video_end=stop,
            previous=truncate_pieces(pieces, tokenizer, text_sink, text_window),
            words=[w for w in words if start < w[1] <= stop],
            qa=[q for q in record.qa if len(q) > 1 and start < float(q[1]) <= stop],
        )
        start += stride_s


def relocate(record: StreamRecord, out_dir: Path, text_only: bool = False) -> StreamRecord:
    """The record with its video path written relative to `out_dir` (where the chunks file lives).
    `text_only`: the video need not exist (commentary-only data, never opened)."""
    video = record.video_path(must_exist=not text_only).resolve()
    return replace(record, video=os.path.relpath(video, out_dir.resolve()), root=out_dir)
