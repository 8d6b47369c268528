"""`streamvlm serve` over real HTTP and WebSocket on loopback, with the tiny model."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import default_sigint
from server_helpers import LiveServer, binary_frame, events, http, json_frame, of_type
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from streamvlm.server.frames import MessageError
from streamvlm.server.sessions import SecondBuffer, check_pull_url
from streamvlm.sources import synthetic_frames

FAST = {"max_new_tokens": 3, "greedy": True}


def frames(seconds: int, fps: int = 2, seed: int = 0) -> list[np.ndarray]:
    return list(synthetic_frames(seconds, fps, (56, 56), seed))


def refusal(ws) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed):
        ws.recv(timeout=10)
    return ws.close_code, ws.close_reason


def lines(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


# -- pure pieces ---------------------------------------------------------------------------------
def test_second_buffer_groups_frames_into_seconds():
    a, b, c = (np.full((4, 6, 3), v, np.uint8) for v in (10, 20, 30))
    buf = SecondBuffer(fps=2)
    assert buf.add(0.0, a) == []
    assert buf.add(0.2, b) == []  # slot 0 taken: skipped
    [first] = buf.add(0.5, c)  # the last slot completes second 0
    assert (first.start, first.end) == (0.0, 1.0) and [int(f[0, 0, 0]) for f in first.frames] == [10, 30]
    assert buf.add(0.9, a) == [] and buf.skipped == 2  # second 0 is gone
    assert buf.add(3.2, b) == []  # a gap is fine: only seconds with frames are stepped
    [late] = buf.add(4.1, np.full((8, 8, 3), 40, np.uint8))  # a later second completes 3 (one frame)
    assert late.start == 3.0 and [int(f[0, 0, 0]) for f in late.frames] == [20, 20]
    [last] = buf.flush()
    assert last.start == 4.0 and last.frames.shape == (2, 4, 6, 3)  # resized to the first size


def test_pull_urls_read_local_files_only_inside_the_allowed_dir(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"")
    public = lambda host, port, type: [(2, 1, 6, "", ("93.184.215.14", port))]  # noqa: E731
    assert check_pull_url("https://example.com/a.m3u8", None, resolve=public) == "https://example.com/a.m3u8"
    for url in ("clip.mp4", "/etc/passwd", "file:///etc/passwd"):
        with pytest.raises(MessageError, match="--allow-dir"):
            check_pull_url(url, None)
    assert check_pull_url("clip.mp4", tmp_path) == str(tmp_path / "clip.mp4")
    assert check_pull_url(f"file://{tmp_path}/clip.mp4", tmp_path) == str(tmp_path / "clip.mp4")
    for url in ("../x.mp4", "/etc/passwd", "file:///etc/passwd"):
        with pytest.raises(MessageError, match="outside"):
            check_pull_url(url, tmp_path)
    for url in ("ftp://host/x.mp4", "webcam:0", "concat:a.mp4|b.mp4"):
        with pytest.raises(MessageError, match="cannot pull"):
            check_pull_url(url, tmp_path)


def test_tokens_in_query_strings_are_masked_in_logs():
    import logging

    from uvicorn.logging import AccessFormatter

    from streamvlm.server.app import RedactTokens

    args = ("127.0.0.1:5", "GET", "/v1/stream?a=1&token=s3cret&b=2", "1.1", 200)
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d', args, None)
    assert RedactTokens().filter(record)
    line = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s').format(record)
    assert "s3cret" not in line and "token=***&b=2" in line


# -- sessions ------------------------------------------------------------------------------------
def test_two_concurrent_sessions_each_get_their_commentary(tiny, tmp_path):
    server = LiveServer(tiny, max_sessions=2, out_dir=tmp_path)
    with server, connect(server.ws_url) as a, connect(server.ws_url) as b:
        ready = [json.loads(ws.recv(timeout=10)) for ws in (a, b)]
        assert [r["type"] for r in ready] == ["ready", "ready"]
        assert ready[0]["session"] != ready[1]["session"]
        for ws in (a, b):
            ws.send(json.dumps({"type": "start", "options": FAST}))
        for i, (fa, fb) in enumerate(zip(frames(3), frames(3, seed=1), strict=True)):
            a.send(binary_frame(i / 2, fa))  # binary: float64 time + JPEG
            b.send(json_frame(i / 2, fb))  # JSON: base64 PNG
        for ws in (a, b):
            ws.send(json.dumps({"type": "stop"}))
        got = [events(ws) for ws in (a, b)]
    for received, r in zip(got, ready, strict=True):
        commentary = of_type(received, "commentary")
        assert [(c["start"], c["end"]) for c in commentary] == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]
        assert all(isinstance(c["text"], str) for c in commentary)
        stats = of_type(received, "stats")
        assert len(stats) == 3 and all(s["cache_tokens"] > 0 and s["latency_ms"] >= 0 for s in stats)
        assert max(s["sessions"] for s in stats) == 2  # both were open at once
        closed = received[-1]
        assert closed["reason"] == "stopped" and closed["seconds"] == 3
        assert lines(closed["files"]["jsonl"]) == [
            {k: c[k] for k in ("start", "end", "text")} for c in commentary
        ]
        assert Path(closed["files"]["vtt"]).read_text().startswith("WEBVTT")
        assert Path(closed["files"]["jsonl"]).name == f"{r['session']}.jsonl"


def test_session_limit_refuses_with_close_code_and_http_429(tiny, tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"")
    with LiveServer(tiny, max_sessions=1, out_dir=tmp_path, allow_dir=tmp_path) as server:
        with connect(server.ws_url) as first:
            assert json.loads(first.recv(timeout=10))["type"] == "ready"
            with connect(server.ws_url) as second:
                code, reason = refusal(second)
            assert code == 1013 and "1 of 1 sessions in use" in reason
            status, body, headers = http("POST", f"{server.url}/v1/sessions", {"url": "clip.mp4"})
            assert status == 429 and "sessions in use" in body["error"]["message"] and headers["retry-after"]
            first.send(json.dumps({"type": "stop"}))
            events(first)
        with connect(server.ws_url) as again:  # the slot is free once the first session ended
            assert json.loads(again.recv(timeout=10))["type"] == "ready"


def test_malformed_messages_get_error_events_and_the_session_goes_on(tiny, tmp_path):
    bad = [
        "not json",
        json.dumps([1, 2]),
        json.dumps({"type": "dance"}),
        json.dumps({"type": "frame", "t": 0, "image": "%%%"}),
        json.dumps({"type": "frame", "t": -1, "image": ""}),
        json.dumps({"type": "frame", "t": 0, "image": "aGVsbG8="}),  # "hello": not an image
        json.dumps({"type": "start", "options": {"policy": "full"}}),  # server-only option
        json.dumps({"type": "start", "options": {"max_new_tokens": 10_000}}),
        b"\x00\x01",  # binary shorter than its header
        b"\x00" * 8 + b"\xff\xd8\xff garbage",  # a corrupt JPEG
        "x" * 70_000,  # over the message limit
    ]
    server = LiveServer(tiny, out_dir=tmp_path, max_message_bytes=64 * 1024)
    with server, connect(server.ws_url) as ws:
        events(ws, until="ready")
        for message in bad:
            ws.send(message)
            error = json.loads(ws.recv(timeout=10))
            assert error["type"] == "error" and error["fatal"] is False and error["message"], message
        ws.send(json.dumps({"type": "start", "options": FAST}))
        assert json.loads(ws.recv(timeout=10))["type"] == "started"
        for i, frame in enumerate(frames(2)):
            ws.send(binary_frame(i / 2, frame))
        ws.send(json.dumps({"type": "ping"}))
        ws.send(json.dumps({"type": "stop"}))
        received = events(ws)
    assert len(of_type(received, "commentary")) == 2 and of_type(received, "pong")
    assert received[-1]["reason"] == "stopped"


def test_token_auth(tiny, tmp_path):
    from openai import AuthenticationError, OpenAI

    with LiveServer(tiny, out_dir=tmp_path, token="s3cret") as server:
        for url, headers in ((server.ws_url, {}), (server.ws_url + "?token=nope", {})):
            with connect(url, additional_headers=headers) as ws:
                code, reason = refusal(ws)
            assert code == 1008 and "unauthorized" in reason
        with connect(server.ws_url, additional_headers={"Authorization": "Bearer wrong"}) as ws:
            assert refusal(ws)[0] == 1008
        with connect(server.ws_url, additional_headers={"Authorization": "Bearer s3cret"}) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "ready"
        with connect(server.ws_url + "?token=s3cret") as ws:  # the browser's way
            assert json.loads(ws.recv(timeout=10))["type"] == "ready"
        assert http("GET", f"{server.url}/v1/models")[0] == 401
        assert http("GET", f"{server.url}/v1/sessions", headers={"Authorization": "Bearer x"})[0] == 401
        assert http("GET", f"{server.url}/health")[1]["token_required"] is True  # the page needs no token
        with pytest.raises(AuthenticationError):
            OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0).models.list()
        models = OpenAI(base_url=f"{server.url}/v1", api_key="s3cret", max_retries=0).models.list()
        assert [m.id for m in models.data] == [tiny.path.name]


def test_idle_session_times_out_and_frees_its_slot(tiny, tmp_path):
    with LiveServer(tiny, out_dir=tmp_path, max_sessions=1, idle_timeout=0.5) as server:
        with connect(server.ws_url) as ws:
            events(ws, until="ready")
            ws.send(json.dumps({"type": "start", "options": FAST}))
            ws.send(binary_frame(0.0, frames(1)[0]))  # half a second, then silence
            received = events(ws, timeout=30)
            assert refusal(ws)[0] == 1001
        assert received[-1]["reason"] == "idle for 0.5 s"
        assert [c["start"] for c in of_type(received, "commentary")] == [0.0]  # flushed before closing
        assert len(lines(received[-1]["files"]["jsonl"])) == 1
        assert server.manager.sessions == {} and server.manager.finished  # memory freed, summary kept
        assert http("GET", f"{server.url}/health")[1]["sessions"] == 0


def test_shutdown_flushes_every_session(tiny, tmp_path):
    server = LiveServer(tiny, out_dir=tmp_path, max_sessions=2).__enter__()
    try:
        with connect(server.ws_url) as a, connect(server.ws_url) as b:
            for ws in (a, b):
                events(ws, until="ready")
                ws.send(json.dumps({"type": "start", "options": FAST}))
                for i, frame in enumerate(frames(2)[:3]):  # 1.5 s: second 1 is incomplete
                    ws.send(binary_frame(i / 2, frame))
            events(a, until="commentary")  # second 0 is through
            server.stop()
            got = [events(ws) for ws in (a, b)]
            codes = [refusal(ws)[0] for ws in (a, b)]
    finally:
        server.stop()
    assert codes == [1001, 1001]
    for received in got:
        closed = received[-1]
        assert closed["reason"] == "server shutting down" and closed["seconds"] == 2
        assert [line["start"] for line in lines(closed["files"]["jsonl"])] == [0.0, 1.0]
        assert len(lines(closed["files"]["stats.jsonl"])) == 2


# -- pulled URLs ---------------------------------------------------------------------------------
def test_pulled_url_only_inside_allow_dir(tiny, clip, tmp_path):
    with LiveServer(tiny, out_dir=tmp_path) as server:  # no --allow-dir: no local files at all
        with connect(server.ws_url) as ws:
            events(ws, until="ready")
            ws.send(json.dumps({"type": "pull", "url": str(clip)}))
            error = json.loads(ws.recv(timeout=10))
            assert error["type"] == "error" and "--allow-dir" in error["message"]
            ws.send(json.dumps({"type": "stop"}))
            assert events(ws)[-1]["reason"] == "stopped"  # the session went on after the refusal
        status, body, _ = http("POST", f"{server.url}/v1/sessions", {"url": f"file://{clip}"})
        assert status == 400 and "--allow-dir" in body["error"]["message"]

    with LiveServer(tiny, out_dir=tmp_path, allow_dir=clip.parent) as server:
        with connect(server.ws_url) as ws:
            events(ws, until="ready")
            ws.send(json.dumps({"type": "pull", "url": "../../etc/passwd"}))
            assert "outside" in json.loads(ws.recv(timeout=10))["message"]
            ws.send(json.dumps({"type": "start", "options": FAST}))
            ws.send(json.dumps({"type": "pull", "url": clip.name, "seconds": 3}))
            received = events(ws)
        assert [c["start"] for c in of_type(received, "commentary")] == [0.0, 1.0, 2.0]
        assert received[-1]["reason"] == "source ended"

        status, body, _ = http(
            "POST", f"{server.url}/v1/sessions", {"url": clip.name, "seconds": 2, "options": FAST}
        )
        assert status == 201 and body["kind"] == "pull"
        deadline = time.monotonic() + 30
        while (info := http("GET", f"{server.url}/v1/sessions/{body['id']}")[1])["state"] != "closed":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert info["seconds"] == 2 and len(lines(info["files"]["jsonl"])) == 2


# -- chat ----------------------------------------------------------------------------------------
def test_chat_completions_with_the_openai_client(tiny, tmp_path):
    import base64

    from openai import BadRequestError, OpenAI
    from server_helpers import encode

    image = "data:image/png;base64," + base64.b64encode(encode(frames(1)[0], "PNG")).decode()
    with LiveServer(tiny, out_dir=tmp_path) as server:
        client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)

        def ask(*parts):
            content = [{"type": "text", "text": "What is this?"}, *parts]
            return client.chat.completions.create(
                model=tiny.path.name,
                messages=[{"role": "system", "content": "Describe."}, {"role": "user", "content": content}],
                max_tokens=4,
                temperature=0,
            )

        reply = ask({"type": "image_url", "image_url": {"url": image}})
        assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
        assert reply.model == tiny.path.name
        choice = reply.choices[0]
        assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
        assert choice.finish_reason in ("stop", "length") and 1 <= reply.usage.completion_tokens <= 4
        # the image's tokens: 56x56 -> 2x2 merged patches (tiny pixel budget), vision start and end
        assert reply.usage.prompt_tokens == ask().usage.prompt_tokens + 4 + 2
        with pytest.raises(BadRequestError, match="data: URLs"):
            client.chat.completions.create(
                model="x",
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}],
                    }
                ],
            )


# -- the command ---------------------------------------------------------------------------------
def test_serve_command_finishes_sessions_on_ctrl_c(tiny_dir, tmp_path):
    log = tmp_path / "serve.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamvlm", "serve", "--model", str(tiny_dir), "--port", "0"]
            + ["--out-dir", str(tmp_path / "out"), "--log-level", "warning"],
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=default_sigint,
        )
    try:
        deadline = time.monotonic() + 60
        while "serving" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        url = log.read_text().split("on http://")[1].split("/")[0]
        with connect(f"ws://{url}/v1/stream") as ws:
            events(ws, until="ready")
            ws.send(json.dumps({"type": "start", "options": FAST}))
            for i, frame in enumerate(frames(2)[:3]):
                ws.send(binary_frame(i / 2, frame))
            events(ws, until="commentary")
            proc.send_signal(signal.SIGINT)
            received = events(ws)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert received[-1]["reason"] == "server shutting down"
    assert [line["start"] for line in lines(received[-1]["files"]["jsonl"])] == [0.0, 1.0]


def test_serve_refuses_a_missing_allow_dir(capsys):
    from streamvlm.cli import main

    assert main(["serve", "--allow-dir", "/no/such/dir"]) == 2
    assert "--allow-dir /no/such/dir is not a directory" in capsys.readouterr().err
