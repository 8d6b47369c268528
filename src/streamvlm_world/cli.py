"""`streamvlm world ...` subcommands: write world videos, datasets, and print stream statistics.

    streamvlm world video OUT.mp4 --seconds N [--seed S] [--fps 2] [--size 112] [--truth OUT.jsonl]
    streamvlm world dataset OUT_DIR --videos K --seconds N [--seed S] [--text-only]
    streamvlm world train-model [--work-dir runs/world-model] [--out-dir DIR] [recipe options]
    streamvlm world replay MODEL_DIR OUT_DIR [--phase copy|calls] [--streams N] [--seconds S]
    streamvlm world stats [--seconds 600] [--seed S]

Registration only builds parsers; the world, PyAV and tqdm are imported when a command runs.
"""

import argparse
import json
import os
import shutil
import sys
from dataclasses import fields

from streamvlm.options import add_options

from .config import WorldConfig
from .recipe import Recipe

WORLD_HELP = """A deterministic paddle-and-ball match (Red left, Blue right) with exact per-second
commentary. The score is never drawn: it is only announced after each point. Team nicknames are
named only in the opening text (the stream's `previous` text) and used in every point line."""


def register(subparsers) -> None:
    """Add `world video`, `world dataset` and `world stats` to the top-level parser."""
    world = subparsers.add_parser("world", help="the procedural stream world: videos, datasets, stats")
    world.description = WORLD_HELP
    sub = world.add_subparsers(
        dest="world_command",
        metavar="{video,dataset,train-model,replay,stats}",
        required=True,
        parser_class=type(world),
    )

    video = sub.add_parser("video", help="write a world video (and its per-second truth)")
    video.add_argument("out", help="output video, e.g. match.mp4 (H.264)")
    video.add_argument("--seconds", type=int, required=True, help="length in seconds")
    video.add_argument("--truth", default=None, help="per-second ground truth, JSONL")
    add_world_options(video)
    video.set_defaults(func=cmd_video)

    dataset = sub.add_parser("dataset", help="write long world videos + Inf-Stream-Train annotations")
    dataset.add_argument("out_dir", help="output directory")
    dataset.add_argument("--videos", type=int, required=True, help="number of videos")
    dataset.add_argument("--seconds", type=int, required=True, help="length of each video in seconds")
    dataset.add_argument(
        "--text-only",
        action="store_true",
        help="annotations only, no videos: commentary for frame-less training (`text_data`)",
    )
    dataset.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes rendering videos side by side (default: one per core; the same frames)",
    )
    add_world_options(dataset)
    dataset.set_defaults(func=cmd_dataset)

    model = sub.add_parser(
        "train-model",
        help="train the shipped world model from scratch (resumable; on 2 CPU cores ~45 min with "
        "bfloat16, ~56 without)",
        description="Runs the whole recipe of streamvlm_world.recipe: tokenizer + architecture, a world "
        "dataset cut into overlapped windows, a vision warm-up, SFT with a copy head's pointer loss, "
        "two replay phases and a held-out evaluation; writes the model with its card and metrics to "
        "--out-dir. Re-run the same command after a kill to continue. The recipe is the `Recipe` "
        "dataclass; --recipe FILE.yaml and the flags replace its fields.",
    )
    model.add_argument(
        "--recipe", default=None, help="YAML file of recipe options (the flags below override it)"
    )
    add_options(model, Recipe, unset=True)  # one flag per `Recipe` field, its comment as help
    model.add_argument("--debug", action="store_true", help="show tracebacks")
    model.set_defaults(func=cmd_train_model)

    replay = sub.add_parser(
        "replay",
        help="fine-tune a world model on whole matches streamed through its own cache (4 + 7 min)",
        description="Streams fresh world matches from their first second through the model's streaming "
        "defaults with the ground truth as replies, and trains on each round as the engine computes it "
        "(text memory with reused K/V, re-indexed positions; streamvlm.train.replay). Phase 'copy' "
        "(6 x 1200 s): only the copy head's layer's queries and keys learn, so the score is read exactly "
        "from the text memory. Phase 'calls' (16 x 600 s, eight side by side): every text weight learns at "
        "lr 2e-5 and every other match hides the ball in the goal, so a point is called from the goal "
        "light's onset. The recipe runs copy, then calls. Writes the model to OUT_DIR; re-run after a "
        "kill to continue.",
    )
    replay.add_argument("model_dir", help="world model to start from (e.g. runs/world-model/sft/final)")
    replay.add_argument("out_dir", help="where the fine-tuned model goes (may be MODEL_DIR)")
    replay.add_argument("--phase", choices=("copy", "calls"), default="copy", help="(default copy)")
    replay.add_argument("--streams", type=int, default=None, help="matches to stream (copy 6, calls 16)")
    replay.add_argument("--seconds", type=int, default=None, help="seconds of each (copy 1200, calls 600)")
    replay.add_argument(
        "--seed", type=int, default=None, help="world seed of the first match (copy 7100000, calls 7100100)"
    )
    replay.add_argument("--lr", type=float, default=None, help="learning rate (copy 1e-4, calls 2e-5)")
    replay.add_argument(
        "--checkpoint-dir", default=None, help="resumable state (default: OUT_DIR.replay-checkpoint)"
    )
    replay.add_argument("--debug", action="store_true", help="show tracebacks")
    replay.set_defaults(func=cmd_replay)

    stats = sub.add_parser("stats", help="print statistics of a stream's commentary (JSON)")
    stats.add_argument("--seconds", type=int, default=600, help="seconds to simulate (default 600)")
    add_world_options(stats)
    stats.set_defaults(func=cmd_stats)


def add_world_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    p.add_argument("--fps", type=int, default=2, help="frames per second, a multiple of 2 (default 2)")
    p.add_argument("--size", type=int, default=112, help="square field side, even pixels (default 112)")
    p.add_argument("--points-to-win", type=int, default=11, help="points that win a game (default 11)")
    p.add_argument("--no-nicknames", action="store_true", help="point lines say Red/Blue, no opening text")
    p.add_argument(
        "--skill-spread",
        type=float,
        default=0.0,
        help=f"each game, each team's miss probability is drawn from {WorldConfig.miss_probability:g} +- "
        "this (default 0: even teams)",
    )
    p.add_argument("--score-on-serve", action="store_true", help="announce the score with every serve too")
    p.add_argument(
        "--score-change",
        action="store_true",
        help='point lines repeat the score before the point, then the new count ("... now Blue four")',
    )
    p.add_argument(
        "--goal-light",
        action="store_true",
        help="the conceding goal line glows after a point, till the serve",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def config_from_args(args):
    return WorldConfig(
        seed=args.seed,
        fps=args.fps,
        size=args.size,
        points_to_win=args.points_to_win,
        skill_spread=args.skill_spread,
        nicknames=not args.no_nicknames,
        score_on_serve=args.score_on_serve,
        goal_light=args.goal_light,
        score_change=args.score_change,
    )


def progress_bar(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, unit="s", desc=desc, disable=not sys.stderr.isatty(), leave=False)


def cmd_video(args) -> int:
    from streamvlm.errors import StreamvlmError

    from .dataset import write_world_video
    from .stream import World

    if args.seconds < 1:
        raise StreamvlmError(f"--seconds must be >= 1, got {args.seconds}")
    world = World(config_from_args(args))
    with progress_bar(args.seconds, "world video") as bar:
        write_world_video(args.out, world, args.seconds, truth=args.truth, progress=bar)
    if world.opening_text:
        print(f"opening text: {world.opening_text}", file=sys.stderr)
    print(args.out)
    if args.truth:
        print(args.truth)
    return 0


def cmd_dataset(args) -> int:
    from streamvlm.errors import StreamvlmError

    from .dataset import write_dataset

    if args.videos < 1 or args.seconds < 1:
        raise StreamvlmError(f"--videos and --seconds must be >= 1, got {args.videos} and {args.seconds}")
    config = config_from_args(args)
    with progress_bar(args.videos * args.seconds, "world dataset") as bar:
        print(
            write_dataset(
                args.out_dir,
                args.videos,
                args.seconds,
                config,
                progress=bar,
                render=not args.text_only,
                workers=args.workers,
            )
        )
    return 0


def cmd_stats(args) -> int:
    from streamvlm.errors import StreamvlmError

    from .stream import measure

    if args.seconds < 1:
        raise StreamvlmError(f"--seconds must be >= 1, got {args.seconds}")
    print(json.dumps(measure(config_from_args(args), args.seconds), indent=1))
    return 0


def cmd_train_model(args) -> int:
    from .recipe import load_recipe, train_world_model

    given = {f.name: getattr(args, f.name) for f in fields(Recipe) if getattr(args, f.name) is not None}
    recipe = load_recipe(args.recipe, given)
    result = train_world_model(recipe, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(json.dumps(result.get("held_out", {}), indent=1))
    return 0


def cmd_replay(args) -> int:
    from dataclasses import replace
    from pathlib import Path

    from .replay import PHASES, replay_world_model

    phase = PHASES[args.phase]
    out = Path(args.out_dir)
    checkpoint = (
        Path(args.checkpoint_dir) if args.checkpoint_dir else out.with_name(out.name + ".replay-checkpoint")
    )
    config = phase.config if args.lr is None else replace(phase.config, lr=args.lr)
    streams = phase.streams if args.streams is None else args.streams
    seconds = phase.seconds if args.seconds is None else args.seconds
    with progress_bar(max(streams, 0) * max(seconds, 0), f"replay ({args.phase})") as bar:
        log = replay_world_model(
            Path(args.model_dir),
            out,
            args.phase,
            streams,
            seconds,
            args.seed,
            config,
            checkpoint_dir=checkpoint,
            progress=bar.update,
        )
    shutil.rmtree(checkpoint, ignore_errors=True)  # the model is written: nothing left to resume
    print(json.dumps(log.losses, indent=1))
    print(out)
    return 0
