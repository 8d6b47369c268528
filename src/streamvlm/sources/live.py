"""Live sources through PyAV: network streams, webcams (v4l2) and raw frames on stdin.

Stream time follows the source's timestamps, rebased to 0 at the first frame. After a lost
connection (or a jump in the timestamps) it continues with the wall clock: a source back after
5 s resumes 5 s later in stream time, and the seconds without frames are counted as a gap. The
sample at stream time τ is the last frame with time <= τ, as for files; a frame is repeated for at
most `GAP_S`, a longer silence is a gap. Frames are resized to the size of the first one.

Network streams and devices hand a second to the engine as soon as it is complete (they are live
already); raw frames on stdin are timed by their count at `stdin_fps` and held until their time
comes, so a writer faster than real time is slowed down by the pipe. Either way the buffer follows
the drop policy "latest" of `paced.PacedSource`. A lost connection is retried with exponential
backoff (`backoff`, doubling, at most `BACKOFF_MAX_S`), `reconnect` times in a row (None: forever);
the count starts again once frames flow.
"""

import math
import re
import time
from pathlib import Path

import av
import numpy as np

from ..errors import SourceError
from .base import Chunk
from .paced import PacedSource

GAP_S = 2.0  # a frame is shown for at most this long; longer silences are gaps
EPS = 1e-3
BACKOFF_MAX_S = 8.0
URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
#: Demuxer options for network input: start after 0.5 s of probing (FFmpeg's default is 5 s).
NETWORK_OPTIONS = {"analyzeduration": "500000", "rtsp_transport": "tcp"}


def is_live(spec: str) -> bool:
    """A URL (rtsp://, rtmp://, http(s)://, udp://, ...), an HLS playlist, a /dev/video* device or `-`."""
    return (
        spec == "-"
        or bool(URL.match(spec))
        or spec.startswith("/dev/video")
        or spec.lower().endswith(".m3u8")
    )


def open_live(
    spec: str,
    fps: int = 2,
    seconds: int | None = None,
    max_lag: int = 1,
    reconnect: int | None = 10,
    stdin_size: tuple[int, int] | None = None,
    stdin_format: str = "rgb24",
    stdin_fps: float | None = None,
    timeout: float = 5.0,
) -> "LiveSource":
    """A `LiveSource` for `spec` (see `is_live`); nothing is opened until it is iterated."""
    if spec == "-":
        if stdin_size is None:
            raise SourceError("raw frames on stdin need their size (--stdin-size WxH)")
        width, height = stdin_size
        rate = stdin_fps or fps
        options = {"video_size": f"{width}x{height}", "pixel_format": stdin_format, "framerate": str(rate)}
        return LiveSource(
            "pipe:0", fps, seconds, fmt="rawvideo", options=options, hold=True, reconnect=0,
            timeout=None, max_lag=max_lag, label="stdin",
        )  # fmt: skip
    if stdin_size is not None:
        raise SourceError("--stdin-size applies only to raw frames on stdin (SOURCE -)")
    if spec.startswith("/dev/video"):
        if not Path(spec).exists():
            raise SourceError(f"no video device {spec}")
        return LiveSource(
            spec, fps, seconds, fmt="v4l2", reconnect=reconnect, max_lag=max_lag, timeout=timeout, label=spec
        )
    return LiveSource(
        spec, fps, seconds, options=NETWORK_OPTIONS, reconnect=reconnect, max_lag=max_lag, timeout=timeout
    )


class LiveSource(PacedSource):
    """Frames from a PyAV input (`url`, `fmt` and demuxer `options` as for `av.open`). `hold`: hold
    each second until its time comes (inputs read faster than real time); `reconnect=0`: the end
    of the input ends the stream; `timeout`: seconds a read may block before the connection
    counts as lost (None: forever)."""

    def __init__(
        self,
        url: str,
        fps: int = 2,
        seconds: int | None = None,
        fmt: str | None = None,
        options: dict | None = None,
        hold: bool = False,
        reconnect: int | None = 10,
        backoff: float = 0.5,
        timeout: float | None = 5.0,
        max_lag: int = 1,
        ahead: int = 2,
        label: str | None = None,
    ):
        super().__init__(fps, seconds, max_lag, ahead)
        self.url, self.fmt, self.options, self.hold = url, fmt, dict(options or {}), hold
        self.reconnect, self.backoff, self.timeout = reconnect, backoff, timeout
        self.label = label or url

    def _open(self):
        timeout = None if self.timeout is None else (2 * self.timeout, self.timeout)
        try:
            return av.open(self.url, format=self.fmt, options=self.options, timeout=timeout)
        except av.error.FFmpegError as exc:
            raise ConnectionError(exc.strerror or str(exc)) from exc

    def _produce(self) -> None:
        clock, sampler = _Clock(), _Sampler(self.fps, self.hold, self.stats)
        failures, connected_once = 0, False
        while not self._stop.is_set():
            flowing = False
            try:
                with self._open() as container:
                    if not container.streams.video:
                        raise SourceError(f"{self.label} has no video stream")
                    stream = container.streams.video[0]
                    clock.connect()
                    for frame in container.decode(stream):
                        if self._stop.is_set():
                            return
                        arrival = time.monotonic()
                        t = clock.time(frame, stream.time_base, arrival)
                        if t is None:
                            continue
                        flowing = connected_once = True
                        failures = 0
                        for chunk in sampler.push(t, frame, arrival):
                            if not self._put(chunk):
                                return
                reason = "the stream ended"
            except (ConnectionError, av.error.FFmpegError, OSError) as exc:
                reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            if self._stop.is_set():
                return
            if self.reconnect == 0:  # stdin: the end of the input is the end of the stream
                if reason == "the stream ended" or flowing:
                    return
                raise SourceError(f"cannot read {self.label}: {reason}")
            self.stats.last_error = reason
            sampler.interrupt()
            failures += 1
            if self.reconnect is not None and failures > self.reconnect:
                what = "connection lost" if connected_once else "cannot connect"
                raise SourceError(
                    f"{self.label}: {what} ({reason}); gave up after {self.reconnect} reconnect attempts"
                )
            self.stats.reconnects += 1
            self._stop.wait(min(BACKOFF_MAX_S, self.backoff * 2 ** (failures - 1)))


class _Clock:
    """Stream time of each frame: its timestamp rebased to the first frame; across a reconnect or a
    jump of more than `GAP_S` in the timestamps it continues with the wall clock."""

    def __init__(self):
        self.origin: tuple[float, float] | None = None  # (media time, stream time) of this connection
        self.last: tuple[float, float] | None = None  # (stream time, arrival) of the last frame

    def connect(self) -> None:
        self.origin = None

    def time(self, frame, time_base, arrival: float) -> float | None:
        media = float(frame.pts * time_base) if frame.pts is not None and time_base else None
        if media is not None and self.origin is not None:
            t = self.origin[1] + media - self.origin[0]
            behind = self.last[0] - t
            if -GAP_S <= behind <= GAP_S:
                if behind > EPS:
                    return None  # out of order: skip it
                self.last = (t, arrival)
                return t
        t = 0.0 if self.last is None else self.last[0] + arrival - self.last[1]
        self.origin = (media, t) if media is not None else None
        self.last = (t, arrival)
        return t


class _Sampler:
    """Timed frames -> complete seconds: slot τ = n / fps shows the last frame with time <= τ."""

    def __init__(self, fps: int, hold: bool, stats):
        self.fps, self.hold, self.stats = fps, hold, stats
        self.anchor: float | None = None  # hold: wall-clock time of stream time 0 (slips when late)
        self.current = None  # [time, frame, arrival, rgb array or None]
        self.slot = 0  # next sample index
        self.next_second = 0  # the second expected next (gaps are counted against it)
        self.frames: list[np.ndarray] = []
        self.arrivals: list[float] = []
        self.size: tuple[int, int] | None = None

    def interrupt(self) -> None:
        """The input stopped: forget the partial second and the frame on show."""
        self.current, self.frames, self.arrivals = None, [], []

    def push(self, t: float, frame, arrival: float) -> list[Chunk]:
        if self.hold and (self.anchor is None or arrival > self.anchor + t):
            self.anchor = arrival - t
        if self.current is not None and t - self.current[0] > GAP_S:
            self.interrupt()
        done = []
        if self.current is None:  # sampling (re)starts at the next whole second
            second = max(self.next_second, math.ceil(t - EPS))
            self.stats.gap_seconds += second - self.next_second
            self.slot, self.next_second = second * self.fps, second
        else:
            while self.slot / self.fps < t - EPS:
                chunk = self._fill()
                if chunk is not None:
                    done.append(chunk)
        self.current = [t, frame, arrival, None]
        return done

    def _fill(self) -> Chunk | None:
        cur = self.current
        if cur[3] is None:
            if self.size is None:
                self.size = (cur[1].width, cur[1].height)
            cur[3] = cur[1].to_ndarray(format="rgb24", width=self.size[0], height=self.size[1])
        self.frames.append(cur[3])
        self.arrivals.append(cur[2])
        self.slot += 1
        if self.slot % self.fps:
            return None
        second = self.slot // self.fps - 1
        captured = self.arrivals[-1]
        if self.hold:
            captured = max(captured, self.anchor + second + (self.fps - 1) / self.fps)
        chunk = Chunk(float(second), float(second + 1), np.stack(self.frames), captured_at=captured)
        self.frames, self.arrivals, self.next_second = [], [], second + 1
        return chunk
