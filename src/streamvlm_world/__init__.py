"""The procedural stream world: a deterministic match with exact per-second commentary.

    from streamvlm_world import World, WorldConfig
    world = World(WorldConfig(seed=3, fps=2, size=112))
    world.opening_text                      # the stream's `previous` text: the team nicknames
    for frames, row in world.seconds(60):   # (fps, size, size, 3) uint8 RGB and the truth row
        ...

Modules: `config` (every knob), `game` (the simulation), `render` (frames), `commentary` (the
lines and their word timings), `stream` (seconds of frames + truth), `dataset` (files on disk),
`cli` (`streamvlm world ...`).
"""

from .commentary import NICKNAMES, vocabulary
from .config import STEP_S, STEPS_PER_S, WorldConfig
from .dataset import video_seed, write_dataset, write_world_video
from .game import BLUE, POINT, RED, RETURN, SERVE, Event, Match, State
from .render import Painter
from .stream import Second, World, measure

__all__ = [
    "BLUE",
    "NICKNAMES",
    "POINT",
    "RED",
    "RETURN",
    "SERVE",
    "STEPS_PER_S",
    "STEP_S",
    "Event",
    "Match",
    "Painter",
    "Second",
    "State",
    "World",
    "WorldConfig",
    "measure",
    "video_seed",
    "vocabulary",
    "write_dataset",
    "write_world_video",
]
