r"""`streamvlm eval mcq`: multiple-choice video QA by option-letter logits, offline or streaming.

    streamvlm eval mcq --annotations ovo_bench_new.json --video-root videos/ --model DIR \
        --mode streaming --out ovo-streaming.json

Every question (see `vqa.py` for the formats) is asked as a text-only user turn after the video
has been watched up to its time; the answer is the choice whose first token has the largest logit
right after `<|im_start|>assistant\n` (`StreamingSession.ask_choice`).

- offline: a fresh session keeping everything (policy `full`) watches the clip from its start up
  to the question time — at most `--max-seconds` seconds, evenly spaced, the last one always
  included — with silent replies, then the question is asked.
- streaming: each video is streamed once through the engine (its policy, its commentary; `--silent`
  for silent replies) and every question is asked when the stream reaches its time; asking leaves
  the stream undisturbed.

Answers go to `<out stem>.items.jsonl` as they come (an interrupted run resumes: answered questions
are not asked again); the report (`--out`, JSON) and a summary (`.md`) are written at the end.
"""

import argparse
import sys

MCQ_HELP = __doc__.split("\n\n", 1)[1]


def register(sub) -> None:
    from ..cache.policy import POLICIES
    from ..cli import non_negative_int, positive_int

    p = sub.add_parser(
        "mcq",
        help="multiple-choice video QA (OVO-Bench, LongVideoBench), offline or streaming",
        description=MCQ_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--annotations", required=True, help="OVO-Bench or LongVideoBench annotation JSON")
    p.add_argument("--format", choices=("auto", "ovo", "lvb"), default="auto", help="default: auto")
    p.add_argument("--video-root", default=".", help="folder the annotation's video paths are under")
    p.add_argument("--model", default=None, help="checkpoint dir or hub id (default: the shipped model)")
    p.add_argument("--mode", choices=("offline", "streaming"), default="offline", help="default offline")
    p.add_argument("--out", default=None, help="report JSON (default mcq-<annotations>-<mode>.json)")
    p.add_argument("--fps", type=positive_int, default=None, help="frames per second (default: model's, 2)")
    p.add_argument("--max-items", type=positive_int, default=None, help="only the first N annotation items")
    p.add_argument("--tasks", default=None, help="comma-separated tasks / question categories to keep")
    p.add_argument(
        "--max-seconds",
        type=non_negative_int,
        default=64,
        help="offline: seconds of frames watched at most, evenly spaced (default 64; 0 = all)",
    )
    p.add_argument("--policy", choices=POLICIES, default=None, help="streaming: cache policy (model's)")
    p.add_argument("--silent", action="store_true", help="streaming: watch with silent replies")
    p.add_argument("--max-new-tokens", type=positive_int, default=None, help="streaming: per second")
    p.add_argument("--strict", action="store_true", help="stop at the first malformed item")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None)
    p.add_argument("--min-pixels", type=positive_int, default=None, help="per-frame pixel floor")
    p.add_argument("--max-pixels", type=positive_int, default=None, help="per-frame pixel budget")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary on stdout")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=cmd_mcq)


def cmd_mcq(args) -> int:
    from pathlib import Path

    from ..errors import StreamvlmError
    from ..runner import load_for_run
    from .mcq_run import MCQRun
    from .vqa import load_annotations

    fmt, questions, skipped = load_annotations(args.annotations, args.format)
    if args.tasks:
        keep = {t.strip() for t in args.tasks.split(",") if t.strip()}
        questions = [q for q in questions if q.task in keep]
        skipped = [s for s in skipped if s.task in keep]
    if args.max_items:
        items = list(dict.fromkeys(q.item for q in questions))[: args.max_items]
        questions = [q for q in questions if q.item in set(items)]
    if args.strict and skipped:
        raise StreamvlmError(f"{args.annotations}: item {skipped[0].item}: {skipped[0].reason}")
    out = Path(args.out or f"mcq-{Path(args.annotations).stem}-{args.mode}.json")
    run = MCQRun(fmt, questions, skipped, Path(args.video_root), out, args)
    run.check_videos()
    loaded = load_for_run(args.model, args.device, args.dtype, args.min_pixels, args.max_pixels, args.quiet)
    report = run.evaluate(loaded)
    if not args.quiet:
        print(run.paths["markdown"].read_text(encoding="utf-8"))
    print(
        f"report: {run.paths['json']}  summary: {run.paths['markdown']}  answers: {run.paths['items']}",
        file=sys.stderr,
    )
    return 0 if report["scores"]["n"] else 2
