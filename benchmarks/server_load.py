"""Live WebSocket sessions against `streamvlm serve`, and the server's memory under bad messages.

    python benchmarks/server_load.py [--model DIR] [--sessions 1,2,4,8] [--seconds 20] \
        [--out benchmarks/results/server-load.json]

A real server (the app `streamvlm serve` runs) on a free loopback port, in this process. For each
N in --sessions, N clients connect at once and send frames of a generated clip as JPEG over the
WebSocket, paced in real time at --fps; each reports the server's `latency_ms` (second complete ->
commentary out) and the seconds the server dropped. Then a battery of bad messages and requests
(malformed JSON, oversized and corrupt frames, frames from the far future, huge chat prompts and
images, idle sockets) is sent, and the server's RSS is compared before and after. Loopback only;
every loop is bounded.
"""

import argparse
import base64
import gc
import io
import json
import socket
import struct
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import psutil
from PIL import Image
from websockets.sync.client import connect

from streamvlm.runner import load_for_run
from streamvlm.server.app import create_app, make_server
from streamvlm.server.sessions import ServerOptions
from streamvlm.sources import synthetic_frames


def jpeg(frame: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(frame).save(out, "JPEG", quality=85)
    return out.getvalue()


class Server:
    def __init__(self, loaded, options: ServerOptions):
        self.app = create_app(loaded, options)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = make_server(self.app, "127.0.0.1", self.port, log_level="error")
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        self.url, self.ws_url = f"http://127.0.0.1:{self.port}", f"ws://127.0.0.1:{self.port}/v1/stream"

    def stop(self):
        self.server.should_exit = True
        self.thread.join(120)


def client(url: str, frames: list[bytes], fps: int, out: dict) -> None:
    """One live client: frames in real time, then stop; collects stats and dropped events."""
    latencies, dropped, commentary = [], 0, 0
    with connect(url, max_size=None) as ws:
        json.loads(ws.recv(timeout=30))  # ready
        ws.send(json.dumps({"type": "start", "options": {"greedy": True}}))
        done = threading.Event()

        def read():
            nonlocal dropped, commentary
            while True:
                event = json.loads(ws.recv(timeout=300))
                if event["type"] == "stats" and not done.is_set():
                    latencies.append(event["latency_ms"])
                elif event["type"] == "commentary":
                    commentary += 1
                elif event["type"] == "dropped":
                    dropped += 1
                elif event["type"] == "closed":
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        t0 = time.monotonic()
        for j, data in enumerate(frames):
            time.sleep(max(0.0, t0 + j / fps - time.monotonic()))
            ws.send(struct.pack("<d", j / fps) + data)
        time.sleep(1.0)
        done.set()  # what is stepped after the stop is not live any more
        ws.send(json.dumps({"type": "stop"}))
        reader.join(300)
    out.update(latencies=latencies, dropped=dropped, commentary=commentary)


def load(server: Server, n: int, frames: list[bytes], fps: int) -> dict:
    results = [{} for _ in range(n)]
    threads = [threading.Thread(target=client, args=(server.ws_url, frames, fps, r)) for r in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    latencies = np.array([x for r in results for x in r.get("latencies", [])])
    return {
        "sessions": n,
        "seconds_sent": n * len(frames) // fps,
        "commentary": sum(r.get("commentary", 0) for r in results),
        "dropped": sum(r.get("dropped", 0) for r in results),
        "latency_p50_ms": round(float(np.percentile(latencies, 50)), 1) if latencies.size else None,
        "latency_p95_ms": round(float(np.percentile(latencies, 95)), 1) if latencies.size else None,
        "latency_max_ms": round(float(latencies.max()), 1) if latencies.size else None,
    }


def post(url: str, body: bytes) -> int:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def battery(server: Server, rounds: int, rss: list | None = None) -> dict:
    """Bad messages and requests, `rounds` times over; returns the answers counted by kind and
    appends this process's RSS (MiB) after each round to `rss`."""
    big_png = io.BytesIO()
    Image.fromarray(np.zeros((4096, 4096, 3), np.uint8)).save(big_png, "PNG")
    big = "data:image/png;base64," + base64.b64encode(big_png.getvalue()).decode()
    ws_bad = [
        "not json",
        json.dumps({"type": "dance"}),
        json.dumps({"type": "frame", "t": 1e306, "image": ""}),
        json.dumps({"type": "start", "options": {"vision_window": 0}}),
        json.dumps({"type": "frame", "t": 0, "image": "%%%"}),
        b"\x00" * 8 + b"\xff\xd8\xff garbage",
        struct.pack("<d", 0.0) + big_png.getvalue(),  # 4096x4096: decoded, refused (its start was)
        "x" * (5 * 2**20),  # over the 4 MiB message limit
    ]
    chat = f"{server.url}/v1/chat/completions"
    http_bad = [
        json.dumps({"messages": [{"role": "user", "content": "word " * 20000}]}).encode(),
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": big}}] * 3}
                ]
            }
        ).encode(),
        json.dumps({"messages": [{"role": "user", "content": "x"}], "seed": 2**80}).encode(),
        b"{not json",
    ]
    answers: dict[str, int] = {}
    for _ in range(rounds):
        with connect(server.ws_url, max_size=None) as ws:
            json.loads(ws.recv(timeout=30))
            for message in ws_bad:
                ws.send(message)
            ws.send(json.dumps({"type": "stop"}))
            while (event := json.loads(ws.recv(timeout=120)))["type"] != "closed":
                answers[event["type"]] = answers.get(event["type"], 0) + 1
        for body in http_bad:
            status = post(chat, body)
            answers[f"http {status}"] = answers.get(f"http {status}", 0) + 1
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(8)]
        for sock in idle:
            sock.close()
        if rss is not None:
            gc.collect()
            rss.append(round(psutil.Process().memory_info().rss / 2**20, 1))
    return answers


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint (default: the shipped default model)")
    p.add_argument("--sessions", default="1,2,4,8", help="numbers of concurrent live sessions")
    p.add_argument("--seconds", type=int, default=20, help="stream seconds per client")
    p.add_argument("--fps", type=int, default=2)
    p.add_argument("--size", type=int, default=112, help="frame side, pixels (default 112)")
    p.add_argument("--rounds", type=int, default=20, help="rounds of the bad-message battery")
    p.add_argument("--max-queued-seconds", type=int, default=8)
    p.add_argument("--out", default="out/server-load.json")
    args = p.parse_args(argv)

    loaded = load_for_run(args.model, quiet=True)
    frames = [jpeg(f) for f in synthetic_frames(args.seconds, args.fps, (args.size, args.size), 0)]
    options = ServerOptions(
        max_sessions=max(int(n) for n in args.sessions.split(",")),
        out_dir=None,
        max_queued_seconds=args.max_queued_seconds,
        stream_defaults=loaded.defaults.get("stream", {}),
    )
    server = Server(loaded, options)
    process = psutil.Process()
    report = {"model": loaded.path.name, "fps": args.fps, "size": args.size, "cpus": psutil.cpu_count()}
    try:
        report["load"] = []
        for n in (int(n) for n in args.sessions.split(",")):
            row = load(server, n, frames, args.fps)
            report["load"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        battery(server, 2)  # warm up every path once before measuring
        gc.collect()
        before = process.memory_info().rss / 2**20
        by_round = []
        answers = battery(server, args.rounds, by_round)
        gc.collect()
        after = process.memory_info().rss / 2**20
        report["battery"] = {"rounds": args.rounds, "answers": answers, "rss_before_mb": round(before, 1),
                             "rss_after_mb": round(after, 1), "rss_by_round_mb": by_round}  # fmt: skip
        print(json.dumps(report["battery"]), file=sys.stderr)
        report["sessions_left"] = len(server.app.state.manager.sessions)
    finally:
        server.stop()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
