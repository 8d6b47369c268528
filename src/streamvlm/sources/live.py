"""Live sources through PyAV: network streams, webcams (v4l2) and raw frames on stdin.

Stream time follows the source's timestamps, rebased to 0 at the first timestamped frame: frames
without a timestamp (before the first, as RTSP may give, or later) are skipped and never set the
clock; a stream without timestamps for `GAP_S` is timed by arrival. After a lost connection (or a
jump in the timestamps) it continues with the wall clock: a source back after 5 s resumes 5 s
later in stream time, and the seconds without frames are counted as a gap. The sample at stream
time τ is the last frame with time <= τ, as for files; a frame is repeated for at most `GAP_S`, a
longer silence is a gap. Frames are resized to the size of the first one.

Network streams and devices hand a second to the engine as soon as it is complete (they are live
already); raw frames on stdin are timed by their count at `stdin_fps` and held until their time
comes, so a writer faster than real time is slowed down by the pipe. Either way the buffer follows
the drop policy "latest" of `paced.PacedSource`. A lost connection is retried with exponential
backoff (`backoff`, doubling, at most `BACKOFF_MAX_S`), `reconnect` times in a row (None: forever);
the count starts again once frames flow. A read blocked for `timeout` s counts as lost ("timed
out: no data for 5 s"). Stdin that ends before one complete second is an error.

A URL may name a recording rather than a live stream: `is_recording` tells them apart when the
input opens (FFmpeg knows its duration: a file, an HLS playlist with #EXT-X-ENDLIST; or an HTTP
server announced its length). A recording is read like a file: at the engine's pace (no wall-clock
pacing, nothing dropped, `captured_at` None), timed by its timestamps alone, and its end ends the
stream (no reconnect, which would replay it; a recording that breaks off is an error). A live input
that turns out finite on a reconnect (a playlist that got its #EXT-X-ENDLIST) has ended.
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
NETWORK_OPTIONS = {"analyzeduration": "500000"}
#: RTSP over TCP by default: UDP loses packets under load (smeared frames until the next keyframe)
#: and rarely crosses NAT or firewalls; "auto" is FFmpeg's own choice (UDP first, then TCP).
RTSP_TRANSPORTS = ("tcp", "udp", "auto")
PLAYLISTS = {"hls", "dash"}  # formats whose size is that of a manifest, not of the media


def is_live(spec: str) -> bool:
    """A URL (rtsp://, rtmp://, http(s)://, udp://, ...), an HLS playlist, a /dev/video* device or `-`:
    read by `LiveSource` (a URL that names a recording is then read like a file, `is_recording`)."""
    return (
        spec == "-"
        or bool(URL.match(spec))
        or spec.startswith("/dev/video")
        or spec.lower().endswith(".m3u8")
    )


def is_recording(container) -> bool:
    """A finite input, not a live stream: FFmpeg reports its duration (a file; an HLS playlist
    with #EXT-X-ENDLIST), or it is one file whose size the server announced (HTTP Content-Length:
    an MPEG-TS file on a server without range requests has no duration). Live streams have neither."""
    if container.duration is not None and container.duration > 0:
        return True
    return container.format.name not in PLAYLISTS and (container.size or 0) > 0


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
    rtsp_transport: str = "tcp",
) -> "LiveSource":
    """A `LiveSource` for `spec` (see `is_live`); nothing is opened until it is iterated.
    `rtsp_transport`: tcp, udp or auto (FFmpeg's choice) for rtsp:// URLs."""
    if rtsp_transport not in RTSP_TRANSPORTS:
        choices = ", ".join(RTSP_TRANSPORTS)
        raise SourceError(f"RTSP transport must be one of {choices}, got {rtsp_transport!r}")
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
    options = dict(NETWORK_OPTIONS)
    if spec.lower().startswith(("rtsp://", "rtsps://")) and rtsp_transport != "auto":
        options["rtsp_transport"] = rtsp_transport
    return LiveSource(
        spec, fps, seconds, options=options, reconnect=reconnect, max_lag=max_lag, timeout=timeout
    )


class LiveSource(PacedSource):
    """Frames from a PyAV input (`url`, `fmt` and demuxer `options` as for `av.open`). `hold`: hold
    each second until its time comes (inputs read faster than real time); `reconnect=0`: the end
    of the input ends the stream; `timeout`: seconds a read may block before the connection
    counts as lost (None: forever). `recording` (also in `stats`): None until the input opens, then
    whether it is a recording (`is_recording`; never for stdin or a device)."""

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

    @property
    def recording(self) -> bool | None:
        return self.stats.recording

    def _open(self):
        timeout = None if self.timeout is None else (2 * self.timeout, self.timeout)
        try:
            return av.open(self.url, format=self.fmt, options=self.options, timeout=timeout)
        except av.error.ExitError as exc:  # PyAV's timeout interrupts FFmpeg with AVERROR_EXIT
            raise ConnectionError(f"timed out: no answer in {2 * self.timeout:g} s") from exc
        except av.error.FFmpegError as exc:
            raise ConnectionError(exc.strerror or str(exc)) from exc

    def _reason(self, exc: Exception) -> str:
        if isinstance(exc, av.error.ExitError) and self.timeout is not None:
            return f"timed out: no data for {self.timeout:g} s"
        return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__

    def _produce(self) -> None:
        clock, sampler = _Clock(), _Sampler(self.fps, self.hold, self.stats)
        failures, connected_once, frames, seconds = 0, False, 0, 0
        while not self._stop.is_set():
            flowing = ended = False
            try:
                with self._open() as container:
                    if not container.streams.video:
                        raise SourceError(f"{self.label} has no video stream")
                    stream = container.streams.video[0]
                    finite = self.fmt is None and is_recording(container)
                    if self.recording is None:
                        self.stats.recording = finite
                        if finite:  # timed by its timestamps alone, handed over at the engine's pace
                            clock.step = 1 / float(stream.average_rate or stream.guessed_rate or 25)
                            sampler.paced = False
                    elif finite and not self.recording:
                        return  # a live playlist that got its end: replaying it would repeat old seconds
                    clock.connect(time.monotonic())
                    for frame in container.decode(stream):
                        if self._stop.is_set():
                            return
                        arrival = time.monotonic()
                        t = clock.time(frame, stream.time_base, arrival)
                        if t is None:
                            continue
                        flowing = connected_once = True
                        failures, frames = 0, frames + 1
                        for chunk in sampler.push(t, frame, arrival):
                            if not self._put(chunk):
                                return
                            seconds += 1
                    ended = True
                    for chunk in sampler.finish(clock.step) if self.recording else []:
                        if not self._put(chunk):
                            return
                reason = "the stream ended"
            except (ConnectionError, av.error.FFmpegError, OSError) as exc:
                reason = self._reason(exc)
            if self._stop.is_set():
                return
            if self.recording:
                if ended:
                    return
                self.stats.last_error = reason
                raise SourceError(
                    f"{self.label}: the recording broke off after {seconds} s ({reason}); "
                    "not retried: it would start again from its beginning"
                )
            if self.reconnect == 0:  # stdin: the end of the input is the end of the stream
                if self.hold and seconds == 0:
                    raise SourceError(self._too_short(frames))
                if ended or flowing:
                    return
                self.stats.last_error = reason
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

    def _too_short(self, frames: int) -> str:
        if frames:
            n = f"{frames} frame" + "s" * (frames != 1)
            return f"{self.label}: the input ended after {n}, before one complete second"
        size, fmt = self.options.get("video_size", "?"), self.options.get("pixel_format", "?")
        return f"{self.label}: no frames (the input is empty or shorter than one {size} {fmt} frame)"


class _Clock:
    """Stream time of each frame: its timestamp rebased to the first timestamp; across a reconnect
    or a jump of more than `GAP_S` in the timestamps it continues with the wall clock (a recording,
    `step` set: `step` after the last frame). A frame without a timestamp is skipped (it cannot be
    placed, and must not anchor the clock), unless none had one for `GAP_S`: a stream without
    timestamps is timed by arrival."""

    def __init__(self, step: float | None = None):
        self.step = step
        self.origin: tuple[float, float] | None = None  # (media time, stream time) of this connection
        self.last: tuple[float, float] | None = None  # (stream time, arrival) of the last frame
        self.stamped = -math.inf  # arrival of the last timestamped frame (or of the connection)

    def connect(self, arrival: float) -> None:
        self.origin, self.stamped = None, arrival

    def time(self, frame, time_base, arrival: float) -> float | None:
        media = float(frame.pts * time_base) if frame.pts is not None and time_base else None
        if media is None:
            if arrival - self.stamped < GAP_S:
                return None
            self.origin = None
        else:
            self.stamped = arrival
        if media is not None and self.origin is not None:
            t = self.origin[1] + media - self.origin[0]
            behind = self.last[0] - t
            if -GAP_S <= behind <= GAP_S:
                if behind > EPS:
                    return None  # out of order: skip it
                self.last = (t, arrival)
                return t
        if self.last is None:
            t = 0.0
        else:
            t = self.last[0] + (arrival - self.last[1] if self.step is None else self.step)
        self.origin = (media, t) if media is not None else None
        self.last = (t, arrival)
        return t


class _Sampler:
    """Timed frames -> complete seconds: slot τ = n / fps shows the last frame with time <= τ."""

    def __init__(self, fps: int, hold: bool, stats):
        self.fps, self.hold, self.stats = fps, hold, stats
        self.paced = True  # False (a recording): chunks carry no `captured_at`, they are due at once
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

    def finish(self, step: float) -> list[Chunk]:
        """The input ended: its last frame is shown for `step` more (completing its second)."""
        done = []
        while self.current is not None and self.slot / self.fps < self.current[0] + step - EPS:
            chunk = self._fill()
            if chunk is not None:
                done.append(chunk)
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
        if not self.paced:
            captured = None
        chunk = Chunk(float(second), float(second + 1), np.stack(self.frames), captured_at=captured)
        self.frames, self.arrivals, self.next_second = [], [], second + 1
        return chunk
