"""`streamvlm serve --ray` (issue 31): today's protocol on Ray Serve. A local Ray cluster (one per
module, `ray.init` here), replicas of the tiny model, loopback only; every deployment is deleted
after its test and the cluster is shut down at the end (`serve.shutdown`, `ray.shutdown`)."""

import json
import socket
import sys
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import pytest
import ray
import test_server
from server_helpers import binary_frame, events, http, of_type
from websockets.sync.client import connect

from streamvlm.server import ray_serve
from streamvlm.sources import synthetic_frames

FAST = {"max_new_tokens": 3, "greedy": True}


def frames(seconds: int, seed: int = 0):
    return list(synthetic_frames(seconds, 2, (56, 56), seed))


def lines(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def live() -> dict[str, dict]:
    return ray.get(ray_serve.registry().live.remote(), timeout=10)


def until(condition, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


@pytest.fixture(scope="module")
def ray_port():
    """A local Ray cluster and Serve on a free loopback port, for this module; stopped at its end."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    ray.init(
        num_cpus=4,
        include_dashboard=False,
        namespace=ray_serve.NAMESPACE,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",  # Ray's own ports on loopback too
    )
    try:
        yield port
    finally:
        ray_serve.shutdown()
        ray.shutdown()


class RayServer:
    """`tests/server_helpers.LiveServer`'s interface over a Ray Serve deployment: `.url`, `.ws_url`."""

    def __init__(self, loaded, port: int, replicas: int = 1, **options):
        self.model, self.port, self.replicas, self.options = str(loaded.path), port, replicas, options
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/v1/stream"

    def __enter__(self):
        ray_serve.deploy(self.model, self.options, "127.0.0.1", self.port, replicas=self.replicas)
        return self

    def stop(self) -> None:
        ray_serve.shutdown(keep_serve=True)

    def __exit__(self, *exc):
        self.stop()


def open_session(stack: ExitStack, url: str) -> tuple:
    ws = stack.enter_context(connect(url))
    ready = json.loads(ws.recv(timeout=30))
    assert ready["type"] == "ready", ready
    ws.send(json.dumps({"type": "start", "options": FAST}))
    assert events(ws, until="started")[-1]["type"] == "started"
    return ws, ready["session"]


def stream(ws, seconds: int, seed: int = 0, first: int = 0) -> None:
    for i, frame in enumerate(frames(seconds, seed)):
        ws.send(binary_frame(first + i / 2, frame))


# -- the command line ----------------------------------------------------------------------------
def test_ray_flags_are_checked_and_ray_missing_says_how_to_install(capsys, monkeypatch):
    from streamvlm.cli import main

    for argv, message in (
        (["--replicas", "2"], "--replicas needs --ray"),
        (["--gpus-per-replica", "1"], "--gpus-per-replica needs --ray"),
        (["--ray", "--autoscale", "3:1"], "--autoscale 3:1: expected MIN:MAX"),
        (["--ray", "--autoscale", "two"], "--autoscale two: expected MIN:MAX"),
        (["--ray", "--replicas", "2", "--autoscale", "1:2"], "--replicas and --autoscale are exclusive"),
        (["--ray", "--gpus-per-replica", "-1"], "--gpus-per-replica must be >= 0"),
    ):
        assert main(["serve", *argv]) == 2, argv
        assert message in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    assert main(["serve", "--ray", "--port", "0"]) == 2
    assert "pip install 'streamvlm[ray]'" in capsys.readouterr().err


def test_build_takes_serve_run_and_rayservice_arguments():
    app = ray_serve.build(
        {"model": "m", "autoscale": "1:3", "gpus": "1", "device": "cuda", "max_sessions": "8"}
        | {"allow_private_urls": "true", "idle_timeout": 5, "out_dir": "/o", "replica_host": "127.0.0.1"}
    )
    replica = app._bound_deployment.init_args[0]._bound_deployment
    options = {"max_sessions": 8, "allow_private_urls": True, "idle_timeout": 5, "out_dir": "/o"}
    assert replica.init_args == ("m", "cuda", None, options, "127.0.0.1", "warning")
    assert replica.ray_actor_options["num_gpus"] == 1 and replica.max_ongoing_requests == 8 + 4
    scaling = replica._deployment_config.autoscaling_config
    assert (scaling.min_replicas, scaling.max_replicas, scaling.target_ongoing_requests) == (1, 3, 6)
    with pytest.raises(ValueError, match="unknown streamvlm serve options: nope"):
        ray_serve.build({"model": "m", "nope": 1})


# -- two replicas ----------------------------------------------------------------------------------
def test_sessions_spread_over_replicas_and_pulled_ids_reach_their_replica(tiny, clip, tmp_path, ray_port):
    server = RayServer(tiny, ray_port, replicas=2, max_sessions=2, out_dir=tmp_path, allow_dir=clip.parent)
    with server, ExitStack() as stack:
        with urllib.request.urlopen(f"{server.url}/", timeout=30) as page:  # the web page, as before
            assert page.status == 200 and b"<video" in page.read()
        health = http("GET", f"{server.url}/health")[1]
        assert (health["sessions"], health["max_sessions"], len(health["replicas"])) == (0, 4, 2)
        a, sa = open_session(stack, server.ws_url)
        b, sb = open_session(stack, server.ws_url)
        tags = {sa.split("-")[0], sb.split("-")[0]}
        assert tags == {r["tag"] for r in health["replicas"]}  # one on each replica: the least loaded
        until(lambda: http("GET", f"{server.url}/health")[1]["sessions"] == 2, what="/health to sum both")

        pulled = []  # one replica has room left for each: they land on both
        for _ in range(2):
            status, body, _ = http("POST", f"{server.url}/v1/sessions", {"url": clip.name, "options": FAST})
            assert status == 201, body
            pulled.append(body["id"])
        assert {sid.split("-")[0] for sid in pulled} == tags
        status, body, _ = http("POST", f"{server.url}/v1/sessions", {"url": clip.name})
        assert status == 429, body  # 2 replicas x 2 sessions, all in use
        listed = http("GET", f"{server.url}/v1/sessions")[1]
        assert {s["id"] for s in listed["sessions"]} == {sa, sb, *pulled} and listed["max_sessions"] == 4
        for sid in pulled:  # each id reaches the replica that holds it (elsewhere it would be a 404)
            url = f"{server.url}/v1/sessions/{sid}"
            info = until(lambda: (i := http("GET", url)[1]).get("state") == "closed" and i, what=sid)  # noqa: B023
            assert info["id"] == sid and info["kind"] == "pull" and info["reason"] == "source ended"
            assert info["seconds"] == 12 and len(lines(info["files"]["jsonl"])) == 12  # the whole clip
            status, body, _ = http("DELETE", url)
            assert status == 404 and body["error"]["message"] == f"no open session {sid}"  # its replica's
        assert http("GET", f"{server.url}/v1/sessions/rnobody-x")[0] == 404

        for i, ws in enumerate((a, b)):
            stream(ws, 2, seed=i)
            ws.send(json.dumps({"type": "stop"}))
        for ws, sid in ((a, sa), (b, sb)):
            received = events(ws)
            ws.close()
            commentary = of_type(received, "commentary")
            assert [c["start"] for c in commentary] == [0.0, 1.0]
            assert received[-1]["reason"] == "stopped" and received[-1]["seconds"] == 2
            assert Path(received[-1]["files"]["jsonl"]).name == f"{sid}.jsonl"
            assert [line["text"] for line in lines(received[-1]["files"]["jsonl"])] == [
                c["text"] for c in commentary
            ]


@pytest.mark.slow
def test_a_killed_replica_ends_its_sessions_and_new_sessions_go_on(tiny, tmp_path, ray_port):
    server = RayServer(tiny, ray_port, replicas=2, max_sessions=2, out_dir=tmp_path)
    with server, ExitStack() as stack:
        a, sa = open_session(stack, server.ws_url)
        b, sb = open_session(stack, server.ws_url)
        stream(a, 2)
        stream(b, 2, seed=1)
        for ws in (a, b):
            events(ws, until="commentary")
            events(ws, until="commentary")  # two seconds each, written
        victim = live()[sa.split("-")[0]]
        ray.kill(ray.get_actor(victim["actor"], namespace="serve"))
        received = events(a, timeout=30)
        closed = received[-1]
        assert closed["type"] == "closed" and closed["reason"].startswith("replica failed")
        assert closed["seconds"] == 2 and len(lines(closed["files"]["jsonl"])) == 2  # flushed per line
        a.close()
        assert a.close_code in (1011, 1006)

        c, sc = open_session(stack, server.ws_url)  # a new session succeeds (on the live replica)
        assert sc.split("-")[0] != sa.split("-")[0]
        for ws in (b, c):
            stream(ws, 1, first=2)
            ws.send(json.dumps({"type": "stop"}))
        for ws in (b, c):
            assert events(ws)[-1]["reason"] == "stopped"
            ws.close()
        # Serve restarts the replica: two live replicas again, one of them new
        until(lambda: len(tags := set(live())) == 2 and sa.split("-")[0] not in tags, 120, "a new replica")


#: test_server.py's protocol checks, run against the Ray deployment (one replica: the same limits)
PROTOCOL = [
    test_server.test_two_concurrent_sessions_each_get_their_commentary,
    test_server.test_session_limit_refuses_with_close_code_and_http_429,
    test_server.test_malformed_messages_get_error_events_and_the_session_goes_on,
    test_server.test_token_auth,
    test_server.test_pulled_url_only_inside_allow_dir,
    test_server.test_chat_completions_with_the_openai_client,
]


@pytest.mark.slow
@pytest.mark.parametrize("check", PROTOCOL, ids=[f.__name__.removeprefix("test_") for f in PROTOCOL])
def test_protocol_on_ray(check, tiny, clip, tmp_path, ray_port, monkeypatch):
    monkeypatch.setattr(test_server, "LiveServer", lambda loaded, **o: RayServer(loaded, ray_port, **o))
    args = {"tiny": tiny, "clip": clip, "tmp_path": tmp_path}
    check(**{name: args[name] for name in check.__code__.co_varnames[: check.__code__.co_argcount]})


@pytest.mark.slow
def test_draining_replicas_finish_their_sessions_first(tiny, tmp_path, ray_port):
    """A redeploy (here from two replicas to one) drains the old replicas, as a scale-down does:
    Serve sends them no new session and waits for their sessions to end."""
    import threading

    from ray import serve

    server = RayServer(tiny, ray_port, replicas=2, max_sessions=2, out_dir=tmp_path)
    with server, ExitStack() as stack:
        a, sa = open_session(stack, server.ws_url)
        b, sb = open_session(stack, server.ws_url)
        before = set(live())
        one = ray_serve.application(server.model, server.options, replicas=1, replica_host="127.0.0.1")
        scaling = threading.Thread(target=serve.run, args=(one,), kwargs={"name": ray_serve.APP}, daemon=True)
        scaling.start()  # the old replicas drain: their open sessions go on
        time.sleep(3)
        for i, ws in enumerate((a, b)):
            stream(ws, 2, seed=i)
        for ws in (a, b):
            ws.send(json.dumps({"type": "stop"}))
        for ws in (a, b):
            received = events(ws)
            assert received[-1]["reason"] == "stopped" and len(of_type(received, "commentary")) == 2
        c, sc = open_session(stack, server.ws_url)  # a new session, on the new replica
        assert sc.split("-")[0] not in before
        scaling.join(60)
        assert not scaling.is_alive()
        left = until(lambda: len(tags := set(live())) == 1 and tags, 60, "the drained replicas to go")
        assert left == {sc.split("-")[0]}
        c.send(json.dumps({"type": "stop"}))
        assert events(c)[-1]["reason"] == "stopped"


@pytest.mark.slow
def test_serve_ray_command_serves_and_finishes_sessions_on_sigterm(tiny_dir, tmp_path):
    import os
    import signal
    import subprocess

    from helpers import default_sigint

    log = tmp_path / "serve.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamvlm", "serve", "--ray", "--replicas", "1", "--port", "0"]
            + ["--model", str(tiny_dir), "--out-dir", str(tmp_path / "out"), "--log-level", "warning"],
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "RAY_ADDRESS": "local"},  # a Ray of its own
            preexec_fn=default_sigint,
        )
    try:
        until(lambda: "serving on Ray Serve" in log.read_text() or proc.poll() is not None, 180, "serve")
        assert proc.poll() is None, log.read_text()
        url = log.read_text().split("at http://")[1].split("/")[0]
        with connect(f"ws://{url}/v1/stream") as ws:
            events(ws, until="ready")
            ws.send(json.dumps({"type": "start", "options": FAST}))
            stream(ws, 2)
            ws.send(binary_frame(2.0, frames(1)[0]))  # second 2 is incomplete
            events(ws, until="commentary")
            proc.send_signal(signal.SIGTERM)  # as Kubernetes stops it; Ctrl-C is the same
            received = events(ws)
        assert proc.wait(120) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert received[-1]["reason"] == "server shutting down" and received[-1]["seconds"] == 3
    assert [line["start"] for line in lines(received[-1]["files"]["jsonl"])] == [0.0, 1.0, 2.0]
