"""`streamvlm bench`: latency and memory per second of stream vs. policy."""

import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="latency and memory per second of stream for each cache policy",
        description="Stream generated frames through a model (random weights with the shapes of --shape, or "
        "--model) for each policy, with a fixed number of generated tokens per second, and report per-second "
        "step time (prefill, generation, eviction), cache tokens, KV bytes, max position and memory.",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--shape", choices=("tiny", "7b"), default=None, help="random-weight model shape (tiny)"
    )
    source.add_argument("--model", default=None, help="a checkpoint dir or hub id instead of a shape")
    p.add_argument("--minutes", type=float, default=5.0, help="stream length per policy (default 5)")
    p.add_argument("--policies", default="streaming,full,sliding,recompute", help="comma-separated")
    p.add_argument("--fps", type=int, default=2)
    p.add_argument("--size", default=None, help="frame size WxH (default 112x112 tiny, 1280x720 7b)")
    p.add_argument("--new-tokens", type=int, default=20, help="tokens generated every second (default 20)")
    p.add_argument("--vision-window", type=int, default=16)
    p.add_argument("--text-rounds", type=int, default=16)
    p.add_argument("--text-sink", type=int, default=512, help="text memory head, tokens (default 512)")
    p.add_argument("--text-window", type=int, default=512, help="text memory tail, tokens (default 512)")
    p.add_argument("--text-layers", type=int, default=None, help="7b shape: number of text layers kept")
    p.add_argument("--vision-layers", type=int, default=None, help="7b shape: number of vision layers kept")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default=None,
        help="default float32 on cpu, bfloat16 on cuda",
    )
    p.add_argument("--max-step-s", type=float, default=120.0, help="stop a policy when one step takes longer")
    p.add_argument("--out", default="out/bench.json", help="JSON report (default out/bench.json)")
    p.add_argument("--plot", default=None, help="plot PNG (default: next to --out)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    from pathlib import Path

    import torch

    from ..cache.policy import POLICIES
    from ..cli import parse_size
    from ..errors import StreamvlmError
    from .report import plot, table
    from .run import BenchConfig, run_bench, write_report

    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    unknown = [p for p in policies if p not in POLICIES]
    if unknown or not policies:
        raise StreamvlmError(
            f"--policies: unknown {', '.join(unknown) or '(none)'}; choose from {', '.join(POLICIES)}"
        )
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise StreamvlmError(f"--device {args.device}: CUDA is not available on this machine")
    shape = args.shape or (None if args.model else "tiny")
    size = parse_size(args.size) if args.size else ((1280, 720) if shape == "7b" else (112, 112))
    if args.minutes <= 0 or args.new_tokens < 1:
        raise StreamvlmError("--minutes must be > 0 and --new-tokens >= 1")
    config = BenchConfig(
        shape=shape,
        model=args.model,
        minutes=args.minutes,
        policies=policies,
        fps=args.fps,
        size=size,
        new_tokens=args.new_tokens,
        vision_window=args.vision_window,
        text_rounds=args.text_rounds,
        text_sink=args.text_sink,
        text_window=args.text_window,
        device=args.device,
        dtype=args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"),
        text_layers=args.text_layers,
        vision_layers=args.vision_layers,
        max_step_s=args.max_step_s,
    )
    report = run_bench(config)
    report["command"] = "streamvlm " + " ".join(sys.argv[1:])
    write_report(report, args.out)
    figure = args.plot or str(Path(args.out).with_suffix(".png"))
    plot(report, figure)
    print(table(report))
    print(f"\nreport: {args.out}  plot: {figure}", file=sys.stderr)
    return 0
