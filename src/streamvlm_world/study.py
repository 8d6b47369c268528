"""`streamvlm eval world`: does streaming quality hold on long streams? (the long-stream policy study)

Held-out world matches of each length are streamed through every cache policy and scored against
the exact ground truth, per whole stream and per bucket of stream time: event F1 (serve, return,
point), score accuracy, exact seconds, silence kept, cache tokens, text-memory tokens, largest
position, and step time per stream second. Every (length, policy) result is cached beside the
report, so a killed study continues where it stopped. `--attention` adds where the attention mass
goes (`eval.attention`), streamed cache vs full attention over the same tokens.

Full attention grows without bound: it streams at most `--max-seconds-full` seconds of any match;
its buckets beyond are reported as skipped.
"""

import argparse
import json
import statistics
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

#: The studied variants: a policy name and what it changes in the model's streaming defaults.
VARIANTS: dict[str, dict] = {
    "streaming": {},
    "full": {"policy": "full"},
    "sliding": {"policy": "sliding"},
    "recompute": {"policy": "recompute"},
    "no-memory": {"text_sink": 0, "text_window": 0},  # streaming without text memory
    "append": {"positions": "append"},  # streaming with append positions (no re-indexing)
}
SEED_OFFSET = 1000  # default first seed: the model's evaluation seed + this
TRAINING_SEEDS = range(1_000_000, 9_000_001)  # where world datasets draw their match seeds (video_seed)
METRICS = ("point_f1", "serve_f1", "return_f1", "score_accuracy", "exact", "silence_accuracy")

HELP = """Long-stream policy study on the procedural world (exact ground truth).

For each stream length (--minutes) a held-out match (seeds --seed, --seed + 1, ...) is streamed
through each policy: streaming (the model's defaults), full, sliding, recompute, no-memory
(streaming with text_sink = text_window = 0) and append (streaming with append positions).
Per policy and per --bucket-minutes bucket: point / serve / return F1, score accuracy, exact
seconds, silence kept, cache and memory tokens, largest position, ms per stream second.
Writes the JSON report (--out), a markdown table (.md) and a plot (.png) beside it; every
(length, policy) result is cached in <out stem>.cells/, so re-running continues a killed study.
Full attention streams at most --max-seconds-full seconds of a match (buckets beyond: skipped)."""


def register(sub) -> None:
    from streamvlm.cache.policy import Windows
    from streamvlm.options import add_options

    p = sub.add_parser(
        "world",
        help="long-stream policy study on world matches (quality per bucket of stream time)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default=None, help="checkpoint dir (default: the shipped world model)")
    p.add_argument("--minutes", default="5,20,60", help="stream lengths, minutes (default 5,20,60)")
    p.add_argument("--policies", default=",".join(VARIANTS), help=f"comma-separated of {', '.join(VARIANTS)}")
    p.add_argument(
        "--seed", type=int, default=None, help="world seed of the first length (default: eval seed + 1000)"
    )
    p.add_argument(
        "--bucket-minutes", type=float, default=5.0, help="bucket of stream time, minutes (default 5)"
    )
    p.add_argument(
        "--out", default="out/world-study.json", help="report JSON; .md, .png and .cells/ beside it"
    )
    p.add_argument(
        "--max-seconds-full", type=int, default=1200, help="full attention streams at most this long (1200)"
    )
    p.add_argument("--attention", action="store_true", help="add attention diagnostics (streamed vs full)")
    p.add_argument(
        "--probe-seconds", default="30,120,300", help="attention probe times, seconds (default 30,120,300)"
    )
    add_options(p, Windows, only=("vision_window", "text_rounds"), unset=True, first="the model's")
    p.add_argument("--max-new-tokens", type=int, default=None, help="override tokens per second (20)")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: tiny models gain nothing from more)",
    )
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    p.add_argument("--fresh", action="store_true", help="ignore cached results and stream everything again")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no table on stdout")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=cmd_world)


def cmd_world(args) -> int:
    import torch

    from streamvlm.errors import StreamvlmError
    from streamvlm.models import load_model
    from streamvlm.models.default import default_model_dir

    minutes = _numbers(args.minutes, "--minutes", float)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    unknown = [p for p in policies if p not in VARIANTS]
    if unknown or not policies:
        raise StreamvlmError(
            f"--policies: unknown {', '.join(unknown) or '(none)'}; choose from {', '.join(VARIANTS)}"
        )
    if args.bucket_minutes <= 0 or args.max_seconds_full < 1:
        raise StreamvlmError("--bucket-minutes must be > 0 and --max-seconds-full >= 1")
    probes = _numbers(args.probe_seconds, "--probe-seconds", int) if args.attention else []
    if args.threads < 1:
        raise StreamvlmError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    loaded = load_model(str(args.model or default_model_dir()), device=args.device, dtype=args.dtype)
    overrides = {
        k: v
        for k, v in (
            ("vision_window", args.vision_window),
            ("text_rounds", args.text_rounds),
            ("max_new_tokens", args.max_new_tokens),
        )
        if v is not None
    }
    report = run_study(
        loaded,
        lengths_s=[max(1, round(m * 60)) for m in minutes],
        policies=policies,
        out=args.out,
        seed=args.seed,
        bucket_s=max(1, round(args.bucket_minutes * 60)),
        max_seconds_full=args.max_seconds_full,
        probes=probes,
        overrides=overrides,
        fresh=args.fresh,
        progress=not args.quiet,
        command=_command(args),
    )
    if not args.quiet:
        print(Path(report["files"]["markdown"]).read_text(encoding="utf-8"))
    files = report["files"]
    print(f"report: {files['json']}  table: {files['markdown']}  plot: {files['plot']}", file=sys.stderr)
    return 0


def _command(args) -> str:
    """The command that reproduces the report, every option spelled out."""
    import shlex

    parts = ["streamvlm", "eval", "world", "--minutes", args.minutes, "--policies", args.policies]
    for flag, value in (
        ("--model", args.model),
        ("--seed", args.seed),
        ("--bucket-minutes", f"{args.bucket_minutes:g}"),
        ("--max-seconds-full", args.max_seconds_full),
        ("--vision-window", args.vision_window),
        ("--text-rounds", args.text_rounds),
        ("--max-new-tokens", args.max_new_tokens),
        ("--out", args.out),
    ):
        if value is not None:
            parts += [flag, str(value)]
    if args.attention:
        parts += ["--attention", "--probe-seconds", args.probe_seconds]
    return shlex.join(parts)


def _numbers(text: str, flag: str, kind) -> list:
    from streamvlm.errors import StreamvlmError

    try:
        values = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise StreamvlmError(f"{flag}: expected comma-separated numbers, got {text!r}") from None
    if not values or min(values) <= 0:
        raise StreamvlmError(f"{flag}: expected positive numbers, got {text!r}")
    return values


# -- the study ---------------------------------------------------------------------------------
def run_study(
    loaded,
    lengths_s: list[int],
    policies: list[str],
    out: str | Path,
    seed: int | None = None,
    bucket_s: int = 300,
    max_seconds_full: int = 1200,
    probes: list[int] = (),
    overrides: dict | None = None,
    fresh: bool = False,
    progress: bool = True,
    command: str | None = None,
) -> dict:
    """Stream every (length, policy) cell (cached ones are read back) and write the report files."""
    import tempfile

    import torch
    from tqdm import tqdm

    from streamvlm.config import StreamConfig
    from streamvlm.errors import StreamvlmError
    from streamvlm.eval.report import companion_paths
    from streamvlm.eval.transcripts import write_atomic

    from .config import WorldConfig
    from .study_report import markdown, plot

    world_defaults = loaded.defaults.get("world", {})
    first = world_defaults.get("eval_seed", 9_000_001) + SEED_OFFSET if seed is None else seed
    seeds = [first + i for i in range(len(lengths_s))]
    bad = [s for s in seeds if s in TRAINING_SEEDS]
    if bad:
        raise StreamvlmError(
            f"world seed {bad[0]} is in the training range of world datasets; use one > 9000000"
        )
    base = replace(StreamConfig.from_dict(loaded.defaults.get("stream", {})), **(overrides or {}))
    paths = companion_paths(out)
    cells_dir = paths["json"].with_suffix(".cells")
    model_id = _model_id(loaded.path)

    def world(s: int) -> WorldConfig:
        return WorldConfig.for_model(world_defaults, s)

    plan = [
        Cell(length, s, name, replace(base, **VARIANTS[name]), cells_dir, model_id, max_seconds_full)
        for length, s in zip(lengths_s, seeds, strict=True)
        for name in policies
    ]
    todo = [c for c in plan if fresh or _cached(c.path, c.key) is None]
    probes = sorted({t for t in probes if t < max(lengths_s) and t < max_seconds_full})
    probe_file = cells_dir / f"attention-seed{seeds[0]}.json"
    probe_key = {"model": model_id, "seed": seeds[0], "probes": probes, "config": asdict(base)}
    run_probes = bool(probes) and (fresh or _cached(probe_file, probe_key) is None)
    total = sum(c.seconds for c in todo) + (max(probes) + 1 if run_probes else 0)
    bar = tqdm(total=total, unit="s", disable=not progress or not total, desc="world study")
    with tempfile.TemporaryDirectory() as tmp:
        videos: dict[int, Path] = {}  # seed -> its match, encoded once for all policies

        def video(length: int, s: int) -> Path:
            if s not in videos:
                from .dataset import write_world_video
                from .stream import World

                bar.set_description(f"writing the {length / 60:g} min match")
                videos[s] = Path(tmp) / f"match-{s}.mp4"
                write_world_video(videos[s], World(world(s)), length)
            return videos[s]

        for c in todo:
            bar.set_description(f"{c.length / 60:g} min {c.policy}")
            run = run_cell(
                loaded, c.config, world(c.seed), c.seconds, bucket_s, video(c.length, c.seed), bar.update
            )
            write_atomic(c.path, json.dumps({"key": c.key, **run}) + "\n")
        if run_probes:
            bar.set_description("attention probes")
            probe_video = video(lengths_s[0], seeds[0]) if lengths_s[0] > max(probes) else None
            result = probe_world_attention(
                loaded, base, world(seeds[0]), probes, on_second=lambda t: bar.update(1), video=probe_video
            )
            write_atomic(probe_file, json.dumps({"key": probe_key, **result}) + "\n")
    bar.close()

    lengths = [
        {
            "seconds": length,
            "minutes": length / 60,
            "seed": s,
            "policies": {
                c.policy: summarize(_cached(c.path, c.key), length, bucket_s) for c in plan if c.seed == s
            },
        }
        for length, s in zip(lengths_s, seeds, strict=True)
    ]
    report = {
        "study": "long-stream policy study on the procedural world",
        "model": str(loaded.path),
        "model_is_random": not (Path(loaded.path) / "metrics.json").is_file(),
        "bucket_s": bucket_s,
        "max_seconds_full": max_seconds_full,
        "torch_threads": torch.get_num_threads(),
        "full_rule": f"full attention streams at most {max_seconds_full} s of a match, later buckets skipped",
        "variants": {name: VARIANTS[name] for name in policies},
        "stream_config": asdict(base),
        "lengths": lengths,
        "attention": _cached(probe_file, probe_key) if probes else None,
        "command": command,
    }
    report["files"] = {
        "json": str(paths["json"]),
        "markdown": str(paths["markdown"]),
        "plot": str(paths["plot"]),
    }
    write_atomic(paths["markdown"], markdown(report))
    plot(report, paths["plot"])
    write_atomic(paths["json"], json.dumps(report, indent=2) + "\n")
    return report


class Cell:
    """One (stream length, policy) result: what it streams and the file it is cached in."""

    def __init__(self, length, seed, policy, config, cells_dir: Path, model_id: str, max_seconds_full: int):
        self.length, self.seed, self.policy, self.config = length, seed, policy, config
        self.seconds = min(length, max_seconds_full) if config.policy == "full" else length
        self.path = cells_dir / f"{length}s-seed{seed}-{policy}.json"
        self.key = {"model": model_id, "seed": seed, "seconds": self.seconds, "config": asdict(config)}


def run_cell(loaded, config, world_config, seconds: int, bucket_s: int, video: Path, tick=None) -> dict:
    """Stream one policy over one match; per-second texts and stats (summarized by `summarize`)."""
    from streamvlm.cache.layout import Kind

    from .config import MODEL_OPTIONS
    from .eval import stream_world

    def memory_tokens(session) -> dict:
        memory = session.layout.find(Kind.MEMORY)
        return {"memory_tokens": memory.fed if memory is not None else 0}

    run = stream_world(
        loaded,
        config,
        world_config,
        seconds,
        bucket_s=bucket_s,
        on_second=(lambda line, row: tick(1)) if tick else None,
        video=video,
        session_stats=memory_tokens,
    )
    keep = ("step_ms", "cache_tokens", "max_position", "memory_tokens")
    return {
        "seed": world_config.seed,
        **{k: getattr(world_config, k) for k in MODEL_OPTIONS},  # the world `summarize` rebuilds
        "policy": config.policy,
        "positions": config.positions,
        "wall_s": run["wall_s"],
        "predicted": run["predicted"],
        "stats": {k: [s[k] for s in run["stats"]] for k in keep},
    }


def summarize(cell: dict, length: int, bucket_s: int) -> dict:
    """Whole-stream and per-bucket numbers of a streamed cell (buckets past its end: skipped)."""
    from .config import WorldConfig
    from .evaluate import score_lines
    from .stream import World

    world = World(WorldConfig.for_model(cell, cell["seed"]))  # the cell keeps the world's commentary options
    rows = list(world.rows(len(cell["predicted"])))
    n = len(rows)

    def numbers(a: int, b: int) -> dict:
        whole = world.config.points_to_win if a == 0 else None  # a count needs the stream from 0-0
        m = score_lines(cell["predicted"][a:b], rows[a:b], world.nicknames, points_to_win=whole)
        stats = {k: v[a:b] for k, v in cell["stats"].items()}
        step = sorted(stats["step_ms"])
        return {
            "point_f1": m["point"]["f1"],
            "serve_f1": m["serve"]["f1"],
            "return_f1": m["return"]["f1"],
            "score_accuracy": m["score_accuracy"],
            "counted_score_accuracy": m.get("counted_score_accuracy"),
            "stepped_score_accuracy": m.get("stepped_score_accuracy"),
            "exact": m["exact"],
            "silence_accuracy": m["silence_accuracy"],
            "points": m["point"]["truth"],
            "cache_tokens_median": statistics.median(stats["cache_tokens"]),
            "cache_tokens_max": max(stats["cache_tokens"]),
            "memory_tokens_max": max(stats["memory_tokens"]),
            "max_position": max(stats["max_position"]),
            "step_ms_median": statistics.median(step),
            "step_ms_p99": step[min(len(step) - 1, int(0.99 * len(step)))],
        }

    buckets = []
    for a in range(0, length, bucket_s):
        b = min(a + bucket_s, length)
        scored = max(0, min(b, n) - a)  # seconds streamed in the bucket (full attention may stop early)
        bucket = {"start_s": a, "end_s": b, "seconds": scored, "skipped": not scored}
        buckets.append({**bucket, **numbers(a, a + scored)} if scored else bucket)
    return {
        "status": "done" if n >= length else "truncated",
        "streamed_s": n,
        "wall_s": cell["wall_s"],
        "ms_per_stream_s": 1000 * cell["wall_s"] / max(n, 1),
        "overall": numbers(0, n),
        "buckets": buckets,
    }


def _cached(path: Path, key: dict) -> dict | None:
    """A cached result whose key matches; None when missing or stale."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if data.get("key") == key else None


def _model_id(path: Path) -> str:
    weights = Path(path) / "model.safetensors"
    if weights.is_file():
        st = weights.stat()
        return f"{Path(path).resolve()}:{st.st_size}:{int(st.st_mtime)}"
    return str(Path(path).resolve())


def probe_world_attention(
    loaded, config, world_config, probes: list[int], on_second=None, video: Path | None = None
) -> dict:
    """`eval.attention.probe_attention` on a world match (encoded to `video`, or a temporary file),
    with its opening text and query, like a user would start the stream."""
    from streamvlm.eval.attention import probe_attention
    from streamvlm.sources import VideoFileSource

    from .dataset import write_world_video
    from .stream import World

    world = World(world_config)
    seconds = max(probes) + 1
    config = replace(config, fps=world_config.fps, previous_text=world.opening_text, query=world_config.query)
    with tempfile.TemporaryDirectory() as tmp:
        if video is None:
            video = Path(tmp) / "match.mp4"
            write_world_video(video, world, seconds)
        source = VideoFileSource(video, fps=world_config.fps, seconds=seconds)
        result = probe_attention(loaded, config, source, probes, on_second=on_second)
    return {"seed": world_config.seed, **result}
