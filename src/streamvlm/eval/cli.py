"""`streamvlm eval ...` subcommands.

    streamvlm eval judge  --reference META.jsonl --a GEN_A --b GEN_B --base-url URL --judge-model NAME
                          --out report.json [--concurrency N] [--cache DIR] [--window S] ...
    streamvlm eval events --reference EVENTS.jsonl --a PRED --b BASELINE --base-url URL
                          --judge-model NAME --out report.json ...

Only argparse here: readers, the openai client and matplotlib are imported inside the commands.
"""

import argparse
import importlib
import shlex
import sys

from ..plugins import hooks

JUDGE_HELP = """Pairwise LLM judging on Inf-Streams-Eval: A's win rate against B.

Scoring windows are cut from the reference transcript (--window seconds of consecutive reference
segments; 0 = one window per reference row); a candidate's text for a window is its items whose
end falls inside it. Every window is judged in both orders (A first, then B first) at temperature
0; ties count 0.5; unreadable answers are asked again, then counted. The CI resamples whole videos.
Every judgement is cached (--cache), so an interrupted run resumes and a re-run sends nothing.
The API key is read from OPENAI_API_KEY (any value works for a server on this machine).

Generation inputs: a {video, items:[{start,end,text}]} JSONL, a directory of `streamvlm run`
per-second files named <video stem>.jsonl, or one such file when the reference has one video."""

EVENTS_HELP = """Per-event pairwise judging (LiveSports-3K-CC style): A's win rate against B (the baseline).

Events: LiveSports-3K-CC rows (video_id, event_id, begin, end, event_asr_text / event_asr) or
{"video", "begin", "end", "text"} rows. Candidates: per-event predictions (video_id, event_id,
begin, end, pred) or any generation input of `eval judge` (text = items ending inside the event).
Both orders per event, ties 0.5, CI by bootstrap over videos, same report as `eval judge`."""


def register(subparsers) -> None:
    """Add `eval judge` and `eval events` to the top-level parser."""
    evaluate = subparsers.add_parser("eval", help="evaluation: pairwise LLM judging")
    evaluate.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = evaluate.add_subparsers(dest="eval_command", parser_class=type(evaluate))
    evaluate.set_defaults(func=lambda args: _usage(evaluate))

    judge = sub.add_parser(
        "judge",
        help="A vs B on Inf-Streams-Eval scoring windows",
        description=JUDGE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    judge.add_argument("--reference", required=True, help="Inf-Streams-Eval metadata JSONL")
    _candidate_options(judge, "A (the win rate is A's)", "B")
    judge.add_argument(
        "--window",
        type=_non_negative_float,
        default=60.0,
        help="scoring window length in seconds (default 60; 0 = one window per reference row)",
    )
    _judge_options(judge)
    judge.set_defaults(func=cmd_judge)

    events = sub.add_parser(
        "events",
        help="A vs a baseline per annotated event (LiveSports-3K-CC style)",
        description=EVENTS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    events.add_argument("--reference", required=True, help="event annotations JSONL (or JSON array)")
    _candidate_options(events, "A (the win rate is A's)", "B, the baseline")
    _judge_options(events)
    events.set_defaults(func=cmd_events)

    for module in EVAL_MODULES:  # further `eval` subcommands, each module defines `register(sub)`
        importlib.import_module(module).register(sub)
    for register in hooks("register_eval"):  # installed plugins' `eval` commands (e.g. `eval world`)
        register(sub)


#: Modules adding `eval` subcommands (multiple-choice VQA, sharded generation).
EVAL_MODULES: tuple[str, ...] = (
    "streamvlm.eval.mcq",
    "streamvlm.eval.generate",
)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _candidate_options(p: argparse.ArgumentParser, a_help: str, b_help: str) -> None:
    p.add_argument("--a", required=True, metavar="GEN_A", help=f"generations of candidate {a_help}")
    p.add_argument("--b", required=True, metavar="GEN_B", help=f"generations of candidate {b_help}")


def _judge_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--base-url", required=True, help="OpenAI-compatible endpoint, e.g. https://api.openai.com/v1"
    )
    p.add_argument("--judge-model", required=True, help="judge model name at that endpoint")
    p.add_argument(
        "--out", required=True, help="report JSON; .md, .png and .judgements.jsonl are written beside it"
    )
    p.add_argument("--cache", default=None, help="judgement cache directory (default: <out stem>.cache)")
    p.add_argument("--concurrency", type=_positive_int, default=8, help="requests in flight (default 8)")
    p.add_argument("--max-videos", type=_positive_int, default=None, help="judge only the first N videos")
    p.add_argument(
        "--retries", type=_non_negative_int, default=5, help="retries on 429/5xx/network (default 5)"
    )
    p.add_argument(
        "--backoff", type=_non_negative_float, default=1.0, help="first retry wait, s; doubles (1)"
    )
    p.add_argument(
        "--timeout", type=_positive_float, default=120.0, help="per request, seconds (default 120)"
    )
    p.add_argument(
        "--parse-retries", type=_non_negative_int, default=2, help="re-asks after an unreadable answer (2)"
    )
    p.add_argument("--retry-unparseable", action="store_true", help="re-ask cached unreadable answers")
    p.add_argument("--max-chars", type=_positive_int, default=6000, help="characters per text shown (6000)")
    p.add_argument("--judge-seed", type=int, default=None, help="seed sent to the endpoint (default: none)")
    p.add_argument(
        "--ignore-coverage",
        action="store_true",
        help="judge spans a candidate's output does not reach (its text there is empty)",
    )
    p.add_argument("--resamples", type=_positive_int, default=2000, help="bootstrap resamples (2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary on stdout")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def cmd_judge(args) -> int:
    from .transcripts import read_candidate, read_reference
    from .units import select_windows

    _check_endpoint(args)
    rows = read_reference(args.reference)
    videos = [r.video for r in rows]
    a, b = read_candidate(args.a, videos), read_candidate(args.b, videos)
    selection = select_windows(rows, a, b, args.window, args.max_videos, not args.ignore_coverage)
    return _judge_and_report(args, selection, mode="window", command="judge")


def cmd_events(args) -> int:
    from .transcripts import read_candidate, read_events
    from .units import select_events

    _check_endpoint(args)
    events = read_events(args.reference)
    videos = [e.video for e in events]
    a = read_candidate(args.a, videos, allow_events=True)
    b = read_candidate(args.b, videos, allow_events=True)
    selection = select_events(events, a, b, args.max_videos, not args.ignore_coverage)
    return _judge_and_report(args, selection, mode="event", command="events")


def _check_endpoint(args) -> None:
    from .judge import resolve_api_key

    args.api_key = resolve_api_key(args.base_url)  # fail before reading anything big


def _judge_and_report(args, selection, mode: str, command: str) -> int:
    from pathlib import Path

    from ..errors import StreamvlmError
    from .judge import Judge, JudgeConfig
    from .report import companion_paths, write_report
    from .stats import score, summarize

    unit = "window" if mode == "window" else "event"
    excluded = ex = selection.excluded()
    for name in ("a", "b"):
        missing = excluded[f"videos_missing_in_{name}"]
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            count = f"{len(missing)} video" + ("s" if len(missing) > 1 else "")
            print(
                f"streamvlm: {count} missing in {name.upper()} (excluded): {shown}",
                file=sys.stderr,
            )
    if not selection.units:
        raise StreamvlmError(
            f"nothing to judge: {selection.total} {unit}s, {ex['units_in_missing_videos']} in videos a "
            f"candidate lacks, {ex['not_covered_by_a']} / {ex['not_covered_by_b']} not covered by A / B, "
            f"{ex['events_missing_in_a']} / {ex['events_missing_in_b']} without a prediction in A / B"
        )
    cache = Path(args.cache) if args.cache else companion_paths(args.out)["json"].with_suffix(".cache")
    config = JudgeConfig(
        base_url=args.base_url,
        model=args.judge_model,
        api_key=args.api_key,
        cache_dir=cache,
        concurrency=args.concurrency,
        retries=args.retries,
        backoff_s=args.backoff,
        timeout_s=args.timeout,
        parse_retries=args.parse_retries,
        max_chars=args.max_chars,
        seed=args.judge_seed,
        retry_unparseable=args.retry_unparseable,
        progress=not args.quiet,
    )
    judge = Judge(config, mode)
    results = judge.judge_all(selection.units)
    summary = summarize(score(results), selection.videos, args.resamples, args.seed, selection.missing)
    report = {
        "protocol": "Inf-Streams-Eval windows" if mode == "window" else "LiveSports-3K-CC events",
        "unit": unit,
        **summary,
        "n_total": selection.total,
        "excluded": excluded,
        "judge": {
            "model": args.judge_model,
            "base_url": args.base_url,
            "temperature": 0,
            "seed": args.judge_seed,
            "requests_sent": judge.counts.requests,
            "requests_retried": judge.counts.retried,
            "cached": judge.counts.cached,
            "cache": str(cache),
        },
        "inputs": {
            "reference": args.reference,
            "a": args.a,
            "b": args.b,
            "window_s": getattr(args, "window", None),
            "max_videos": args.max_videos,
        },
        "command": command_line(args, command),
    }
    paths = write_report(report, results, args.out)
    if not args.quiet:
        print(paths["markdown"].read_text(encoding="utf-8"))
    print(f"report: {paths['json']}  summary: {paths['markdown']}  plot: {paths['plot']}", file=sys.stderr)
    return 0


def command_line(args, command: str) -> str:
    """The command that reproduces this report (every option spelled out, no secrets)."""
    parts = ["streamvlm", "eval", command, "--reference", args.reference, "--a", args.a, "--b", args.b]
    if command == "judge":
        parts += ["--window", f"{args.window:g}"]
    parts += ["--base-url", args.base_url, "--judge-model", args.judge_model, "--out", args.out]
    for flag, value in (
        ("--cache", args.cache),
        ("--concurrency", args.concurrency),
        ("--max-videos", args.max_videos),
        ("--max-chars", args.max_chars),
        ("--judge-seed", args.judge_seed),
        ("--resamples", args.resamples),
        ("--seed", args.seed),
    ):
        if value is not None:
            parts += [flag, str(value)]
    if args.ignore_coverage:
        parts.append("--ignore-coverage")
    return shlex.join(parts)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value
