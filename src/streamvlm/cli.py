"""`streamvlm` command line: a thin layer over the library.

    streamvlm run SOURCE [--model DIR_OR_HUB_ID] [options]   stream a file, folder, URL, webcam or stdin
    streamvlm demo                                           generated clip through the default model
    streamvlm tiny-model DIR [--seed N]                      write a tiny random checkpoint

Bad input exits with status 2 and one line on stderr (a traceback only with --debug); what was
produced before an error or Ctrl-C is already in the --out / --stats files.
"""

import argparse
import importlib
import sys
from dataclasses import fields

from . import __version__
from .cache.policy import POLICIES
from .config import POSITIONS, StreamConfig
from .errors import StreamvlmError
from .options import add_options
from .plugins import hooks


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except StreamvlmError as exc:
        if getattr(args, "debug", False):
            raise
        print(f"streamvlm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("streamvlm: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="streamvlm", description="Real-time commentary on endless video streams.")
    parser.add_argument("--version", action="version", version=f"streamvlm {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=OneLineParser)

    run = sub.add_parser(
        "run",
        help="stream a video file, a folder of images or a live source",
        description=RUN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "source",
        help="video file (any format FFmpeg reads), folder of images, or live: a URL (rtsp, rtmp, "
        "http(s), udp, .m3u8), a webcam /dev/videoN, or - for raw frames on stdin",
    )
    add_stream_options(run)
    add_live_options(run)
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser(
        "demo",
        help="stream a generated clip through the default model",
        description="Stream a generated clip (moving shapes) through the model. A plugin may run "
        "its own demo for a model it knows: with the shipped world model (streamvlm_world), a "
        "match it never saw, its commentary beside the ground truth, and its scores.",
    )
    demo.add_argument("--seconds", type=positive_int, default=120, help="stream length (default 120)")
    demo.add_argument(
        "--seed", type=int, default=None, help="world seed of the match (default: the model's demo seed)"
    )
    demo.add_argument(
        "--size", default="112x112", help="frame size WxH of a generated clip (non-world models)"
    )
    demo.add_argument("--model", default=None, help="checkpoint dir or hub id (default: the shipped model)")
    demo.add_argument(
        "--out-dir", default="out", help="where demo.mp4, demo.jsonl, demo.vtt go (default out)"
    )
    demo.add_argument("--debug", action="store_true", help="show tracebacks")
    demo.set_defaults(func=cmd_demo)

    clip = sub.add_parser("make-clip", help="write a generated video (moving shapes) to a file")
    clip.add_argument("out", help="output video, e.g. clip.mp4")
    clip.add_argument("--seconds", type=positive_int, default=60, help="length (default 60)")
    clip.add_argument("--fps", type=positive_int, default=2, help="frames per second (default 2)")
    clip.add_argument("--size", default="320x240", help="frame size WxH (default 320x240)")
    clip.add_argument("--seed", type=int, default=0)
    clip.add_argument("--debug", action="store_true", help="show tracebacks")
    clip.set_defaults(func=cmd_make_clip)

    tiny = sub.add_parser("tiny-model", help="write a tiny random-weight checkpoint (tests, offline use)")
    tiny.add_argument("dir", help="output directory")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--arch", choices=("qwen2_5_vl", "qwen2_vl"), default="qwen2_5_vl")
    tiny.add_argument("--layers", type=positive_int, default=2, help="text layers (default 2)")
    tiny.add_argument(
        "--hub-layout",
        action="store_true",
        help="lay it out like the Qwen hub repos: bfloat16 shards + index, published key names and "
        "config, Qwen's generation_config.json, no streamvlm.json",
    )
    tiny.add_argument("--debug", action="store_true", help="show tracebacks")
    tiny.set_defaults(func=cmd_tiny_model)

    for module in SUBCOMMAND_MODULES:  # each adds its own subcommands; heavy imports stay inside them
        importlib.import_module(module).register(sub)
    for register in hooks("register"):  # installed plugins' commands (e.g. `world`)
        register(sub)
    return parser


#: Modules owning a group of subcommands: each defines `register(subparsers)`.
SUBCOMMAND_MODULES = (
    "streamvlm.data.cli",
    "streamvlm.train.cli",
    "streamvlm.bench.cli",
    "streamvlm.eval.cli",
    "streamvlm.server.cli",
)


RUN_HELP = """Stream SOURCE second by second and write one line of commentary per second.

Every second the engine evicts what the cache policy no longer keeps, prefills the second's
frames, generates at most --max-new-tokens tokens and emits {start, end, text} (empty = silence).
Policies: streaming (the StreamingVLM cache), full (keep everything), sliding (reset every
--reset-every s), recompute (re-encode the last --vision-window s every second).

Live sources (and files with --realtime) are paced by the wall clock: the engine gets each second
when it is live, never early. Drop policy "latest": at most --max-lag complete seconds wait for the
engine; when it falls behind, the oldest are dropped whole and counted. A lost connection is
retried with backoff (0.5 s doubling to 8 s, --reconnect times in a row); stream time goes on and
the seconds without frames are a gap. --stats lines then carry lag_s and latency_s (glass to text)
and always end with a summary line (p50/p99, the source's counts and last error). A URL that names
a recording (an HTTP file, an HLS playlist with #EXT-X-ENDLIST) is read like a file: at the
engine's pace, nothing dropped, to its end."""


def add_stream_options(p: argparse.ArgumentParser, outputs: bool = True) -> None:
    """Options of `StreamConfig`: left unset (None) they take the model's streaming defaults
    (`streamvlm.json` in the checkpoint), then `StreamConfig`'s. `outputs=False` leaves out
    --out / --stats (commands that name their own files)."""
    add = p.add_argument
    add("--model", default=None, help="checkpoint dir or hub id (default: the shipped default)")
    add("--start", type=float, default=0.0, help="start time in the source, seconds (default 0)")
    add("--seconds", type=positive_int, default=None, help="seconds to stream (default: to the end)")
    # every StreamConfig field but the benchmarks' own, with its comment as help (streamvlm.options)
    add_options(
        p,
        StreamConfig,
        exclude=("ignore_eos",),
        unset=True,
        types_=STREAM_TYPES,
        choices=STREAM_CHOICES,
        first="the model's",  # its streamvlm.json / generation_config.json
    )
    if outputs:
        p.add_argument("--out", default=None, help="commentary file: .jsonl, .vtt or .srt")
        p.add_argument("--stats", default=None, help="per-second statistics, JSONL")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default=None,
        help="model dtype (default float32 on cpu, bfloat16 on cuda)",
    )
    p.add_argument(
        "--min-pixels", type=positive_int, default=None, help="per-frame pixel floor (default: model's)"
    )
    p.add_argument(
        "--max-pixels", type=positive_int, default=None, help="per-frame pixel budget (default: model's)"
    )
    p.add_argument(
        "--allow-resolution-change",
        action="store_true",
        help="rescale frames when the source changes resolution instead of stopping",
    )
    p.add_argument("--quiet", action="store_true", help="print nothing while streaming")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


#: Flag types and choices of `StreamConfig` fields beyond their annotation.
STREAM_TYPES = {
    **dict.fromkeys(("fps", "vision_window", "text_rounds", "reset_every", "max_new_tokens"), positive_int),
    **dict.fromkeys(("text_sink", "text_window", "top_k"), non_negative_int),
}
STREAM_CHOICES = {"policy": POLICIES, "positions": POSITIONS}


def add_live_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("live sources")
    g.add_argument(
        "--realtime", action="store_true", help="play a file or folder at real-time speed, as if live"
    )
    g.add_argument(
        "--max-lag",
        type=positive_int,
        default=1,
        help="complete seconds that may wait for the engine; older ones are dropped (default 1)",
    )
    g.add_argument(
        "--reconnect",
        type=reconnect_count,
        default=10,
        help="reconnect attempts in a row after a lost connection, or 'forever' (default 10)",
    )
    g.add_argument(
        "--rtsp-transport",
        choices=("tcp", "udp", "auto"),
        default="tcp",
        help="rtsp:// over tcp (default: no packet loss, crosses NAT), udp, or auto (FFmpeg: udp, then tcp)",
    )
    g.add_argument("--stdin-size", default=None, help="SOURCE -: size WxH of the raw frames on stdin")
    g.add_argument(
        "--stdin-format", default="rgb24", help="SOURCE -: FFmpeg pixel format of the frames (default rgb24)"
    )
    g.add_argument(
        "--stdin-fps", type=float, default=None, help="SOURCE -: frames per second written (default --fps)"
    )


def reconnect_count(text: str) -> int | None:
    return None if text == "forever" else non_negative_int(text)


def live_kwargs(args) -> dict:
    size = None
    if args.stdin_size is not None:
        try:
            size = tuple(int(v) for v in args.stdin_size.lower().split("x"))
        except ValueError:
            size = ()
        if len(size) != 2 or min(size) < 1:
            raise StreamvlmError(f"--stdin-size {args.stdin_size}: expected WxH, e.g. 320x240")
    if args.stdin_fps is not None and args.stdin_fps <= 0:
        raise StreamvlmError(f"--stdin-fps must be > 0, got {args.stdin_fps}")
    return {
        "realtime": args.realtime,
        "max_lag": args.max_lag,
        "reconnect": args.reconnect,
        "stdin_size": size,
        "stdin_format": args.stdin_format,
        "stdin_fps": args.stdin_fps,
        "rtsp_transport": args.rtsp_transport,
    }


def config_from_args(args, model_defaults: dict | None = None) -> StreamConfig:
    """Explicit options, else the model's streaming defaults (`streamvlm.json`, then
    `generation_config.json`: `load_model` merges them), else `StreamConfig`'s."""
    names = {f.name for f in fields(StreamConfig)}
    values = {k: v for k, v in (model_defaults or {}).items() if k in names}
    values.update({k: v for k, v in vars(args).items() if k in names and v is not None})
    sampling = [k for k in ("temperature", "top_k", "top_p") if getattr(args, k, None) is not None]
    if sampling and args.greedy:
        options = ", ".join("--" + k.replace("_", "-") for k in sampling)
        raise StreamvlmError(f"--greedy cannot be combined with {options}")
    if sampling:
        values["greedy"] = False
    if args.reset_every is not None and values.get("policy", "streaming") != "sliding":
        raise StreamvlmError("--reset-every applies only to --policy sliding")
    return StreamConfig(**values)


def cmd_run(args) -> int:
    from .runner import load_for_run, stream_to_files
    from .sources import open_source

    config_from_args(args)  # bad option combinations fail before anything is loaded
    fps = args.fps or StreamConfig().fps
    live = live_kwargs(args)
    source = open_source(
        args.source,
        fps=fps,
        start=args.start,
        seconds=args.seconds,
        allow_resolution_change=args.allow_resolution_change,
        **live,
    )
    loaded = load_for_run(
        args.model, args.device, args.dtype, args.min_pixels, args.max_pixels, quiet=args.quiet
    )
    config = config_from_args(args, loaded.defaults.get("stream"))
    if config.fps != fps:
        source = open_source(
            args.source,
            fps=config.fps,
            start=args.start,
            seconds=args.seconds,
            allow_resolution_change=args.allow_resolution_change,
            **live,
        )
    stream_to_files(loaded, config, source, out=args.out, stats=args.stats, quiet=args.quiet)
    return 0


def cmd_demo(args) -> int:
    from pathlib import Path

    from .runner import load_for_run, stream_to_files
    from .sources import ArraySource, synthetic_frames

    loaded = load_for_run(args.model, "cpu", None, None, None, quiet=False)
    out = Path(args.out_dir)
    for demo in hooks("demo"):  # a plugin's own demo for a model it knows (the world's shipped model)
        if demo(loaded, args) is not None:
            break
    else:
        config = StreamConfig.from_dict(loaded.defaults.get("stream", {}))
        width, height = parse_size(args.size)
        source = ArraySource(synthetic_frames(args.seconds, config.fps, (height, width)), config.fps)
        print(
            f"streaming a generated {args.seconds} s clip ({width}x{height}, {config.fps} fps)",
            file=sys.stderr,
        )
        stream_to_files(
            loaded,
            config,
            source,
            out=str(out / "demo.jsonl"),
            stats=str(out / "demo-stats.jsonl"),
            extra_out=[str(out / "demo.vtt")],
        )
    print(f"written: {out}/demo.jsonl, {out}/demo.vtt, {out}/demo-stats.jsonl", file=sys.stderr)
    return 0


def cmd_make_clip(args) -> int:
    from .sources import synthetic_frames, write_video

    width, height = parse_size(args.size)
    print(
        write_video(args.out, synthetic_frames(args.seconds, args.fps, (height, width), args.seed), args.fps)
    )
    return 0


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise StreamvlmError(f"--size {text}: expected WxH, e.g. 320x240") from None
    if width < 2 or height < 2 or width % 2 or height % 2:
        raise StreamvlmError(f"--size {text}: width and height must be even and >= 2")
    return width, height


def cmd_tiny_model(args) -> int:
    from .models.tiny import TinySpec, write_hub_checkpoint, write_tiny_checkpoint

    write = write_hub_checkpoint if args.hub_layout else write_tiny_checkpoint
    out = write(args.dir, seed=args.seed, spec=TinySpec(arch=args.arch, layers=args.layers))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
