"""`streamvlm make-chunks`: long annotated videos -> overlapped training windows."""

import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "make-chunks",
        help="cut long annotated videos into overlapped training windows",
        description="Read Inf-Stream-Train / Live-WhisperX-style JSONL (with or without a seeks file) "
        "and write "
        "one window per line (same format, plus its seeks file), each with the commentary before it as "
        "its previous text, cut to head + tail tokens.",
    )
    p.add_argument("inputs", nargs="+", help="annotation JSONL files")
    p.add_argument("--out", required=True, help="output JSONL (its _seeks.jsonl is written beside it)")
    p.add_argument(
        "--model", default=None, help="checkpoint whose tokenizer counts tokens (default: default model)"
    )
    p.add_argument("--window", type=float, default=24.0, help="window length, seconds (default 24)")
    p.add_argument("--stride", type=float, default=12.0, help="stride between windows, seconds (default 12)")
    p.add_argument("--text-sink", type=int, default=512, help="previous text head, tokens (default 512)")
    p.add_argument("--text-window", type=int, default=512, help="previous text tail, tokens (default 512)")
    p.add_argument(
        "--skip-bad", action="store_true", help="skip (and count) malformed lines instead of stopping"
    )
    p.add_argument(
        "--text-only",
        action="store_true",
        help="commentary-only records (their videos need not exist; windows end by video_end): "
        "train them with `text_data`",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=cmd_make_chunks)


def cmd_make_chunks(args) -> int:
    from pathlib import Path

    from transformers import AutoTokenizer

    from ..models.default import default_model_dir
    from ..models.load import resolve_model_dir
    from ..sources import VideoFileSource
    from .chunks import ChunkStats, make_chunks, relocate
    from .formats import DataError, read_annotations, write_annotations

    tokenizer = AutoTokenizer.from_pretrained(
        resolve_model_dir(args.model) if args.model else default_model_dir()
    )
    out = Path(args.out)
    stats, skipped, durations = ChunkStats(), [], {}

    def windows():
        for path in args.inputs:
            for record in read_annotations(path, skipped=skipped if args.skip_bad else None):
                if args.text_only:  # the video is never opened: windows end by the record's own end
                    duration = record.video_end
                else:
                    try:
                        video = record.video_path()
                    except DataError as exc:
                        if not args.skip_bad:
                            raise
                        skipped.append(str(exc))
                        continue
                    if video not in durations:
                        durations[video] = VideoFileSource(video).duration
                    duration = durations[video]
                for chunk in make_chunks(
                    record,
                    tokenizer,
                    args.window,
                    args.stride,
                    args.text_sink,
                    args.text_window,
                    duration,
                    stats,
                ):
                    yield relocate(chunk, out.parent, text_only=args.text_only)

    n = write_annotations(windows(), out)
    print(f"{n} windows -> {out}", file=sys.stderr)
    for what, count in (
        ("records without words", stats.skipped_empty),
        ("windows past the end of their video", stats.skipped_past_end),
        ("malformed lines or missing videos", len(skipped)),
    ):
        if count:
            print(f"skipped {count} {what}", file=sys.stderr)
    for line in skipped[:5]:
        print(f"  {line}", file=sys.stderr)
    return 0
