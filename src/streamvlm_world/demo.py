"""`streamvlm demo` with the shipped world model: a match it never saw, streamed and scored."""

import sys
from dataclasses import replace
from pathlib import Path

from streamvlm.config import StreamConfig
from streamvlm.engine import Commentary
from streamvlm.models.load import LoadedModel
from streamvlm.runner import stream_to_files
from streamvlm.sources import VideoFileSource

from .config import WorldConfig
from .dataset import write_world_video
from .evaluate import score_lines
from .stream import World


def demo(loaded: LoadedModel, args) -> int | None:
    """The `demo` hook: a world model (its `streamvlm.json` has a `world` section) gets a fresh match
    with its commentary printed beside the truth, then its scores; any other model is not ours."""
    if "world" not in loaded.defaults:
        return None
    config = StreamConfig.from_dict(loaded.defaults.get("stream", {}))
    m = world_demo(loaded, config, args.seconds, args.seed, args.out_dir)

    def pct(x):
        return "n/a" if x is None else f"{x:.0%}"

    print(
        f"\nexact seconds {m['exact']:.0%} · points F1 {m['point']['f1']:.2f} · "
        f"announced score right {pct(m['score_accuracy'])} "
        f"(its point calls counted exactly: {pct(m.get('counted_score_accuracy'))}; "
        f"following from its own previous one: {pct(m.get('stepped_score_accuracy'))}) "
        f"· serves F1 {m['serve']['f1']:.2f} · returns F1 {m['return']['f1']:.2f}",
        file=sys.stderr,
    )
    return 0


def world_demo(
    loaded: LoadedModel, config: StreamConfig, seconds: int, seed: int | None, out_dir: str
) -> dict:
    """Stream a freshly generated world match (a seed the model never saw) through the model,
    printing its commentary beside the ground truth; writes the video, truth, JSONL and VTT."""
    world_defaults = loaded.defaults.get("world", {})
    world_config = WorldConfig.for_model(
        world_defaults, world_defaults.get("demo_seed", 0) if seed is None else seed, fps=config.fps
    )
    world = World(world_config)
    out = Path(out_dir)
    video = out / "demo.mp4"
    write_world_video(video, world, seconds, truth=out / "demo.truth.jsonl")
    rows = list(world.rows(seconds))
    config = replace(config, previous_text=world.opening_text, query=world_config.query)
    print(f"a new match (world seed {world_config.seed}), {seconds} s: {video}", file=sys.stderr)
    if world.opening_text:
        print(f"opening text: {world.opening_text}", file=sys.stderr)

    def describe(line: Commentary) -> str:
        truth = rows[int(line.start)]["text"]
        if not line.text and not truth:
            return ""
        mark = "=" if line.text == truth else "≠"
        return f"{line.text or '(silence)':<40} {mark} truth: {truth or '(silence)'}"

    lines = stream_to_files(
        loaded,
        config,
        VideoFileSource(video, fps=config.fps),
        out=str(out / "demo.jsonl"),
        stats=str(out / "demo-stats.jsonl"),
        extra_out=[str(out / "demo.vtt")],
        describe=describe,
    )
    return score_lines(
        [line.text for line in lines], rows, world.nicknames, points_to_win=world_config.points_to_win
    )
