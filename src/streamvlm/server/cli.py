"""`streamvlm serve`: the model behind a WebSocket, a web page and an OpenAI-compatible chat API."""

import argparse
import os
import signal
import socket
import sys
import time
from pathlib import Path

SERVE_HELP = """Load the model once and serve it on http://HOST:PORT/:

  /                      the web page: webcam or video file in, commentary out
  /v1/stream             WebSocket streaming sessions (protocol: README, "streamvlm serve")
  /v1/sessions           sessions that pull a URL into their files (POST), list, status, stop
  /v1/chat/completions   OpenAI-compatible chat with text and images

Binds 127.0.0.1 by default. With --token (or $STREAMVLM_TOKEN) every /v1/ route needs
"Authorization: Bearer TOKEN" (browsers: ?token=TOKEN). Each session writes <id>.jsonl, <id>.vtt
and <id>.stats.jsonl under --out-dir; Ctrl-C finishes every session before exiting."""


def register(sub) -> None:
    from ..cli import positive_int

    p = sub.add_parser(
        "serve",
        help="serve the model: streaming WebSocket, web page, OpenAI chat API",
        description=SERVE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add("--model", default=None, help="checkpoint dir or hub id (default: the shipped default)")
    add("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    add("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    add("--max-sessions", type=positive_int, default=4, help="streaming sessions at once (default 4)")
    add("--idle-timeout", type=float, default=60.0, help="end a session silent this long, s (default 60)")
    add("--token", default=None, help="bearer token required on /v1/ (default: $STREAMVLM_TOKEN, else none)")
    add(
        "--max-message-bytes",
        type=positive_int,
        default=4 * 2**20,
        help="largest WebSocket message or request body (default 4 MiB)",
    )
    add("--allow-dir", default=None, help="a directory whose files sessions may pull (default: none)")
    add("--out-dir", default="out/sessions", help="per-session output files (default out/sessions)")
    add(
        "--max-queued-seconds",
        type=positive_int,
        default=8,
        help="seconds a live session may have waiting for the model before dropping the oldest (default 8)",
    )
    add(
        "--max-prompt-tokens",
        type=positive_int,
        default=4096,
        help="largest chat prompt, text and images, in tokens (default 4096; over it: 400)",
    )
    add(
        "--allow-private-urls",
        action="store_true",
        help="let sessions pull URLs on loopback, private and link-local addresses (camera networks)",
    )
    add(
        "--max-connections",
        type=positive_int,
        default=64,
        help="open HTTP and WebSocket connections at once (default 64; over it: 503)",
    )
    add("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    add("--dtype", choices=("float32", "bfloat16", "float16"), default=None, help="model dtype")
    add("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    ray = p.add_argument_group("Ray Serve (pip install 'streamvlm[ray]'; docs/serving.md)")
    ray.add_argument("--ray", action="store_true", help="serve on Ray Serve: replicas of the model, one port")
    ray.add_argument("--replicas", type=positive_int, default=None, help="model replicas (default 1)")
    ray.add_argument("--autoscale", default=None, metavar="MIN:MAX", help="autoscale replicas, e.g. 1:4")
    ray.add_argument("--gpus-per-replica", type=float, default=0, help="GPUs per replica (default 0: CPU)")
    add("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    from ..errors import StreamvlmError
    from ..runner import load_for_run
    from .app import create_app, make_server
    from .sessions import ServerOptions

    allow_dir = Path(args.allow_dir).expanduser() if args.allow_dir else None
    if allow_dir is not None and not allow_dir.is_dir():
        raise StreamvlmError(f"--allow-dir {args.allow_dir} is not a directory")
    if args.idle_timeout <= 0:
        raise StreamvlmError("--idle-timeout must be > 0 seconds")
    autoscale = check_ray_flags(args)
    try:
        sock = socket.create_server((args.host, args.port))
    except OSError as exc:
        raise StreamvlmError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    if args.ray:
        port = sock.getsockname()[1]
        sock.close()  # Serve's proxy listens there
        return serve_on_ray(args, allow_dir, port, autoscale)
    loaded = load_for_run(args.model, args.device, args.dtype)
    options = ServerOptions(
        max_sessions=args.max_sessions,
        idle_timeout=args.idle_timeout,
        token=args.token or os.environ.get("STREAMVLM_TOKEN") or None,
        max_message_bytes=args.max_message_bytes,
        allow_dir=allow_dir,
        out_dir=Path(args.out_dir),
        max_queued_seconds=args.max_queued_seconds,
        max_prompt_tokens=args.max_prompt_tokens,
        allow_private_urls=args.allow_private_urls,
        max_connections=max(args.max_connections, args.max_sessions + 1),
        stream_defaults=loaded.defaults.get("stream", {}),
    )
    if options.token is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: no --token on {args.host}: anyone who can reach it may use it", file=sys.stderr)
    server = make_server(create_app(loaded, options), args.host, args.port, args.log_level)
    host, port = sock.getsockname()[:2]
    print(f"streamvlm: serving {loaded.path.name} on http://{host}:{port}/", file=sys.stderr, flush=True)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C once every session is finished
        print("streamvlm: stopped; every session finished", file=sys.stderr)
    return 0


def check_ray_flags(args) -> tuple[int, int] | None:
    """The Ray flags' errors, before anything starts; --autoscale as (MIN, MAX)."""
    from ..errors import StreamvlmError

    if not args.ray:
        for flag, given in (("--replicas", args.replicas), ("--autoscale", args.autoscale)):
            if given is not None:
                raise StreamvlmError(f"{flag} needs --ray")
        if args.gpus_per_replica:
            raise StreamvlmError("--gpus-per-replica needs --ray")
        return None
    if args.replicas is not None and args.autoscale is not None:
        raise StreamvlmError("--replicas and --autoscale are exclusive: a fixed count, or a range")
    if args.gpus_per_replica < 0:
        raise StreamvlmError(f"--gpus-per-replica must be >= 0, got {args.gpus_per_replica:g}")
    if args.autoscale is None:
        return None
    low, _, high = args.autoscale.partition(":")
    if not (low.isdigit() and high.isdigit() and 1 <= int(low) <= int(high)):
        raise StreamvlmError(f"--autoscale {args.autoscale}: expected MIN:MAX with 1 <= MIN <= MAX, e.g. 1:4")
    return int(low), int(high)


def serve_on_ray(args, allow_dir, port: int, autoscale) -> int:
    """`--ray`: the same routes on Ray Serve, each replica with its own model and sessions."""
    from ..errors import StreamvlmError

    try:
        import ray
        from ray import serve  # noqa: F401
    except ImportError:
        raise StreamvlmError(
            "--ray needs Ray Serve: pip install 'streamvlm[ray]' (that is, ray[serve]==2.60.0)"
        ) from None

    from . import ray_serve

    device = "cuda" if args.gpus_per_replica > 0 else args.device
    options = {
        "max_sessions": args.max_sessions,
        "idle_timeout": args.idle_timeout,
        "token": args.token or os.environ.get("STREAMVLM_TOKEN") or None,
        "max_message_bytes": args.max_message_bytes,
        "allow_dir": allow_dir.resolve() if allow_dir else None,
        "out_dir": Path(args.out_dir).resolve(),
        "max_queued_seconds": args.max_queued_seconds,
        "max_prompt_tokens": args.max_prompt_tokens,
        "allow_private_urls": args.allow_private_urls,
        "max_connections": max(args.max_connections, args.max_sessions + 1),
    }
    if options["token"] is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: no --token on {args.host}: anyone who can reach it may use it", file=sys.stderr)
    try:
        url = ray_serve.deploy(
            args.model,
            options,
            args.host,
            port,
            replicas=args.replicas or 1,
            autoscale=autoscale,
            gpus=args.gpus_per_replica,
            device=device,
            dtype=args.dtype,
            log_level=args.log_level,
        )
        print(f"streamvlm: serving on Ray Serve at {url}/", file=sys.stderr, flush=True)
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM finishes sessions too
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("streamvlm: stopping; replicas finish their sessions", file=sys.stderr)
    finally:
        ray_serve.shutdown()
        ray.shutdown()
    return 0
