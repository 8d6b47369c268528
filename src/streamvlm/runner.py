"""Glue shared by the command line and other front ends: load a model for a device, stream a
source into commentary / statistics files while showing progress on the terminal."""

import sys

import torch

from .config import StreamConfig
from .engine import Commentary, StreamingSession
from .engine.writers import CommentaryWriter, JsonlWriter, timestamp
from .errors import StreamvlmError
from .models.default import default_model_dir, is_random_default
from .models.load import LoadedModel, load_model


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
) -> int:
    """Stream `source`; every second goes to the files as soon as it exists. Returns seconds done."""
    writer = CommentaryWriter(out) if out else None
    stats_writer = JsonlWriter(stats) if stats else None
    status = not quiet and sys.stderr.isatty()
    seconds = 0
    try:
        session = StreamingSession(loaded, config)
        for line in session.run(source):
            seconds += 1
            if writer:
                writer.write(line.start, line.end, line.text)
            if stats_writer:
                stats_writer.write(line.stats.to_dict())
            if not quiet:
                show(line, status)
    finally:
        if status:
            print(file=sys.stderr)
        if writer:
            writer.close()
        if stats_writer:
            stats_writer.close()
    return seconds


def show(line: Commentary, status: bool) -> None:
    if status:
        s = line.stats
        print(
            f"\r\033[K  t={line.start:7.1f}s  cache={s.cache_tokens:6d} tok  max pos={s.max_position:6d}  "
            f"step={s.step_ms:7.1f} ms",
            end="",
            file=sys.stderr,
            flush=True,
        )
    if line.text:
        if status:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
        print(f"[{timestamp(line.start)[:8]}] {line.text}", flush=True)
