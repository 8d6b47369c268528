"""Live sources under faults: recordings fetched by URL (read like files, not replayed), the RTSP
transport, frames without timestamps, read timeouts, a source that never connects and empty stdin."""

import json
import os
import socket
import time
from fractions import Fraction
from types import SimpleNamespace

import av
import numpy as np
import pytest
from live_server import FileServer, LiveTsServer, frame_index

from streamvlm import StreamConfig
from streamvlm.cli import build_parser, live_kwargs, main
from streamvlm.errors import SourceError
from streamvlm.runner import stream_to_files
from streamvlm.sources import open_source
from streamvlm.sources.live import _Clock


def write_numbered(path, seconds: int, rate: int = 10, fmt=None, options=None):
    """Flat frames whose level encodes the frame index (`frame_index`), H.264 at `rate` fps."""
    with av.open(str(path), "w", format=fmt, options=options or {}) as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.height, stream.width, stream.pix_fmt = 48, 64, "yuv420p"
        stream.codec_context.gop_size = rate
        for i in range(seconds * rate):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 20 * (i % 12) + 10, np.uint8), "rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("www")
    server = FileServer(folder)
    write_numbered(folder / "match.ts", 6)  # MPEG-TS over a server without ranges: no duration, a length
    write_numbered(folder / "ended.m3u8", 6, fmt="hls", options={"hls_time": "2", "hls_playlist_type": "vod"})
    live = {"hls_time": "1", "hls_flags": "omit_endlist", "hls_list_size": "0"}
    write_numbered(folder / "live.m3u8", 3, fmt="hls", options=live)  # its #EXT-X-ENDLIST comes later
    server.folder = folder
    yield server
    server.close()


@pytest.fixture
def server(request):
    srv = LiveTsServer(rate=10, **getattr(request, "param", {}))
    yield srv
    srv.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed once the block ends: nothing listens there


@pytest.mark.parametrize("name", ["match.ts", "ended.m3u8"])
def test_a_recording_by_url_is_read_like_a_file(files, name):
    source = open_source(f"{files.base}/{name}", fps=2, seconds=9)  # a replay would run past 6 s
    source.backoff = 0.05
    began, got = time.monotonic(), []
    for chunk in source:
        got.append(chunk)
        time.sleep(0.3)  # a slow engine: nothing may be dropped
    assert [c.start for c in got] == [0, 1, 2, 3, 4, 5]  # to its end, once
    for c in got:  # frame 10 s at s, frame 10 s + 5 at s + 0.5: its own timestamps
        assert [frame_index(f) for f in c.frames] == [(10 * c.start) % 12, (10 * c.start + 5) % 12]
    assert all(c.captured_at is None for c in got)
    assert (source.stats.dropped, source.stats.reconnects, source.stats.gap_seconds) == (0, 0, 0)
    assert time.monotonic() - began < 4.5  # at the engine's pace, not the wall clock's 6 s
    assert source.recording is True


def test_a_recording_that_breaks_off_is_an_error_not_a_replay(files):
    cut = FileServer(files.folder, cut=0.5)  # half of match.ts, then the connection closes
    try:
        source = open_source(f"{cut.base}/match.ts", fps=2, seconds=9)
        source.backoff = 0.05
        got = []
        with pytest.raises(SourceError, match=r"recording broke off after \d s .*not retried"):
            for chunk in source:
                got.append(chunk.start)
    finally:
        cut.close()
    assert got == list(range(len(got))) and 1 <= len(got) < 6 and source.stats.reconnects == 0


def test_a_live_playlist_that_ends_is_not_replayed(files):
    playlist = files.folder / "live.m3u8"
    assert "#EXT-X-ENDLIST" not in playlist.read_text()
    source = open_source(f"{files.base}/live.m3u8", fps=2, seconds=9, reconnect=1)
    source.backoff, source.timeout = 0.05, 2.0  # bounded should the end go unseen
    starts = []
    for chunk in source:
        if not starts:  # the broadcast ends: the next reload finds the end of the playlist
            playlist.write_text(playlist.read_text() + "#EXT-X-ENDLIST\n")
        starts.append(chunk.start)
    assert starts and max(starts) <= 2  # its 3 s, once
    assert source.stats.reconnects == 1 and source.stats.last_error == "the stream ended"
    assert source.recording is False


def test_a_live_stream_is_not_a_recording():
    server = LiveTsServer(rate=10)
    try:
        source = open_source(server.url, fps=2, seconds=1)
        chunks = list(source)
    finally:
        server.close()
    assert source.recording is False and chunks[0].captured_at is not None


def test_rtsp_transport_reaches_ffmpeg(monkeypatch):
    seen = []

    def fake_open(url, **kwargs):
        seen.append(kwargs["options"])
        raise av.error.ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(av, "open", fake_open)
    for transport, expected in (("tcp", "tcp"), ("udp", "udp"), ("auto", None)):
        source = open_source("rtsp://127.0.0.1:1/cam", reconnect=0, rtsp_transport=transport)
        with pytest.raises(SourceError, match="Connection refused"):
            list(source)
        assert seen[-1].get("rtsp_transport") == expected
    assert open_source("rtsp://h/cam").options["rtsp_transport"] == "tcp"  # unless asked otherwise
    assert "rtsp_transport" not in open_source("http://h/live.ts").options
    with pytest.raises(SourceError, match="RTSP transport must be one of tcp, udp, auto"):
        open_source("rtsp://h/cam", rtsp_transport="sctp")


def test_rtsp_transport_option_of_run():
    args = build_parser().parse_args(["run", "rtsp://h/cam", "--rtsp-transport", "udp"])
    assert live_kwargs(args)["rtsp_transport"] == "udp"
    assert live_kwargs(build_parser().parse_args(["run", "rtsp://h/cam"]))["rtsp_transport"] == "tcp"


class FakeRtsp:
    """An input as RTSP gives it: `(pts or None, delay before it)` frames, 10 per second of pts."""

    def __init__(self, frames):
        self.frames, self.duration, self.format = frames, None, SimpleNamespace(name="rtsp")
        self.size = -38  # what FFmpeg gives for a stream: ENOSYS
        stream = SimpleNamespace(time_base=Fraction(1, 10), average_rate=Fraction(10), guessed_rate=None)
        self.streams = SimpleNamespace(video=[stream])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def decode(self, stream):
        for pts, delay in self.frames:
            time.sleep(delay)
            level = 255 if pts is None else 20 * (pts % 12) + 10
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), level, np.uint8), "rgb24")
            frame.pts = pts
            yield frame


def test_rtsp_frames_before_the_first_pts_do_not_anchor_the_clock(monkeypatch):
    frames = [(None, 0.1)] * 3 + [(i, 0.0) for i in range(15)] + [(i, 0.1) for i in range(15, 40)]
    monkeypatch.setattr(av, "open", lambda *args, **kwargs: FakeRtsp(frames))
    got = list(open_source("rtsp://127.0.0.1:1/cam", fps=2, seconds=3))
    assert [c.start for c in got] == [0, 1, 2]
    for c in got:  # the samples are the frames whose pts is their time, burst or not
        assert [frame_index(f) for f in c.frames] == [(10 * c.start) % 12, (10 * c.start + 5) % 12]


def test_the_clock_starts_at_the_first_timestamp():
    """RTSP hands over frames without a pts first, then a burst of buffered frames: stream time is
    their pts from the first one, not their arrival."""
    clock, base = _Clock(), Fraction(1, 10)
    clock.connect(100.0)
    frames = [(None, 100.0), (None, 100.3)] + [(i, 100.5 + 0.01 * i) for i in range(10)]  # a burst
    frames += [(None, 100.62), (10, 101.5), (11, 101.6)]  # a pts missing midway does not re-anchor
    times = [clock.time(SimpleNamespace(pts=pts), base, arrival) for pts, arrival in frames]
    assert times[:2] == [None, None] and times[12] is None
    assert times[2:12] == pytest.approx([i / 10 for i in range(10)])
    assert times[13:] == pytest.approx([1.0, 1.1])
    clock.connect(200.0)  # a stream without any timestamps is timed by arrival after GAP_S
    assert clock.time(SimpleNamespace(pts=None), base, 201.0) is None
    assert clock.time(SimpleNamespace(pts=None), base, 202.5) == pytest.approx(1.1 + 202.5 - 101.6)


@pytest.mark.parametrize(
    "server, expected",
    [
        ({"drop_after": 1.2, "stall": True}, "timed out: no data for 0.5 s"),  # silent after 1.2 s
        ({"drop_after": 0.0, "stall": True}, "timed out: no answer in 1 s"),  # silent from the start
    ],
    indirect=["server"],
)
def test_a_timeout_says_what_happened(server, expected):
    source = open_source(server.url, fps=2, seconds=4, reconnect=2)
    source.timeout, source.backoff = 0.5, 0.05  # reads 0.5 s, opening (probing) 1 s
    starts = [c.start for c in source]
    assert starts[0] == 0 and server.connections == 2 and source.stats.reconnects == 1
    assert source.stats.last_error == expected


def test_stats_end_with_a_summary_when_the_source_never_connects(tiny, tmp_path):
    source = open_source(f"http://127.0.0.1:{closed_port()}/live.ts", reconnect=1)
    source.backoff = 0.05
    stats = tmp_path / "stats.jsonl"
    config = StreamConfig(greedy=True, max_new_tokens=2)
    with pytest.raises(SourceError, match="cannot connect"):
        stream_to_files(tiny, config, source, stats=str(stats), quiet=True)
    rows = [json.loads(line) for line in stats.read_text().splitlines()]
    summary = rows[-1]["summary"]
    assert summary["seconds"] == 0 and summary["latency_p50_s"] is None
    assert summary["reconnects"] == 1 and "refused" in summary["last_error"].lower()


@pytest.mark.parametrize(
    "data, error",
    [
        (b"", "stdin: no frames (the input is empty or shorter than one 64x64 rgb24 frame)"),
        (bytes(64 * 64 * 3), "stdin: the input ended after 1 frame, before one complete second"),
    ],
)
def test_stdin_without_a_second_is_an_error(tiny_dir, capsys, data, error):
    """`streamvlm run - --stdin-size 64x64 < /dev/null`: exit 2 with one line (in-process: fast)."""
    read, write = os.pipe()
    os.write(write, data)
    os.close(write)
    saved = os.dup(0)
    os.dup2(read, 0)
    try:
        code = main(["run", "-", "--stdin-size", "64x64", "--model", str(tiny_dir)])
    finally:
        os.dup2(saved, 0)
        os.close(saved)
        os.close(read)
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"streamvlm: error: {error}"]
