"""Glue shared by the command line and other front ends: load a model for a device, stream a
source into commentary / statistics files while showing progress on the terminal."""

import sys
import time

import numpy as np
import torch

from .config import StreamConfig
from .engine import Commentary, StreamingSession
from .engine.writers import CommentaryWriter, JsonlWriter, timestamp
from .errors import StreamvlmError
from .models.default import default_model_dir, is_random_default
from .models.load import LoadedModel, load_model
from .sources.prefetch import Prefetch


def load_for_run(
    model: str | None,
    device: str = "cpu",
    dtype: str | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    quiet: bool = False,
) -> LoadedModel:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise StreamvlmError(f"--device {device}: CUDA is not available on this machine")
    if device != "cpu" and not device.startswith("cuda"):
        raise StreamvlmError(f"--device {device}: use cpu, cuda or cuda:N")
    dtype = dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    if model is None:
        path = default_model_dir()
        if not quiet and is_random_default(path):
            print(
                f"note: no --model given; using a tiny random-weight model ({path}): its commentary is noise",
                file=sys.stderr,
            )
        model = str(path)
    return load_model(model, device=device, dtype=dtype, min_pixels=min_pixels, max_pixels=max_pixels)


def stream_to_files(
    loaded: LoadedModel,
    config: StreamConfig,
    source,
    out: str | None = None,
    stats: str | None = None,
    quiet: bool = False,
    extra_out: list[str] = (),
    describe=None,
) -> list[Commentary]:
    """Stream `source`; every second goes to the files (`out` and `extra_out`, any of .jsonl/.vtt/.srt)
    as soon as it exists. `describe(line)` may replace the printed text (e.g. to add ground truth).
    Returns the lines (without their statistics kept beyond the stats file).

    Live sources (chunks with `captured_at`): each stats line also has `lag_s` (how far behind live
    the engine started the second), `latency_s` (glass to text: the line is written that long after
    its last frame was live) and the source's running counts. A source with `.stats` (live, or a
    recording read through a URL) always ends the stats file with a `{"summary": ...}` line, also
    printed to stderr, after an error, Ctrl-C or a source that never connected too: the seconds
    streamed, p50/p99 of lag and latency (None without a live second) and the source's counts
    and last error."""
    writers = [CommentaryWriter(path) for path in ([out] if out else []) + list(extra_out)]
    stats_writer = JsonlWriter(stats) if stats else None
    status = not quiet and sys.stderr.isatty()
    meter = LiveMeter(getattr(source, "stats", None))
    # a file or folder is decoded a few seconds ahead in a worker thread while the engine steps; a
    # live source has its own reader thread and drop policy, which a queue would defeat
    chunks = Prefetch(source, depth=2) if getattr(source, "stats", None) is None else source
    # on a GPU, a file's next second is at hand: its vision encoding overlaps this second's decoding
    look_ahead = chunks is not source and next(loaded.model.parameters()).device.type == "cuda"
    lines = []
    try:
        session = StreamingSession(loaded, config)
        for chunk, following in with_next(chunks) if look_ahead else ((c, None) for c in chunks):
            taken = time.monotonic()
            ahead = following.frames if following is not None else None
            line = session.step(chunk.frames, chunk.start, chunk.end, ahead=ahead)
            for writer in writers:
                writer.write(line.start, line.end, line.text)
            lines.append(Commentary(line.start, line.end, line.text, None))  # once it is out
            if not quiet:
                show(line, status, describe(line) if describe else line.text)
            row = line.stats.to_dict()
            captured = getattr(chunk, "captured_at", None)
            if captured is not None:
                row.update(meter.add(captured, taken, time.monotonic()))
            if stats_writer:
                stats_writer.write(row)
    finally:
        if chunks is not source:
            chunks.close()
        if status:
            print(file=sys.stderr)
        for writer in writers:
            writer.close()
        if meter.latencies or meter.source_stats is not None:
            summary = meter.summary(len(lines))
            if stats_writer:
                stats_writer.write({"summary": summary})
            if not quiet and lines:  # without a second, the error says it all
                print(f"live: {meter.describe(summary)}", file=sys.stderr)
        if stats_writer:
            stats_writer.close()
    return lines


def with_next(items):
    """(item, the next one or None) for each item. An error raised while fetching the next one comes
    after the pair before it, so everything before the error is still handed over."""
    it = iter(items)
    try:
        current = next(it)
    except StopIteration:
        return
    while True:
        try:
            following = next(it)
        except StopIteration:
            yield current, None
            return
        except BaseException:
            yield current, None
            raise
        yield current, following
        current = following


class LiveMeter:
    """Lag and glass-to-text latency of a live stream, with the source's drop/gap/reconnect counts."""

    def __init__(self, source_stats=None):
        self.source_stats = source_stats
        self.lags: list[float] = []
        self.latencies: list[float] = []

    def add(self, captured: float, taken: float, emitted: float) -> dict:
        self.lags.append(taken - captured)
        self.latencies.append(emitted - captured)
        row = {"lag_s": round(self.lags[-1], 4), "latency_s": round(self.latencies[-1], 4)}
        if self.source_stats is not None:
            s = self.source_stats
            row.update(dropped=s.dropped, gap_seconds=s.gap_seconds, reconnects=s.reconnects)
        return row

    def summary(self, seconds: int) -> dict:
        def pct(values, q):
            return round(float(np.percentile(values, q)), 4) if values else None

        out = {
            "seconds": seconds,
            "latency_p50_s": pct(self.latencies, 50),
            "latency_p99_s": pct(self.latencies, 99),
            "latency_max_s": pct(self.latencies, 100),
            "lag_p50_s": pct(self.lags, 50),
            "lag_p99_s": pct(self.lags, 99),
        }
        if self.source_stats is not None:
            out.update(self.source_stats.to_dict())
        return out

    @staticmethod
    def describe(s: dict) -> str:
        text = f"{s['seconds']} s streamed"
        if s["latency_p50_s"] is not None:
            text += (
                f", glass-to-text latency p50 {s['latency_p50_s']:.2f} s, "
                f"p99 {s['latency_p99_s']:.2f} s; lag p50 {s['lag_p50_s']:.2f} s"
            )
        if "dropped" in s:
            text += (
                f"; {s['dropped']} s dropped (engine behind), {s['gap_seconds']} s without frames, "
                f"{s['reconnects']} reconnect attempts"
            )
        if s.get("last_error"):
            text += f"; last error: {s['last_error']}"
        return text


def show(line: Commentary, status: bool, text: str) -> None:
    if status:
        s = line.stats
        print(
            f"\r\033[K  t={line.start:7.1f}s  cache={s.cache_tokens:6d} tok  max pos={s.max_position:6d}  "
            f"step={s.step_ms:7.1f} ms",
            end="",
            file=sys.stderr,
            flush=True,
        )
    if text:
        if status:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
        print(f"[{timestamp(line.start)[:8]}] {text}", flush=True)
