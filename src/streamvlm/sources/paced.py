"""Sources paced by the wall clock: a reader thread fills a bounded buffer, the engine takes seconds.

Each complete second is *due* at the wall-clock time its last sample is live (`Chunk.captured_at`,
`time.monotonic()`). The engine is handed the oldest due second; it is never handed a second early.

Drop policy "latest": at most `max_lag` due seconds wait for the engine. When the engine falls
behind, the oldest due seconds are dropped, whole, and counted (`stats.dropped`): a slow engine
always works on the most recent seconds (with the default `max_lag=1`, on the latest complete
second). At most `ahead` further seconds may wait for their time to come (a file read ahead, a
burst); past that the reader blocks. The buffer never holds more than `max_lag + ahead` seconds.

A second without `captured_at` (a recording read through a live source) is due at once and never
dropped: the reader waits for the engine, as a file would.
"""

import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace

from ..errors import SourceError
from .base import Chunk

POLL_S = 0.2  # longest uninterrupted wait: keeps Ctrl-C and stop requests responsive


@dataclass
class LiveStats:
    delivered: int = 0  # seconds handed to the engine
    dropped: int = 0  # complete seconds dropped because the engine was behind
    gap_seconds: int = 0  # seconds without frames (connection lost, stream stalled)
    reconnects: int = 0  # reconnection attempts after a lost connection
    peak_buffered: int = 0  # most complete seconds held at once
    last_error: str | None = None  # why the connection was last lost
    recording: bool | None = None  # a URL found to name a recording, read like a file (live.is_recording)

    def to_dict(self) -> dict:
        return asdict(self)


class PacedSource:
    """Iterable of `Chunk`s, paced as described in the module docstring. Subclasses implement
    `_produce()`, which runs in the reader thread and hands each complete second to `_put`.
    Every iteration starts the source anew; closing the iterator (or `close()`) stops the reader."""

    label = "source"

    def __init__(self, fps: int, seconds: int | None = None, max_lag: int = 1, ahead: int = 2):
        if max_lag < 1:
            raise SourceError(f"max lag must be >= 1 second, got {max_lag}")
        if seconds is not None and seconds < 1:
            raise SourceError(f"seconds must be >= 1, got {seconds}")
        self.fps, self.seconds, self.max_lag, self.ahead = fps, seconds, max_lag, max(0, ahead)
        self.stats = LiveStats()
        self._stop = threading.Event()

    # -- reader side ----------------------------------------------------------------------
    def _produce(self) -> None:
        raise NotImplementedError

    def _put(self, chunk: Chunk) -> bool:
        """Queue a complete second (due at `chunk.captured_at`); False once the source is stopping."""
        with self._cond:
            while not self._stop.is_set():
                self._drop_stale(time.monotonic())
                if len(self._items) < self.max_lag + self.ahead:
                    break
                self._cond.wait(POLL_S)
            if self._stop.is_set():
                return False
            self._items.append(chunk)
            self.stats.peak_buffered = max(self.stats.peak_buffered, len(self._items))
            self._cond.notify_all()
            return True

    def _drop_stale(self, now: float) -> None:
        due = sum(1 for c in self._items if c.captured_at is not None and c.captured_at <= now)
        for _ in range(due - self.max_lag):
            self._items.popleft()
            self.stats.dropped += 1

    def _run(self) -> None:
        try:
            self._produce()
        except SourceError as exc:
            self._error = exc
        except Exception as exc:  # noqa: BLE001 - the consumer reports it as one line
            self._error = SourceError(f"{self.label}: {type(exc).__name__}: {exc}")
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    # -- engine side ----------------------------------------------------------------------
    def __iter__(self) -> Iterator[Chunk]:
        self._stop.clear()
        self._items: deque[Chunk] = deque()
        self._cond = threading.Condition()
        self._done, self._error = False, None
        thread = threading.Thread(target=self._run, name=f"streamvlm-{self.label}", daemon=True)
        thread.start()
        try:
            while (chunk := self._get()) is not None:
                if self.seconds is not None and chunk.start >= self.seconds:
                    break
                self.stats.delivered += 1
                yield chunk
                if self.seconds is not None and chunk.end >= self.seconds:
                    break
        finally:
            self.close()

    def _get(self) -> Chunk | None:
        with self._cond:
            while True:
                now = time.monotonic()
                self._drop_stale(now)
                head = self._items[0] if self._items else None
                if head is not None and (head.captured_at is None or head.captured_at <= now):
                    self._cond.notify_all()  # room for the reader
                    return self._items.popleft()
                if self._done and not self._items:
                    if self._error is not None:
                        raise self._error
                    return None
                wait = head.captured_at - now if head is not None else POLL_S
                self._cond.wait(min(max(wait, 0.001), POLL_S))

    def buffered(self) -> int:
        """Complete seconds waiting now."""
        return len(self._items) if hasattr(self, "_items") else 0

    def close(self) -> None:
        """Stop the reader (it ends at its next frame, or when a blocked read times out)."""
        self._stop.set()
        if hasattr(self, "_cond"):
            with self._cond:
                self._cond.notify_all()


class RealtimeSource(PacedSource):
    """Any chunk source (a file, a folder) played as if live: second `s` is due `s - first start`
    seconds after the first one was read, so the engine sees it no earlier than a viewer would."""

    label = "realtime"

    def __init__(self, source: Iterable[Chunk], fps: int, max_lag: int = 1, ahead: int = 2):
        super().__init__(fps, None, max_lag, ahead)  # the wrapped source ends where it should
        self.source = source

    def _produce(self) -> None:
        anchor = None
        for chunk in self.source:
            if anchor is None:
                anchor = time.monotonic() - chunk.start
            live = anchor + chunk.start + (len(chunk.frames) - 1) / self.fps  # its last sample
            if not self._put(replace(chunk, captured_at=live)):
                return
