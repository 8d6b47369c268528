"""`streamvlm make-chunks`: long annotated videos -> overlapped training windows;
`streamvlm data from-subtitles` / `transcribe`: your own videos (subtitles, speech) -> those annotations."""

import sys

DATA_HELP = """Turn your own long videos into training data in the Inf-Stream-Train format:

  streamvlm data from-subtitles videos/ --out data/            # videos + their .vtt / .srt
  streamvlm data transcribe videos/ --out data/                # or their speech, by Whisper
  streamvlm make-chunks data/annotations.jsonl --out data/chunks.jsonl --model CKPT
  streamvlm train --data data/chunks.jsonl --model CKPT --out-dir runs/mine"""


def register(subparsers) -> None:
    from ..cache.policy import Windows
    from ..options import add_options

    register_data(subparsers)
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
    # the previous text is cut as the text memory is: its head and tail (cache.policy.Windows)
    add_options(p, Windows, only=("text_sink", "text_window"))
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


def register_data(subparsers) -> None:
    import argparse

    data = subparsers.add_parser(
        "data",
        help="make training data from your own videos (subtitles or speech)",
        description=DATA_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = data.add_subparsers(dest="data_command", metavar="{from-subtitles,transcribe}", required=True)
    p = sub.add_parser(
        "from-subtitles",
        help="videos + WebVTT / SRT subtitles (sidecar or inside the file) -> annotations.jsonl",
        description="Each video's subtitles (a sidecar <stem>.vtt / .srt, <stem>.<lang>.vtt, beside the "
        "video or in --subs; else a subtitle stream inside the file) become word-timed commentary in "
        "<out>/annotations.jsonl + annotations_seeks.jsonl (Inf-Stream-Train), ready for make-chunks. "
        "Rolling / repeated caption lines are merged, markup and speaker tags stripped, sound cues "
        "dropped (--keep-sounds keeps them). Unusable videos are skipped and counted by reason "
        "(--strict stops at the first); a summary goes to stderr and <out>/summary.json.",
    )
    p.add_argument("videos", nargs="+", help="video files, or folders searched recursively")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--subs", default=None, help="folder of the subtitle files (default: beside each video)")
    p.add_argument("--keep-sounds", action="store_true", help="keep sound cues such as [Music]")
    p.add_argument("--encoding", default="utf-8", help="text encoding of the subtitle files (default utf-8)")
    p.add_argument("--strict", action="store_true", help="stop at the first unusable video")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=cmd_from_subtitles)
    register_transcribe(sub)


def find_videos(given: list[str]) -> list:
    """Video files, folders searched recursively; a missing file is kept (skipped and counted later)."""
    from pathlib import Path

    from ..errors import StreamvlmError
    from ..sources.base import VIDEO_EXTENSIONS

    videos = []
    for path in map(Path, given):
        if path.is_dir():
            videos += sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS
            )
        else:
            videos.append(path)
    if not videos:
        raise StreamvlmError(f"no videos in {', '.join(given)}")
    return videos


def print_summary(summary, out) -> None:
    import json

    (out / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2, ensure_ascii=False) + "\n")
    print(
        f"{summary.videos} videos, {summary.words} words, {summary.seconds / 3600:.2f} h "
        f"-> {out / 'annotations.jsonl'}",
        file=sys.stderr,
    )
    for reason, count in summary.skipped.most_common():
        print(f"skipped {count}: {reason}", file=sys.stderr)
    for line in summary.problems[:10]:
        print(f"  {line}", file=sys.stderr)


def cmd_from_subtitles(args) -> int:
    import codecs
    from pathlib import Path

    from ..errors import StreamvlmError
    from .subtitles import from_subtitles

    try:
        codecs.lookup(args.encoding)
    except LookupError:
        raise StreamvlmError(f"--encoding {args.encoding}: unknown text encoding") from None
    videos = find_videos(args.videos)
    subs = Path(args.subs) if args.subs else None
    if subs is not None and not subs.is_dir():
        raise StreamvlmError(f"--subs {args.subs} is not a folder")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = from_subtitles(
        videos, out, subs, args.keep_sounds, args.strict, args.encoding, sys.stderr.isatty()
    )
    print_summary(summary, out)
    cleaned = ", ".join(f"{count} {what}" for what, count in summary.cleaned.items() if count)
    if cleaned:
        print(f"cleaned: {cleaned}", file=sys.stderr)
    return 0


TRANSCRIBE_HELP = """Each video's speech (its first audio stream, read with PyAV and resampled to 16 kHz mono)
is transcribed by a Whisper checkpoint (transformers' speech-recognition pipeline: 30 s windows
overlapping by 5 s, merged) with word timestamps, which Whisper computes from the cross-attention
of its alignment heads aligned to the audio by dynamic time warping. The words become
<out>/annotations.jsonl + annotations_seeks.jsonl (Inf-Stream-Train, as from-subtitles writes
them), ready for make-chunks.

The model is openai/whisper-large-v3-turbo by default (MIT licence: free to use, commercially
too; ~1.6 GB, downloaded from the Hugging Face Hub on first use; on the GPU when there is one);
--asr openai/whisper-large-v3 is slower and a little more accurate; any Whisper folder or hub id
whose generation_config.json has alignment_heads works (the openai/whisper-* checkpoints do).

Resumable: each finished video's words are kept in <out>/.transcripts/, and a re-run (same --asr
and --language, video unchanged) takes them from there; a killed run loses at most the video in
progress. Videos without an audio stream, empty, truncated or unreadable ones are skipped and
counted by reason (--strict stops at the first); a summary goes to stderr and <out>/summary.json."""


def register_transcribe(sub) -> None:
    import argparse

    from .transcribe import DEFAULT_ASR

    p = sub.add_parser(
        "transcribe",
        help="videos + their speech, transcribed by Whisper with word times -> annotations.jsonl",
        description=TRANSCRIBE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("videos", nargs="+", help="video files, or folders searched recursively")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--asr", default=DEFAULT_ASR, help=f"Whisper checkpoint, folder or hub id (default {DEFAULT_ASR})"
    )
    p.add_argument("--language", default=None, help="spoken language, e.g. en (default: detected by Whisper)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda when there is one)")
    p.add_argument("--batch-size", type=int, default=8, help="30 s windows transcribed at once (default 8)")
    p.add_argument("--strict", action="store_true", help="stop at the first unusable video")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=cmd_transcribe)


def cmd_transcribe(args) -> int:
    from pathlib import Path

    from ..errors import StreamvlmError
    from .transcribe import transcribe

    if args.batch_size < 1:
        raise StreamvlmError(f"--batch-size {args.batch_size}: must be at least 1")
    videos = find_videos(args.videos)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = transcribe(
        videos,
        out,
        args.asr,
        args.language,
        args.strict,
        args.device,
        args.batch_size,
        progress=sys.stderr.isatty(),
    )
    print_summary(summary, out)
    print(
        f"transcribed {summary.transcribed}, resumed {summary.resumed} (from {out / '.transcripts'})",
        file=sys.stderr,
    )
    return 0
