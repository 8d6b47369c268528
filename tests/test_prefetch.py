"""sources/prefetch.py: a source iterated in a worker thread (bounded, errors re-raised, clean shutdown)."""

import threading
import time

import pytest

from streamvlm.sources.prefetch import Prefetch


def test_items_in_order_through_the_transform_in_the_worker():
    threads = []

    def transform(x):
        threads.append(threading.current_thread().name)
        return x * 10

    chunks = Prefetch(range(20), depth=3, transform=transform, name="decode-worker")
    assert list(chunks) == [10 * i for i in range(20)]
    assert set(threads) == {"decode-worker"} and chunks.items == 20
    assert not chunks.alive


def test_the_worker_stays_at_most_depth_ahead():
    produced = []

    def source():
        for i in range(50):
            produced.append(i)
            yield i

    chunks = Prefetch(source(), depth=2)
    ahead = []
    for i, item in enumerate(chunks):
        assert item == i
        time.sleep(0.01)
        ahead.append(len(produced) - (i + 1))
    # depth in the queue + one the worker holds while it waits for room
    assert max(ahead) <= 3


def test_an_error_comes_after_every_item_before_it():
    def source():
        yield 1
        yield 2
        raise ValueError("corrupt packet at 2 s")

    got = []
    with pytest.raises(ValueError, match="corrupt packet"):
        for item in Prefetch(source()):
            got.append(item)
    assert got == [1, 2]


def test_leaving_the_loop_stops_the_worker_and_closes_the_source():
    closed = threading.Event()

    def source():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    chunks = Prefetch(source(), depth=2)
    for item in chunks:
        if item == 3:
            break
    chunks.close()  # (the for loop's generator is closed when collected; close() is explicit)
    assert closed.wait(2) and not chunks.alive


class BlockingSource:
    """A live source whose iterator blocks until `close()`: closing must unblock the worker."""

    def __init__(self):
        self.stop = threading.Event()
        self.closed = False

    def __iter__(self):
        yield "first"
        self.stop.wait(10)

    def close(self):
        self.closed = True
        self.stop.set()


def test_close_unblocks_a_source_that_waits():
    source = BlockingSource()
    started = time.perf_counter()
    with Prefetch(source) as chunks:
        assert next(iter(chunks)) == "first"
    assert source.closed and not chunks.alive
    assert time.perf_counter() - started < 5


def test_decoding_overlaps_the_consumer():
    def slow_source():
        for i in range(5):
            time.sleep(0.1)  # "decoding"
            yield i

    started = time.perf_counter()
    chunks = Prefetch(slow_source(), depth=2)
    for _ in chunks:
        time.sleep(0.1)  # "the engine's step"
    elapsed = time.perf_counter() - started
    assert elapsed < 0.9  # serial: 1.0 s; overlapped: ~0.6 s
    assert chunks.wait_s < 0.45  # only the first item is waited for in full


def test_bad_depth_and_second_iteration():
    with pytest.raises(ValueError):
        Prefetch([], depth=0)
    chunks = Prefetch([1])
    assert list(chunks) == [1]
    with pytest.raises(RuntimeError):
        iter(chunks)
