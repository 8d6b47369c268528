"""Frames in: video files (PyAV), folders of images, arrays, generated clips, live streams."""

from pathlib import Path

from ..errors import SourceError
from .base import ArraySource, Chunk, sample_times
from .file import VideoFileSource
from .images import ImageFolderSource
from .live import LiveSource, is_live, is_recording, open_live
from .paced import LiveStats, PacedSource, RealtimeSource
from .synthetic import synthetic_frames, write_video


def open_source(
    spec: str,
    fps: int = 2,
    start: float = 0.0,
    seconds: int | None = None,
    allow_resolution_change: bool = False,
    *,
    realtime: bool = False,
    max_lag: int = 1,
    reconnect: int | None = 10,
    stdin_size: tuple[int, int] | None = None,
    stdin_format: str = "rgb24",
    stdin_fps: float | None = None,
    rtsp_transport: str = "tcp",
):
    """An iterable of `Chunk`s (one per second) for `spec`: a folder of images, a video file, or a
    live source (`is_live`: a URL, an .m3u8 playlist, /dev/videoN, `-` for raw frames on stdin).

    Live sources, and files or folders with `realtime=True`, are paced by the wall clock (`paced`):
    chunks carry `captured_at`, the source has `.stats` (`LiveStats`) and `.close()`. `max_lag`:
    due seconds that may wait for the engine before the oldest are dropped; `reconnect`: attempts
    in a row after a lost connection (None: forever); `stdin_*`: size (W, H), FFmpeg pixel format
    and frame rate (default `fps`) of raw frames on stdin; `rtsp_transport`: tcp, udp or auto.
    A URL that names a recording (`live.is_recording`: an HTTP file, an ended HLS playlist) is
    read like a file: at the engine's pace, nothing dropped, ending at its end."""
    if is_live(spec):
        if start:
            raise SourceError(f"--start applies to files and folders, not to the live source {spec}")
        return open_live(
            spec, fps, seconds, max_lag=max_lag, reconnect=reconnect, stdin_size=stdin_size,
            stdin_format=stdin_format, stdin_fps=stdin_fps, rtsp_transport=rtsp_transport,
        )  # fmt: skip
    if stdin_size is not None:
        raise SourceError("--stdin-size applies only to raw frames on stdin (SOURCE -)")
    path = Path(spec).expanduser()
    if path.is_dir():
        source = ImageFolderSource(path, fps=fps, start=start, seconds=seconds)
    elif not path.exists():
        raise SourceError(f"source {spec} does not exist")
    else:
        source = VideoFileSource(
            path, fps=fps, start=start, seconds=seconds, allow_resolution_change=allow_resolution_change
        )
    return RealtimeSource(source, fps, max_lag=max_lag) if realtime else source


__all__ = [
    "ArraySource",
    "Chunk",
    "ImageFolderSource",
    "LiveSource",
    "LiveStats",
    "PacedSource",
    "RealtimeSource",
    "SourceError",
    "VideoFileSource",
    "is_live",
    "is_recording",
    "open_source",
    "sample_times",
    "synthetic_frames",
    "write_video",
]
