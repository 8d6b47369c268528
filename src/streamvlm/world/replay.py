"""Replay fine-tuning on world matches (`train.replay`): the recipe's last training stage.

    streamvlm world replay MODEL_DIR OUT_DIR [--streams 6] [--seconds 1200] [--seed 7100000]

Whole matches (fresh seeds, from their first second, encoded to video and decoded back as every
other stream) are streamed through the model's own streaming defaults with the ground truth as
replies. Only the queries and keys of the copy head's layer learn, with the copy head's pointer
loss (`train.replay.ReplayConfig` defaults).
"""

import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from ..train.replay import ReplayConfig, ReplayLog, ReplayStream, replay_train
from .config import WorldConfig

#: World seeds of the replay matches: apart from the datasets (1_000_000 + i, 2_000_000 + i) and the
#: held-out matches (9_000_001 and on).
REPLAY_SEED = 7_100_000


def world_streams(world_defaults: dict, seeds: list[int], seconds: int) -> Iterator:
    """A `ReplayStream` per seed: the match encoded to a temporary video and read back, with its truth."""
    from ..sources import VideoFileSource
    from .dataset import write_world_video
    from .stream import World

    for seed in seeds:
        config = WorldConfig.for_model(world_defaults, seed)
        world = World(config)
        texts = [row["text"] for row in world.rows(seconds)]

        def seconds_of(world=world, texts=texts, fps=config.fps):
            with tempfile.TemporaryDirectory() as tmp:
                video = Path(tmp) / "match.mp4"
                write_world_video(video, world, seconds)
                source = VideoFileSource(video, fps=fps, seconds=seconds)
                for chunk, text in zip(source, texts, strict=True):
                    yield chunk.frames, chunk.start, chunk.end, text

        yield ReplayStream(f"world seed {seed}", seconds_of(), world.opening_text, config.query)


def replay_world_model(
    model_dir: Path,
    out_dir: Path,
    streams: int = 6,
    seconds: int = 1200,
    seed: int = REPLAY_SEED,
    config: ReplayConfig | None = None,
    checkpoint_dir: Path | None = None,
    progress=None,
    world_defaults: dict | None = None,
    stream_defaults: dict | None = None,
) -> ReplayLog:
    """Replay-fine-tune the world model in `model_dir` and write it, with every other file of
    `model_dir`, to `out_dir` (written whole or not at all). The world and the streaming defaults are
    the model's own (its `streamvlm.json`) unless given. Returns the run's log."""
    from ..config import StreamConfig
    from ..errors import StreamvlmError
    from ..models.load import load_model

    if streams < 1 or seconds < 1:
        raise StreamvlmError(f"replay: streams and seconds must be >= 1, got {streams} and {seconds}")
    loaded = load_model(str(model_dir))
    world_defaults = world_defaults or loaded.defaults.get("world")
    if world_defaults is None:
        raise StreamvlmError(f"{model_dir} is not a world model (its streamvlm.json has no 'world' entry)")
    stream_config = StreamConfig.from_dict(stream_defaults or loaded.defaults.get("stream", {}))
    log = replay_train(
        loaded,
        world_streams(world_defaults, [seed + i for i in range(streams)], seconds),
        stream_config,
        config or ReplayConfig(),
        checkpoint_dir=checkpoint_dir,
        progress=progress,
    )
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(model_dir, tmp)
    loaded.model.save_pretrained(tmp)
    (tmp / "replay.json").write_text(
        json.dumps({"streams": streams, "seconds": seconds, "seed": seed, "log": asdict(log)}, indent=1)
        + "\n"
    )
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return log
