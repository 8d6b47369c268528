"""`streamvlm serve` under faults and abuse (issue 32): a failing writer, unbounded requests, pulled
URLs that escape or reach inward, idle holds, errors a client can act on. Loopback only."""

import base64
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from server_helpers import LiveServer, binary_frame, encode, events, http, of_type
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from streamvlm.server.frames import MAX_PIXELS, MessageError
from streamvlm.server.sessions import check_pull_url
from streamvlm.sources import synthetic_frames

FAST = {"max_new_tokens": 3, "greedy": True}


def frames(seconds: int, fps: int = 2) -> list[np.ndarray]:
    return list(synthetic_frames(seconds, fps, (56, 56), 0))


def start(ws, options=FAST) -> None:
    events(ws, until="ready")
    ws.send(json.dumps({"type": "start", "options": options}))
    assert events(ws, until="started")[-1]["type"] == "started"


def closed_code(ws, timeout: float = 10) -> int:
    with pytest.raises(ConnectionClosed):
        while True:
            ws.recv(timeout=timeout)
    return ws.close_code


# -- 1. a failure inside a session ends that session, and only it ----------------------------------
def test_a_failing_writer_ends_its_session_frees_the_slot_and_shutdown_finishes(tiny, tmp_path):
    server = LiveServer(tiny, out_dir=tmp_path, max_sessions=1).__enter__()
    try:
        with connect(server.ws_url) as ws:
            start(ws)
            [session] = server.manager.sessions.values()
            session.writers[0].file = open("/dev/full", "w")  # a full disk under the JSONL file
            for i, frame in enumerate(frames(2)):
                ws.send(binary_frame(i / 2, frame))
            received = events(ws, timeout=30)
            assert closed_code(ws) == 1011
        [error] = of_type(received, "error")
        assert error["fatal"] and "writing second 0.0 s failed" in error["message"]
        assert received[-1]["type"] == "closed" and received[-1]["reason"] == "write error"
        assert server.manager.sessions == {}  # the slot is free: a new session gets it
        with connect(server.ws_url) as again:
            start(again)
            for i, frame in enumerate(frames(1)):
                again.send(binary_frame(i / 2, frame))
            assert events(again, until="commentary")[-1]["start"] == 0.0
            server.stop()  # shutdown finishes (the old stepper died and finish() blocked forever)
            assert events(again)[-1]["reason"] == "server shutting down"
        assert not server.thread.is_alive()
    finally:
        server.stop()


def test_stream_times_the_writers_cannot_represent_are_refused(tiny, tmp_path):
    with LiveServer(tiny, out_dir=tmp_path) as server, connect(server.ws_url) as ws:
        start(ws)
        ws.send(binary_frame(1e306, frames(1)[0]))  # finite, but no subtitle timestamp holds it
        error = json.loads(ws.recv(timeout=10))
        assert (
            error["type"] == "error" and not error["fatal"] and "from 0 to 1e+10 seconds" in error["message"]
        )
        ws.send(binary_frame(1.7e9, frames(1)[0]))  # a Unix time is fine
        ws.send(json.dumps({"type": "stop"}))
        received = events(ws)
    assert [c["start"] for c in of_type(received, "commentary")] == [1.7e9]
    assert "472222:13:20.000 --> " in open(received[-1]["files"]["vtt"]).read()


# -- 2. bounded work per request, bounded latency across sessions ---------------------------------
def test_chat_prompts_and_images_are_bounded(tiny, tmp_path):
    big = (
        "data:image/png;base64,"
        + base64.b64encode(encode(np.zeros((4096, 4096, 3), np.uint8), "PNG")).decode()
    )
    with LiveServer(tiny, out_dir=tmp_path, max_prompt_tokens=64) as server:
        url = f"{server.url}/v1/chat/completions"

        def ask(content, **extra):
            return http(
                "POST", url, {"messages": [{"role": "user", "content": content}], "max_tokens": 2, **extra}
            )

        assert ask("hello")[0] == 200
        status, body, _ = ask("word " * 500)
        assert status == 400 and "--max-prompt-tokens" in body["error"]["message"]
        assert "over this server's limit of 64" in body["error"]["message"]
        images = [{"type": "image_url", "image_url": {"url": big}}] * 3  # 3 x 4096^2 > 2 x 4096^2
        status, body, _ = ask(images)
        assert status == 400 and f"at most {2 * MAX_PIXELS} pixels in all" in body["error"]["message"]
        for extra, word in (
            ({"seed": 2**80}, "seed"),
            ({"max_tokens": 0}, "max_tokens"),
            ({"top_p": 0}, "top_p"),
        ):
            status, body, _ = ask("hello", **extra)
            assert status == 400 and body["error"]["type"] == "invalid_request_error", extra
            assert word in body["error"]["message"]


def test_a_model_failure_in_chat_is_an_openai_style_500(tiny, tmp_path, monkeypatch):
    import streamvlm.server.app as app_module

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(app_module, "chat", broken)
    with LiveServer(tiny, out_dir=tmp_path) as server:
        status, body, _ = http(
            "POST", f"{server.url}/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}
        )
    assert status == 500 and body["error"]["type"] == "server_error"  # not "shutting down" (503)


def test_live_latency_stays_bounded_across_sessions(tiny, tmp_path, monkeypatch):
    """Four live clients on a model that needs 0.4 s a second each (1.6 s of model time per
    second of stream): seconds that waited over max_queued_seconds are dropped, whichever session
    had the model, so no commentary comes later than that bound plus one step."""
    from streamvlm.engine import StreamingSession

    step = StreamingSession.step

    def slow(self, *args):
        time.sleep(0.4)
        return step(self, *args)

    monkeypatch.setattr(StreamingSession, "step", slow)
    n, seconds, max_queued = 4, 6, 1
    got: dict[int, list] = {}
    with LiveServer(tiny, out_dir=tmp_path, max_sessions=n, max_queued_seconds=max_queued) as server:

        def client(k):
            with connect(server.ws_url) as ws:
                start(ws)
                t0 = time.monotonic()
                for j, frame in enumerate(frames(seconds)):  # at 2 fps, in real time
                    time.sleep(max(0.0, t0 + j / 2 - time.monotonic()))
                    ws.send(binary_frame(j / 2, frame))
                time.sleep(3.0)  # let the live seconds come out (or be dropped) before stopping
                ws.send(json.dumps({"type": "stop"}))
                got[k] = events(ws, timeout=60)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
    assert len(got) == n
    live = [s for received in got.values() for s in of_type(received, "stats") if s["t"] < seconds - 1]
    assert sum(len(of_type(r, "dropped")) for r in got.values()) > 0  # overloaded: some were dropped
    assert max(s["latency_ms"] for s in live) < 1000 * (max_queued + 0.4 + 0.6)


# -- 3. pulled URLs ----------------------------------------------------------------------------------
def resolver(table):
    def resolve(host, port, type):
        if host not in table:
            raise socket.gaierror(-2, "Name or service not known")
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, type, 6, "", (a, port)) for a in table[host]
        ]

    return resolve


def test_pulled_urls_must_name_public_hosts():
    dns = resolver({"cam.example": ["192.168.1.20"], "cdn.example": ["93.184.215.14"],
                    "mixed.example": ["93.184.215.14", "10.0.0.7"], "v6.example": ["fd00::1"]})  # fmt: skip
    assert (
        check_pull_url("https://cdn.example/live.m3u8", None, resolve=dns) == "https://cdn.example/live.m3u8"
    )
    inward = ["rtsp://cam.example/stream", "http://mixed.example/x.ts", "http://v6.example/x"]
    inward += ["http://127.0.0.1:8000/health", "http://[::1]/x", "http://[::ffff:127.0.0.1]/x"]
    inward += ["http://169.254.169.254/latest/meta-data", "rtmp://0.0.0.0/x", "srt://224.0.0.1:9000"]
    for url in inward:
        with pytest.raises(MessageError, match="private or local address"):
            check_pull_url(url, None, resolve=dns)
    with pytest.raises(MessageError, match="cannot resolve"):
        check_pull_url("http://nowhere.example/x", None, resolve=dns)
    assert (
        check_pull_url("rtsp://cam.example/s", None, allow_private=True, resolve=dns)
        == "rtsp://cam.example/s"
    )


def test_a_loopback_url_is_never_fetched(tiny, tmp_path):
    hits = []

    class Counter(BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    target = ThreadingHTTPServer(("127.0.0.1", 0), Counter)
    threading.Thread(target=target.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{target.server_address[1]}/internal.ts"
    try:
        with LiveServer(tiny, out_dir=tmp_path) as server:
            with connect(server.ws_url) as ws:
                events(ws, until="ready")
                ws.send(json.dumps({"type": "pull", "url": url}))
                error = json.loads(ws.recv(timeout=10))
            status, body, _ = http("POST", f"{server.url}/v1/sessions", {"url": url})
    finally:
        target.shutdown()
    assert error["type"] == "error" and "--allow-private-urls" in error["message"]
    assert status == 400 and "private or local address" in body["error"]["message"]
    assert hits == []


def test_local_playlists_may_list_only_files_inside_the_allowed_dir(tmp_path):
    root, outside = tmp_path / "media", tmp_path / "secret"
    root.mkdir(), outside.mkdir()
    (outside / "private.ts").write_bytes(b"\x47" * 188)
    (root / "seg0.ts").write_bytes(b"\x47" * 188)
    (root / "good.m3u8").write_text("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nseg0.ts\n#EXT-X-ENDLIST\n")
    (root / "escape.m3u8").write_text("#EXTM3U\n#EXTINF:2,\n../secret/private.ts\n")
    (root / "absolute.m3u8").write_text(f"#EXTM3U\n#EXTINF:2,\n{outside}/private.ts\n")
    (root / "key.m3u8").write_text(
        f'#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI="{outside}/k"\n#EXTINF:2,\nseg0.ts\n'
    )
    (root / "master.m3u8").write_text("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nescape.m3u8\n")
    (root / "remote.m3u8").write_text("#EXTM3U\n#EXTINF:2,\nhttp://127.0.0.1:9/seg.ts\n")
    (root / "disguised.mp4").write_text(
        "#EXTM3U\n#EXTINF:2,\n../secret/private.ts\n"
    )  # FFmpeg probes content
    (root / "list.txt").write_text(f"ffconcat version 1.0\nfile {outside}/private.ts\n")
    assert check_pull_url("good.m3u8", root) == str(root / "good.m3u8")
    for name in ("escape.m3u8", "absolute.m3u8", "key.m3u8", "master.m3u8", "disguised.mp4"):
        with pytest.raises(MessageError, match="outside the directory"):
            check_pull_url(name, root)
    with pytest.raises(MessageError, match="local files only"):
        check_pull_url("remote.m3u8", root)
    with pytest.raises(MessageError, match="concat list"):
        check_pull_url("list.txt", root)


# -- 4. idle holds ---------------------------------------------------------------------------------
def test_pings_do_not_keep_an_idle_session(tiny, tmp_path):
    with LiveServer(tiny, out_dir=tmp_path, max_sessions=1, idle_timeout=0.6) as server:
        with connect(server.ws_url) as ws:
            start(ws)
            pongs = 0
            deadline = time.monotonic() + 10
            with pytest.raises(ConnectionClosed):
                while time.monotonic() < deadline:
                    ws.send(json.dumps({"type": "ping"}))
                    pongs += json.loads(ws.recv(timeout=1))["type"] == "pong"
                    time.sleep(0.1)
            assert ws.close_code == 1001 and pongs >= 3
        assert server.manager.sessions == {}


def test_connections_that_send_no_request_are_closed(tiny, tmp_path):
    with LiveServer(tiny, out_dir=tmp_path, header_timeout=0.5) as server:
        silent = socket.create_connection(("127.0.0.1", server.port))
        slow = socket.create_connection(("127.0.0.1", server.port))
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        with connect(server.ws_url) as ws:  # an upgraded WebSocket is not cut at the deadline
            events(ws, until="ready")
            t0 = time.monotonic()
            for sock in (silent, slow):
                sock.settimeout(5)
                assert sock.recv(1024) == b""  # closed by the server
            assert time.monotonic() - t0 < 3
            time.sleep(0.6)
            ws.send(json.dumps({"type": "ping"}))
            assert json.loads(ws.recv(timeout=5))["type"] == "pong"
        assert http("GET", f"{server.url}/health")[0] == 200  # a real request is answered
    silent.close(), slow.close()


# -- 6. errors a client can act on -------------------------------------------------------------------
def test_refused_start_options_do_not_fall_back_to_defaults(tiny, tmp_path):
    with LiveServer(tiny, out_dir=tmp_path) as server, connect(server.ws_url) as ws:
        events(ws, until="ready")
        for word, value in (("vision_window", 0), ("fps", 0), ("temperature", 0), ("max_new_tokens", 0),
                            ("top_k", 2000), ("top_p", 1.5)):  # fmt: skip
            options = {word: value}
            ws.send(json.dumps({"type": "start", "options": options}))
            error = json.loads(ws.recv(timeout=10))
            assert error["type"] == "error" and word in error["message"], options
            ws.send(binary_frame(0.0, frames(1)[0]))  # no silent fallback to the server's defaults
            assert "send a valid start first" in json.loads(ws.recv(timeout=10))["message"]
        server.manager.options.stream_defaults = {"policy": "sliding", "reset_every": 0}  # fails in start()
        ws.send(json.dumps({"type": "start", "options": FAST}))
        assert "start refused" in json.loads(ws.recv(timeout=10))["message"]
        ws.send(json.dumps({"type": "pull", "url": "clip.mp4"}))
        assert "send a valid start first" in json.loads(ws.recv(timeout=10))["message"]
        server.manager.options.stream_defaults = {}
        ws.send(json.dumps({"type": "start", "options": FAST}))
        assert json.loads(ws.recv(timeout=10))["type"] == "started"
        ws.send(json.dumps({"type": "stop"}))
        assert events(ws)[-1]["reason"] == "stopped"


def test_pull_errors_name_the_source_not_the_server_paths(tiny, tmp_path):
    allowed = tmp_path / "media"
    allowed.mkdir()
    with (
        LiveServer(tiny, out_dir=tmp_path / "out", allow_dir=allowed) as server,
        connect(server.ws_url) as ws,
    ):
        events(ws, until="ready")
        ws.send(json.dumps({"type": "pull", "url": "missing.mp4"}))
        error = json.loads(ws.recv(timeout=10))
    assert "missing.mp4" in error["message"] and str(allowed) not in error["message"]


def test_a_pull_that_never_connects_ends_with_its_source_error(tiny, tmp_path):
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = LiveServer(tiny, out_dir=tmp_path, allow_private_urls=True, idle_timeout=0.3, pull_reconnect=1)
    with server, connect(server.ws_url) as ws:
        events(ws, until="ready")
        ws.send(json.dumps({"type": "pull", "url": f"http://127.0.0.1:{port}/live.ts"}))
        received = events(ws, timeout=60)
    assert received[-1]["reason"].startswith("source failed") and "idle" not in received[-1]["reason"]
    assert of_type(received, "error")[-1]["fatal"]


# -- 7. the page -----------------------------------------------------------------------------------
def test_the_page_has_a_favicon(tiny, tmp_path):
    import urllib.request

    with LiveServer(tiny, out_dir=tmp_path) as server:
        response = urllib.request.urlopen(f"{server.url}/favicon.ico", timeout=10)
    assert response.status == 200 and response.headers["content-type"].startswith("image/svg+xml")
    assert response.read().startswith(b"<svg")
