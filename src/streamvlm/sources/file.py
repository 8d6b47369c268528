"""Video files through PyAV, sampled at a fixed rate from any start time.

Seeking lands on the keyframe at or before the start (`backward=True`) and decodes forward; the
frame shown at sample time τ is the last frame whose timestamp is <= τ. A second is produced only
when all of its samples exist; asking for more seconds than the file holds is an error raised after
every complete second has been delivered.
"""

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from ..errors import SourceError
from .base import Chunk, sample_times

EPS = 1e-3  # timestamps are rational; allow a millisecond of rounding


class VideoFileSource:
    def __init__(
        self,
        path: str | Path,
        fps: int = 2,
        start: float = 0.0,
        seconds: int | None = None,
        allow_resolution_change: bool = False,
    ):
        self.path = Path(path)
        self.fps, self.start, self.seconds = fps, float(start), seconds
        self.allow_resolution_change = allow_resolution_change
        if start < 0:
            raise SourceError(f"start time must be >= 0, got {start}")
        if seconds is not None and seconds < 1:
            raise SourceError(f"seconds must be >= 1, got {seconds}")
        if not self.path.exists():
            raise SourceError(f"video file {self.path} does not exist")
        if not self.path.is_file():
            raise SourceError(f"{self.path} is not a file")
        with self._open() as container:
            stream = self._video_stream(container)
            self.width, self.height = stream.codec_context.width, stream.codec_context.height
            self.duration = _duration(container, stream)
        if self.duration is not None and self.start >= self.duration:
            raise SourceError(
                f"start {self.start:.1f} s is past the end of {self.path} ({self.duration:.1f} s)"
            )

    def _open(self):
        try:
            return av.open(str(self.path))
        except PermissionError as exc:
            raise SourceError(f"cannot read {self.path}: permission denied") from exc
        except av.error.FFmpegError as exc:
            raise SourceError(f"{self.path} is not a readable video ({exc.strerror or exc})") from exc

    def _video_stream(self, container):
        if not container.streams.video:
            raise SourceError(f"{self.path} has no video stream")
        return container.streams.video[0]

    def __iter__(self) -> Iterator[Chunk]:
        with self._open() as container:
            stream = self._video_stream(container)
            stream.thread_type = "AUTO"
            if self.start > 0:
                container.seek(
                    int(self.start / stream.time_base), stream=stream, backward=True, any_frame=False
                )
            frames = self._decode(container, stream)
            current, upcoming = None, next(frames, None)
            size = None
            second = 0
            while self.seconds is None or second < self.seconds:
                t0 = self.start + second
                picked = []
                for tau in sample_times(t0, self.fps):
                    if current is None and upcoming is not None:
                        current, upcoming = (
                            upcoming,
                            next(frames, None),
                        )  # a stream shows its first frame from 0
                    while upcoming is not None and upcoming[0] <= tau + EPS:
                        current, upcoming = upcoming, next(frames, None)
                    if current is None or (upcoming is None and tau >= current[0] + current[2] - EPS):
                        picked = None  # past the last frame
                        break
                    picked.append(current[1])
                if picked is None:
                    break
                arrays = []
                for frame in picked:
                    if size is None:
                        size = (frame.width, frame.height)
                    elif (frame.width, frame.height) != size:
                        if not self.allow_resolution_change:
                            raise SourceError(
                                f"resolution of {self.path} changes from {size[0]}x{size[1]} to "
                                f"{frame.width}x{frame.height} at {t0:.1f} s"
                            )
                        frame = frame.reformat(width=size[0], height=size[1])
                    arrays.append(frame.to_ndarray(format="rgb24"))
                yield Chunk(t0, t0 + 1.0, np.stack(arrays))
                second += 1
            if self.seconds is not None and second < self.seconds:
                end = self.start + second
                raise SourceError(
                    f"{self.path} ends at {end:.1f} s, "
                    f"before the requested {self.seconds} s from {self.start:.1f} s"
                )

    def _decode(self, container, stream) -> Iterator[tuple[float, "av.VideoFrame", float]]:
        """(time, frame, duration) for every decoded frame, in order."""
        default_duration = 1.0 / float(stream.average_rate) if stream.average_rate else 0.0
        last_time = None
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                t = float(frame.pts * stream.time_base)
                duration = float(frame.duration * stream.time_base) if frame.duration else default_duration
                last_time = t
                yield t, frame, duration
        except av.error.FFmpegError as exc:
            where = f"near {last_time:.1f} s" if last_time is not None else "at its start"
            raise SourceError(f"corrupt video data in {self.path} {where} ({exc.strerror or exc})") from exc


def _duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None
