"""What the world adds to `streamvlm` (entry point `streamvlm.plugins`, see `streamvlm.plugins`):
the `world` commands, `eval world` and `eval numbers`, the shipped model as the default model, and
its demo. Registration only builds parsers; heavy imports happen when a command runs."""

from pathlib import Path

#: The shipped world model, trained by `streamvlm world train-model`.
SHIPPED = Path(__file__).resolve().parent / "assets" / "world-model"


def shipped_model_dir() -> Path | None:
    return SHIPPED if (SHIPPED / "model.safetensors").is_file() else None


def default_model() -> Path | None:
    return shipped_model_dir()


def demo(loaded, args) -> int | None:
    from .demo import demo as world_demo

    return world_demo(loaded, args)


def register(subparsers) -> None:
    from .cli import register as register_world

    register_world(subparsers)


def register_eval(subparsers) -> None:
    from . import numbers, study

    study.register(subparsers)
    numbers.register(subparsers)
