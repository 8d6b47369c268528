"""What every frame source yields: one chunk per second of stream."""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import SourceError

#: File suffixes taken as videos when a folder is searched for them (`eval generate`, `data ...`).
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv", ".ts", ".mpg", ".mpeg")


@dataclass
class Chunk:
    start: float  # stream time of the chunk's first sample, seconds
    end: float
    frames: np.ndarray  # (fps, H, W, 3) uint8 RGB
    #: live sources: `time.monotonic()` at which the chunk's last sample was live (its frame had
    #: arrived and its time had come); glass-to-text latency = time the text is out - captured_at
    captured_at: float | None = None


def sample_times(start: float, fps: int) -> list[float]:
    """Sample times of the second starting at `start`: start + j / fps."""
    return [start + j / fps for j in range(fps)]


class ArraySource:
    """Frames from any iterable of (H, W, 3) uint8 arrays sampled at `fps`, grouped into seconds."""

    def __init__(self, frames: Iterable[np.ndarray], fps: int = 2, start: float = 0.0):
        self.frames, self.fps, self.start = frames, fps, start

    def __iter__(self) -> Iterator[Chunk]:
        batch: list[np.ndarray] = []
        second = 0
        for frame in self.frames:
            frame = np.asarray(frame)
            if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
                raise SourceError(
                    f"frame {second * self.fps + len(batch)} is {frame.dtype} {frame.shape}, "
                    "expected uint8 (H, W, 3)"
                )
            batch.append(frame)
            if len(batch) == self.fps:
                t = self.start + second
                yield Chunk(t, t + 1.0, _stack(batch, t))
                batch, second = [], second + 1


def _stack(frames: list[np.ndarray], t: float) -> np.ndarray:
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise SourceError(f"frames of one second differ in size at {t:.1f} s: {sorted(shapes)}")
    return np.stack(frames)
