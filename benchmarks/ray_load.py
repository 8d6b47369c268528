"""Live WebSocket sessions through `streamvlm serve --ray`, with 1 and 2 replicas, in one run.

    python benchmarks/ray_load.py [--model DIR] [--replicas 1,2] [--sessions 2,4,8] [--seconds 15] \
        [--out benchmarks/results/ray-load.json]

A local Ray cluster (loopback only); for each replica count, the `--ray` deployment on a free port
with `--max-sessions` per replica large enough that nothing is refused; for each N, N clients at
once stream a generated clip as JPEG in real time at 2 fps through the Front (the client of
benchmarks/server_load.py) and report the server's latency (second complete -> commentary out)
and the seconds it dropped. "held": the largest N with nothing dropped and p95 latency under 1 s.
Every loop is bounded; Serve and Ray are stopped at the end.
"""

import argparse
import json
import socket
import sys
import time
import urllib.request
from pathlib import Path

import ray

sys.path.insert(0, str(Path(__file__).parent))
from server_load import jpeg, load  # noqa: E402

from streamvlm.server import ray_serve  # noqa: E402
from streamvlm.sources import synthetic_frames  # noqa: E402


class Target:
    def __init__(self, port: int):
        self.ws_url = f"ws://127.0.0.1:{port}/v1/stream"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint (default: the shipped default model)")
    p.add_argument("--replicas", default="1,2", help="replica counts to measure")
    p.add_argument("--sessions", default="2,4,8", help="numbers of concurrent live sessions")
    p.add_argument("--seconds", type=int, default=15, help="stream seconds per client")
    p.add_argument("--size", type=int, default=112, help="frame side, pixels (default 112)")
    p.add_argument("--out", default="out/ray-load.json")
    args = p.parse_args(argv)

    frames = [jpeg(f) for f in synthetic_frames(args.seconds, 2, (args.size, args.size), 0)]
    counts = [int(n) for n in args.sessions.split(",")]
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    ray.init(
        include_dashboard=False,
        namespace=ray_serve.NAMESPACE,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
    report = {"model": args.model or "default", "fps": 2, "size": args.size, "seconds": args.seconds}
    report["runs"] = []
    try:
        for replicas in (int(r) for r in args.replicas.split(",")):
            options = {"max_sessions": max(counts), "out_dir": None}
            t0 = time.monotonic()
            ray_serve.deploy(args.model, options, "127.0.0.1", port, replicas=replicas)
            run = {"replicas": replicas, "deploy_s": round(time.monotonic() - t0, 1), "load": []}
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=30) as answer:
                report["model"] = json.loads(answer.read())["model"]
            for n in counts:
                result = load(Target(port), n, frames, 2)
                run["load"].append(result)
                print(f"replicas {replicas}, sessions {n}: {json.dumps(result)}", flush=True)
            held = [r for r in run["load"] if not r["dropped"] and (r["latency_p95_ms"] or 1e9) < 1000]
            run["held"] = max((r["sessions"] for r in held), default=0)
            report["runs"].append(run)
            ray_serve.shutdown(keep_serve=True)
    finally:
        ray_serve.shutdown()
        ray.shutdown()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    for run in report["runs"]:
        print(f"replicas {run['replicas']}: held {run['held']} live sessions (p95 < 1 s, none dropped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
