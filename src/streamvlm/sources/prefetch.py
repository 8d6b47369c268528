"""Iterate any source in a background thread, so the next seconds are decoded while the engine works.

    with Prefetch(open_source("match.mp4"), depth=2) as chunks:
        for chunk in chunks:
            session.step(chunk.frames, chunk.start, chunk.end)

A worker thread pulls items from the source (optionally through `transform`, e.g. a resize) into a
bounded queue of `depth` items, so at most `depth` items wait and the worker never runs further
ahead. An exception raised by the source (or the transform) is re-raised in the consumer, at its
place in the stream: every item before it is delivered first. Closing (`close()`, leaving the
`with` block, or abandoning the loop, which closes the generator) stops the worker: a worker blocked
on the full queue notices within `poll` seconds, the source's iterator is closed from the worker
thread (a generator runs its `finally`), and a source with a `close()` of its own (a live source)
is closed too, which unblocks a worker waiting inside it.

`wait_s` is the total time the consumer waited for items (0 when the worker keeps ahead);
`last_wait_s` is the wait for the latest one.
"""

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import GeneratorType
from typing import Any

_END = object()


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


class Prefetch:
    def __init__(
        self,
        source: Iterable,
        depth: int = 2,
        transform: Callable[[Any], Any] | None = None,
        name: str = "prefetch",
        poll: float = 0.05,
    ):
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self.source, self.depth, self.transform, self.name, self.poll = source, depth, transform, name, poll
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.items = 0  # items handed to the consumer
        self.wait_s = 0.0
        self.last_wait_s = 0.0

    # -- consumer -----------------------------------------------------------------------------
    def __iter__(self) -> Iterator:
        if self._thread is not None or self._closed:
            raise RuntimeError("a Prefetch is iterated once")
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self._consume()

    def _consume(self) -> Iterator:
        try:
            while True:
                started = time.perf_counter()
                item = self._get()
                self.last_wait_s = time.perf_counter() - started
                self.wait_s += self.last_wait_s
                if item is _END:
                    return
                if isinstance(item, _Raised):
                    raise item.exc
                self.items += 1
                yield item
        finally:
            self.close()

    def _get(self):
        while True:
            try:
                return self._queue.get(timeout=self.poll)
            except queue.Empty:
                if self._thread is not None and not self._thread.is_alive() and self._queue.empty():
                    return _END  # (only if the worker died without a word: it always ends with one)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker and release the source; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        close = getattr(self.source, "close", None)
        if callable(close) and not isinstance(self.source, GeneratorType):  # (a generator: the worker's)
            with contextlib.suppress(Exception):  # closing must not hide the consumer's own error
                close()
        self._drain()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._drain()

    def _drain(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> "Prefetch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- worker -------------------------------------------------------------------------------
    def _run(self) -> None:
        iterator = None
        try:
            iterator = iter(self.source)
            for item in iterator:
                if self._stop.is_set():
                    return
                if self.transform is not None:
                    item = self.transform(item)
                if not self._put(item):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(_Raised(exc))
            return
        finally:
            close = getattr(iterator, "close", None)
            if callable(close):
                with contextlib.suppress(Exception):
                    close()
        self._put(_END)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=self.poll)
                return True
            except queue.Full:
                continue
        return False
