"""Live sources: a real MPEG-TS stream over HTTP on loopback (pacing, dropping, reconnecting under a
streaming session), raw frames through a pipe and on `streamvlm run -` stdin (with Ctrl-C), and a
file played in real time."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from helpers import default_sigint
from live_server import LiveTsServer, frame_index

from streamvlm import StreamConfig, StreamingSession
from streamvlm.errors import SourceError
from streamvlm.sources import LiveSource, is_live, open_source


@pytest.fixture
def server(request):
    srv = LiveTsServer(rate=10, **getattr(request, "param", {}))
    yield srv
    srv.close()


def take(source, pause: float = 0.0):
    """(chunk, wall time it was handed over, seconds dropped by then) for every chunk; `pause` s of
    work after each but the last."""
    got = []
    for chunk in source:
        got.append((chunk, time.monotonic(), source.stats.dropped))
        if chunk.end < (source.seconds or float("inf")):
            time.sleep(pause)
    return got


def test_network_stream_is_paced_by_the_wall_clock(server):
    source = open_source(server.url, fps=2, seconds=4)
    got = take(source)
    assert [c.start for c, _, _ in got] == [0, 1, 2, 3]
    gaps = np.diff([t for _, t, _ in got])
    assert np.all((gaps > 0.6) & (gaps < 1.4)), gaps  # one second per wall-clock second
    for chunk, handed, _ in got:
        assert chunk.frames.shape == (2, 48, 64, 3) and chunk.end == chunk.start + 1
        assert 0 <= handed - chunk.captured_at < 0.6  # handed over as soon as it is complete
        first, second = (frame_index(f) for f in chunk.frames)
        assert (second - first) % 12 == 5  # the samples are half a second (5 frames at 10 fps) apart
    assert (source.stats.dropped, source.stats.gap_seconds, source.stats.reconnects) == (0, 0, 0)


def test_a_slow_engine_gets_the_latest_second_and_the_buffer_stays_bounded(server):
    source = open_source(server.url, fps=2, seconds=5, max_lag=1)
    got = take(source, pause=2.3)  # the engine needs 2.3 s per second of stream
    starts = [c.start for c, _, _ in got]
    assert starts[0] == 0 and all(np.diff(starts) > 0) and starts[-1] >= 4
    assert max(np.diff(starts)) >= 2  # stale seconds were skipped ...
    assert got[-1][2] == starts[-1] + 1 - len(starts) >= 2  # ... and counted
    for chunk, handed, _ in got:
        assert handed - chunk.captured_at < 1.5  # the lag does not grow
    assert source.stats.peak_buffered <= source.max_lag + 1


@pytest.mark.parametrize("server", [{"drop_after": 3.0, "down_for": 1.5}], indirect=True)
def test_a_dropped_connection_is_retried_and_the_session_goes_on(server, tiny):
    source = open_source(server.url, fps=2, seconds=9, reconnect=5)
    source.backoff = 0.25
    session = StreamingSession(tiny, StreamConfig(greedy=True, max_new_tokens=2))
    starts, cache = [], []
    for chunk in source:
        line = session.step(chunk.frames, chunk.start, chunk.end)
        starts.append(line.start)
        cache.append(line.stats.cache_tokens)
    assert server.connections == 2 and server.refused >= 1
    assert source.stats.reconnects >= 2 and source.stats.last_error
    assert all(np.diff(starts) > 0)
    jump = max(np.diff(starts))
    assert jump >= 2 and source.stats.gap_seconds == jump - 1  # stream time went on with the clock
    assert starts[-1] >= 8 and starts[0] == 0
    assert session.round == len(starts)  # one session across the drop: its cache was kept
    assert all(np.diff(cache) > 0)


def test_raw_frames_through_a_pipe_are_paced_and_end_with_the_input():
    read, write = os.pipe()
    frames = [np.full((24, 32, 3), 20 * (i % 12) + 10, np.uint8) for i in range(16)]  # 4 s at 4 fps
    writer = threading.Thread(
        target=lambda: (os.write(write, b"".join(f.tobytes() for f in frames)), os.close(write))
    )
    writer.start()
    source = LiveSource(
        f"pipe:{read}",
        fps=2,
        fmt="rawvideo",
        options={"video_size": "32x24", "pixel_format": "rgb24", "framerate": "4"},
        hold=True,
        reconnect=0,
    )
    got = take(source)
    writer.join()
    os.close(read)
    assert [c.start for c, _, _ in got] == [0, 1, 2, 3]  # written at once, handed over in real time
    assert 2.5 < got[-1][1] - got[0][1] < 3.5
    assert [frame_index(f) for f in got[1][0].frames] == [4, 6]  # frame 4 at 1.0 s, frame 6 at 1.5 s


def test_a_file_played_in_real_time(clip):
    got = take(open_source(str(clip), fps=2, start=2, seconds=3, realtime=True))
    assert [c.start for c, _, _ in got] == [2, 3, 4]
    assert 1.6 < got[-1][1] - got[0][1] < 2.4
    assert all(0 <= t - c.captured_at < 0.3 for c, t, _ in got)


def test_stdin_frames_through_the_cli_and_ctrl_c(tiny_dir, tmp_path):
    out, stats = tmp_path / "live.jsonl", tmp_path / "stats.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamvlm", "run", "-", "--stdin-size", "32x24", "--stdin-fps", "4",
         "--fps", "2", "--model", str(tiny_dir), "--out", str(out), "--stats", str(stats), "--greedy",
         "--max-new-tokens", "2"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=False,
        preexec_fn=default_sigint,
    )  # fmt: skip

    def feed():
        try:
            for i in range(4 * 60):
                proc.stdin.write(np.full((24, 32, 3), 20 * (i % 12) + 10, np.uint8).tobytes())
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass

    threading.Thread(target=feed, daemon=True).start()
    deadline = time.time() + 60
    seen = []  # (lines, time) whenever the file grows
    while time.time() < deadline and (not seen or seen[-1][0] < 3):
        n = len(out.read_text().splitlines()) if out.exists() else 0
        if n and (not seen or n > seen[-1][0]):
            seen.append((n, time.monotonic()))
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err.decode()
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["start"] for x in lines] == list(range(len(lines))) and len(lines) >= 3
    assert seen[-1][1] - seen[0][1] > 0.6 * (seen[-1][0] - seen[0][0])  # paced, not read at once
    rows = [json.loads(x) for x in stats.read_text().splitlines()]
    for r in rows[:-1]:  # never handed over early; the line is written once its step is done
        step_s = r["step_ms"] / 1000
        assert r["lag_s"] >= -1e-3 and step_s - 2e-3 <= r["latency_s"] - r["lag_s"] <= step_s + 0.5, r
    summary = rows[-1]["summary"]
    assert summary["seconds"] == len(lines) and summary["latency_p50_s"] <= summary["latency_p99_s"]
    assert "glass-to-text latency p50" in err.decode()


def test_live_specs_and_bad_live_input(tmp_path):
    for spec in ("rtsp://cam/1", "rtmp://x/live", "http://h/a.ts", "https://h/a.m3u8", "udp://@:1234", "-"):
        assert is_live(spec)
    assert is_live("/dev/video0") and is_live("playlist.m3u8") and not is_live(str(tmp_path))
    with pytest.raises(SourceError, match="no video device"):
        open_source("/dev/video99")
    with pytest.raises(SourceError, match="--stdin-size"):
        open_source("-")
    with pytest.raises(SourceError, match="--start"):
        open_source("rtsp://cam/1", start=5)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    source = open_source(f"http://127.0.0.1:{port}/live.ts", reconnect=1)
    source.backoff = 0.05
    with pytest.raises(SourceError, match="cannot connect .*gave up after 1 reconnect"):
        list(source)
