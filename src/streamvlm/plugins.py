"""Plugins: installed packages that add commands, a demo and a default model to `streamvlm`.

A plugin is an entry point in the group `streamvlm.plugins` naming a module (or object) with any of:

    register(subparsers)           add top-level subcommands (`streamvlm NAME ...`)
    register_eval(subparsers)      add `streamvlm eval NAME ...` subcommands
    default_model() -> Path|None   the checkpoint used when no --model is given
    demo(loaded, args) -> int|None run `streamvlm demo` for a model it recognises (None: not its model)

The product never imports a plugin by name: it only finds them here. The procedural demo world
(`streamvlm_world`, installed by the same `pip install -e .`) is one.
"""

import functools
from importlib.metadata import entry_points

GROUP = "streamvlm.plugins"


@functools.cache
def plugins() -> tuple:
    """The installed plugins, loaded once, in entry-point name order."""
    return tuple(ep.load() for ep in sorted(entry_points(group=GROUP), key=lambda ep: ep.name))


def hooks(name: str) -> list:
    """Every plugin's attribute `name` (a callable), in plugin order."""
    return [getattr(p, name) for p in plugins() if callable(getattr(p, name, None))]
