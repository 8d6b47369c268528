"""`streamvlm serve`: the model behind a WebSocket, a web page and an OpenAI-compatible chat API."""

import argparse
import os
import socket
import sys
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
    try:
        sock = socket.create_server((args.host, args.port))
    except OSError as exc:
        raise StreamvlmError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
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
