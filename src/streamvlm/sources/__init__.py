"""Frames in: video files (PyAV), folders of images, arrays, generated clips."""

from pathlib import Path

from ..errors import SourceError
from .base import ArraySource, Chunk, sample_times
from .file import VideoFileSource
from .images import ImageFolderSource
from .synthetic import synthetic_frames, write_video


def open_source(
    spec: str,
    fps: int = 2,
    start: float = 0.0,
    seconds: int | None = None,
    allow_resolution_change: bool = False,
):
    """A frame source for a path: a folder of images or a video file."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return ImageFolderSource(path, fps=fps, start=start, seconds=seconds)
    if not path.exists():
        raise SourceError(f"source {spec} does not exist")
    return VideoFileSource(
        path, fps=fps, start=start, seconds=seconds, allow_resolution_change=allow_resolution_change
    )


__all__ = [
    "ArraySource",
    "Chunk",
    "ImageFolderSource",
    "SourceError",
    "VideoFileSource",
    "open_source",
    "sample_times",
    "synthetic_frames",
    "write_video",
]
