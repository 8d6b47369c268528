"""`streamvlm bench`: latency and memory per second of stream vs. policy; `--suite gpu`: the one-shot
GPU benchmark (eager vs compiled decoding, the 2 fps step, a real-time fps sweep, peak memory,
policies) within a wall-clock budget."""

import sys
import time

#: defaults of the options whose default depends on the suite: (policies suite, gpu suite)
SUITE_DEFAULTS = {
    "minutes": (5.0, 3.0),
    "policies": ("streaming,full,sliding,recompute", "streaming,full,recompute"),
    "device": ("cpu", "cuda"),
    "out": ("out/bench.json", "out/gpu"),
}


def register(subparsers) -> None:
    from ..cache.policy import Windows
    from ..options import add_options

    p = subparsers.add_parser(
        "bench",
        help="latency and memory per second of stream for each cache policy (--suite gpu: the GPU benchmark)",
        description="Stream generated frames through a model (random weights with the shapes of --shape, or "
        "--model) for each policy, with a fixed number of generated tokens per second, and report per-second "
        "step time (prefill, generation, eviction), cache tokens, KV bytes, max position and memory. "
        "--suite gpu runs the one-shot GPU benchmark instead (benchmarks/gpu.sh): eager vs compiled "
        "decode ms/token, the per-second step at 2 fps, the highest real-time fps, peak device memory and "
        "streaming vs full vs recompute, stopping by itself within --budget-s; it writes gpu.json, gpu.md "
        "and gpu.png into the --out directory.",
    )
    p.add_argument("--suite", choices=("policies", "gpu"), default="policies", help="(default policies)")
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--shape",
        choices=("tiny", "7b"),
        default=None,
        help="random-weight model shape (tiny; gpu suite: 7b)",
    )
    source.add_argument("--model", default=None, help="a checkpoint dir or hub id instead of a shape")
    p.add_argument("--minutes", type=float, default=None, help="stream length per policy (default 5; gpu: 3)")
    p.add_argument(
        "--policies", default=None, help="comma-separated (default all four; gpu: streaming,full,recompute)"
    )
    p.add_argument("--fps", type=int, default=2)
    p.add_argument("--size", default=None, help="frame size WxH (default 112x112 tiny, 1280x720 7b)")
    p.add_argument("--new-tokens", type=int, default=None, help="tokens generated every second (default 20)")
    add_options(p, Windows, unset=True)  # the cache windows, declared in cache.policy.Windows
    p.add_argument("--text-layers", type=int, default=None, help="7b shape: number of text layers kept")
    p.add_argument("--vision-layers", type=int, default=None, help="7b shape: number of vision layers kept")
    p.add_argument("--device", default=None, help="default cpu; gpu suite: cuda (cpu with --dry-run)")
    p.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default=None,
        help="default float32 on cpu, bfloat16 on cuda",
    )
    p.add_argument("--max-step-s", type=float, default=120.0, help="stop a policy when one step takes longer")
    p.add_argument(
        "--out", default=None, help="JSON report (default out/bench.json); gpu suite: a directory (out/gpu)"
    )
    p.add_argument("--plot", default=None, help="plot PNG (default: next to --out)")
    gpu = p.add_argument_group("gpu suite")
    gpu.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="wall-clock budget of the whole run (default 450; dry: 30)",
    )
    gpu.add_argument(
        "--dry-run",
        action="store_true",
        help="tiny model, tiny frames, a few seconds per phase (CPU, < 60 s)",
    )
    gpu.add_argument("--sweep", default=None, help="fps sweep, comma-separated (default 2,4,8,16,24,32)")
    gpu.add_argument(
        "--phases",
        default=None,
        help="run only these, comma-separated (default: decode,step_2fps,fps_sweep,policies)",
    )
    gpu.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=cmd_bench)


def _default(args, name: str):
    value = getattr(args, name)
    return SUITE_DEFAULTS[name][args.suite == "gpu"] if value is None else value


def _pick(value, default):
    return default if value is None else value


def cmd_bench(args) -> int:
    started = time.monotonic()  # the gpu suite's budget counts from here (imports included)
    import torch

    from ..errors import StreamvlmError

    device = args.device or ("cpu" if args.suite == "gpu" and args.dry_run else _default(args, "device"))
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise StreamvlmError(f"--device {device}: CUDA is not available on this machine")
    if args.suite == "gpu":
        return cmd_gpu(args, device, started)
    if args.dry_run or args.budget_s is not None or args.sweep is not None or args.phases is not None:
        raise StreamvlmError("--dry-run, --budget-s, --sweep and --phases apply to --suite gpu")
    return cmd_policies(args, device)


def cmd_policies(args, device: str) -> int:
    from dataclasses import fields
    from pathlib import Path

    from ..cache.policy import POLICIES, Windows
    from ..cli import parse_size
    from ..errors import StreamvlmError
    from .report import plot, table
    from .run import BenchConfig, run_bench, write_report

    policies = [p.strip() for p in _default(args, "policies").split(",") if p.strip()]
    unknown = [p for p in policies if p not in POLICIES]
    if unknown or not policies:
        raise StreamvlmError(
            f"--policies: unknown {', '.join(unknown) or '(none)'}; choose from {', '.join(POLICIES)}"
        )
    shape = args.shape or (None if args.model else "tiny")
    size = parse_size(args.size) if args.size else ((1280, 720) if shape == "7b" else (112, 112))
    minutes, new_tokens = _default(args, "minutes"), _pick(args.new_tokens, 20)
    if minutes <= 0 or new_tokens < 1:
        raise StreamvlmError("--minutes must be > 0 and --new-tokens >= 1")
    out = _default(args, "out")
    config = BenchConfig(
        shape=shape,
        model=args.model,
        minutes=minutes,
        policies=policies,
        fps=args.fps,
        size=size,
        new_tokens=new_tokens,
        **{f.name: _pick(getattr(args, f.name), f.default) for f in fields(Windows)},
        device=device,
        dtype=args.dtype or ("bfloat16" if device.startswith("cuda") else "float32"),
        text_layers=args.text_layers,
        vision_layers=args.vision_layers,
        max_step_s=args.max_step_s,
    )
    report = run_bench(config)
    report["command"] = "streamvlm " + " ".join(sys.argv[1:])
    write_report(report, out)
    figure = args.plot or str(Path(out).with_suffix(".png"))
    plot(report, figure)
    print(table(report))
    print(f"\nreport: {out}  plot: {figure}", file=sys.stderr)
    return 0


def cmd_gpu(args, device: str, started: float) -> int:
    from dataclasses import replace

    from ..cache.policy import POLICIES
    from ..cli import parse_size
    from ..errors import StreamvlmError
    from .gpu import GpuBench, GpuBenchConfig

    base = GpuBenchConfig.dry() if args.dry_run else GpuBenchConfig()
    changes: dict = {"device": device, "out": _default(args, "out")}
    if args.policies is not None:
        policies = tuple(p.strip() for p in args.policies.split(",") if p.strip())
        unknown = [p for p in policies if p not in POLICIES]
        if unknown or not policies:
            raise StreamvlmError(
                f"--policies: unknown {', '.join(unknown) or '(none)'}; choose from {', '.join(POLICIES)}"
            )
        changes["policies"] = policies
    if args.sweep is not None:
        try:
            sweep = tuple(sorted({int(v) for v in args.sweep.split(",") if v.strip()}))
        except ValueError:
            raise StreamvlmError(f"--sweep {args.sweep}: expected whole fps, e.g. 2,4,8") from None
        if not sweep or min(sweep) < 1:
            raise StreamvlmError(f"--sweep {args.sweep}: fps must be >= 1")
        changes["sweep"] = sweep
    if args.phases is not None:
        from .gpu import TIMED

        phases = tuple(p.strip() for p in args.phases.split(",") if p.strip())
        if not phases or set(phases) - set(TIMED):
            raise StreamvlmError(f"--phases {args.phases}: choose from {', '.join(TIMED)}")
        changes["phases"] = phases
    if args.model:
        changes.update(model=args.model, shape=None)
    elif args.shape:
        changes["shape"] = args.shape
    for name in ("text_layers", "vision_layers", "dtype", "vision_window", "text_rounds"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    for name in ("text_sink", "text_window", "new_tokens", "budget_s"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.minutes is not None:
        changes["policy_minutes"] = args.minutes
    if args.size:
        changes["size"] = parse_size(args.size)
    elif changes.get("shape") == "tiny" and not args.dry_run:
        changes["size"] = (112, 112)
    config = replace(base, **changes)
    if config.budget_s <= 0 or config.new_tokens < 2 or config.policy_minutes <= 0:
        raise StreamvlmError("--budget-s and --minutes must be > 0, --new-tokens >= 2 (ms per decoded token)")
    bench = GpuBench(config, command="streamvlm " + " ".join(sys.argv[1:]), quiet=args.quiet)
    bench.started, bench.deadline = started, started + config.budget_s
    report = bench.run()
    print(bench.paths["markdown"].read_text())
    print(
        f"report: {bench.paths['json']}  table: {bench.paths['markdown']}  plot: {bench.paths['plot']}",
        file=sys.stderr,
    )
    return 3 if str(report.get("stopped") or "").startswith("interrupted") else 0
