"""`streamvlm train CONFIG.yaml [key=value ...]`."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="fine-tune on overlapped chunks (SFT)",
        description="Fine-tune a Qwen2.5-VL / Qwen2-VL checkpoint on windows written by "
        "`streamvlm make-chunks`. "
        "Options come from the YAML file, then from key=value overrides (nested: lora.r=8). Re-running the "
        "same command after a kill resumes from the last checkpoint. Multi-process: "
        "`accelerate launch -m streamvlm train ...` or `torchrun --nproc-per-node N -m streamvlm train ...`.",
    )
    p.add_argument("config", help="YAML training config (see configs/)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. max_steps=100 lora.r=8")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    import json
    import sys

    from .config import load_config
    from .trainer import train

    metrics = train(load_config(args.config, args.overrides))
    print(json.dumps(metrics, indent=2), file=sys.stderr)
    return 0
