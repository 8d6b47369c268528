"""The model used when none is named.

The first installed plugin's default model (`streamvlm.plugins`: the demo world ships one) when
there is one; otherwise a tiny random-weight checkpoint written once to the user cache
(`$STREAMVLM_CACHE`, default ~/.cache/streamvlm), whose commentary is noise.
"""

import os
import shutil
from pathlib import Path

from ..plugins import hooks
from .tiny import write_tiny_checkpoint

DEFAULT_SEED = 0


def cache_dir() -> Path:
    return Path(os.environ.get("STREAMVLM_CACHE", Path.home() / ".cache" / "streamvlm")).expanduser()


def default_model_dir() -> Path:
    for default_model in hooks("default_model"):
        if (path := default_model()) is not None:
            return Path(path)
    return random_model_dir()


def random_model_dir() -> Path:
    path = cache_dir() / f"tiny-random-seed{DEFAULT_SEED}"
    if not path.is_dir():
        # write beside, then rename: a concurrent or killed writer never leaves a half-written dir
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        write_tiny_checkpoint(tmp, seed=DEFAULT_SEED)
        try:
            tmp.rename(path)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another process got there first
    return path


def is_random_default(path: Path) -> bool:
    return Path(path).resolve() == (cache_dir() / f"tiny-random-seed{DEFAULT_SEED}").resolve()
