"""Replay fine-tuning on world matches (`train.replay`): the recipe's last two training stages.

    streamvlm world replay MODEL_DIR OUT_DIR [--phase copy|calls] [--streams N] [--seconds S]

Whole matches (fresh seeds, from their first second, encoded to video and decoded back as every
other stream) are streamed through the model's own streaming defaults with the ground truth as
replies. Two phases, run in this order by the recipe:

- `copy`: only the queries and keys of the copy head's layer learn, with the copy head's pointer
  loss (`pointer.CopyPointer`): the score is read exactly from the text memory;
- `calls`: every text weight learns at a low rate, eight matches side by side, and every other match
  hides the ball once it is in the goal (`WorldConfig.goal_ball`). On a point at a whole second the
  goal light is lit in both of that second's frames and in the next second's too, so the point's own
  second differs from the next only by a dot of ball on the light, or by the light being new; the
  model leaned on the dot and missed the odd point where the dot sat on a patch border. Without it
  the onset is the only cue, which it then learns.

`replay.json` in the written model keeps each phase's log, by phase.
"""

import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from streamvlm.train.replay import ReplayConfig, ReplayLog, ReplayStream, replay_train

from .config import WorldConfig
from .pointer import CopyPointer

#: World seeds of the replay matches: apart from the datasets (1_000_000 + i, 2_000_000 + i) and the
#: held-out matches (9_000_001 and on).
REPLAY_SEED = 7_100_000


@dataclass(frozen=True)
class Phase:
    config: ReplayConfig
    streams: int
    seconds: int
    seed: int
    hide_goal_ball: bool = False  # every other match (the 2nd, 4th, ...) without the ball in the goal
    #: the copy head's pointer loss (layer 2, head 0, weight 1); each phase its own instance
    objectives: tuple = field(default_factory=lambda: (CopyPointer(),))


PHASES = {
    "copy": Phase(
        ReplayConfig(trainable=("layers.2.self_attn.q_proj", "layers.2.self_attn.k_proj")),
        streams=6,
        seconds=1200,
        seed=REPLAY_SEED,
    ),
    "calls": Phase(
        ReplayConfig(
            lr=2e-5,
            trainable=("model.language_model", "lm_head"),
            number_loss_weight=1.0,
            interleave=8,
        ),
        streams=16,
        seconds=600,
        seed=REPLAY_SEED + 100,
        hide_goal_ball=True,
    ),
}


def world_streams(
    world_defaults: dict, seeds: list[int], seconds: int, hide_goal_ball: bool = False
) -> Iterator:
    """A `ReplayStream` per seed: the match encoded to a temporary video and read back, with its truth
    (`hide_goal_ball`: every other match drawn without the ball in the goal)."""
    from streamvlm.sources import VideoFileSource

    from .dataset import write_world_video
    from .stream import World

    for k, seed in enumerate(seeds):
        config = WorldConfig.for_model(world_defaults, seed, goal_ball=not (hide_goal_ball and k % 2))
        world = World(config)
        texts = [row["text"] for row in world.rows(seconds)]

        def seconds_of(world=world, texts=texts, fps=config.fps):
            with tempfile.TemporaryDirectory() as tmp:
                video = Path(tmp) / "match.mp4"
                write_world_video(video, world, seconds)
                source = VideoFileSource(video, fps=fps, seconds=seconds)
                for chunk, text in zip(source, texts, strict=True):
                    yield chunk.frames, chunk.start, chunk.end, text

        name = f"world seed {seed}" + ("" if config.goal_ball else " (no ball in the goal)")
        yield ReplayStream(name, seconds_of(), world.opening_text, config.query)


def replay_world_model(
    model_dir: Path,
    out_dir: Path,
    phase: str = "copy",
    streams: int | None = None,
    seconds: int | None = None,
    seed: int | None = None,
    config: ReplayConfig | None = None,
    checkpoint_dir: Path | None = None,
    progress=None,
    world_defaults: dict | None = None,
    stream_defaults: dict | None = None,
) -> ReplayLog:
    """Replay-fine-tune the world model in `model_dir` (one `PHASES` entry; what is not given comes
    from it) and write it, with every other file of `model_dir`, to `out_dir` (written whole or not at
    all). The world and the streaming defaults are the model's own (its `streamvlm.json`) unless
    given. Returns the run's log."""
    from streamvlm.config import StreamConfig
    from streamvlm.errors import StreamvlmError
    from streamvlm.models.load import load_model

    if phase not in PHASES:
        raise StreamvlmError(f"replay: unknown phase {phase!r}; choose one of {', '.join(PHASES)}")
    p = PHASES[phase]
    streams = p.streams if streams is None else streams
    seconds = p.seconds if seconds is None else seconds
    seed = p.seed if seed is None else seed
    if streams < 1 or seconds < 1:
        raise StreamvlmError(f"replay: streams and seconds must be >= 1, got {streams} and {seconds}")
    loaded = load_model(str(model_dir))
    world_defaults = world_defaults or loaded.defaults.get("world")
    if world_defaults is None:
        raise StreamvlmError(f"{model_dir} is not a world model (its streamvlm.json has no 'world' entry)")
    stream_config = StreamConfig.from_dict(stream_defaults or loaded.defaults.get("stream", {}))
    seeds = [seed + i for i in range(streams)]
    log = replay_train(
        loaded,
        world_streams(world_defaults, seeds, seconds, p.hide_goal_ball),
        stream_config,
        config or p.config,
        checkpoint_dir=checkpoint_dir,
        progress=progress,
        objectives=p.objectives,
    )
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(model_dir, tmp)
    loaded.model.save_pretrained(tmp)
    record = tmp / "replay.json"
    phases = json.loads(record.read_text()) if record.is_file() else {}
    phases[phase] = {"streams": streams, "seconds": seconds, "seed": seed, "log": asdict(log)}
    record.write_text(json.dumps(phases, indent=1) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return log
