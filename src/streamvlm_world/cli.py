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
        "dataset cut into overlapped windows, a language-model warm-up on commentary, a vision warm-up, SFT, "
        "and a held-out evaluation; writes the model with its card and metrics to --out-dir. Re-run the "
        "same command after a kill to continue.",
    )
    model.add_argument(
        "--work-dir", default="runs/world-model", help="stage outputs (default runs/world-model)"
    )
    model.add_argument(
        "--out-dir", default="src/streamvlm_world/assets/world-model", help="where the model goes"
    )
    d = Recipe()  # the shipped recipe's defaults
    on_off = argparse.BooleanOptionalAction
    model.add_argument("--nicknames", action=on_off, default=d.nicknames, help="matches with team nicknames")
    model.add_argument("--videos", type=int, default=d.videos, help=f"training matches (default {d.videos})")
    model.add_argument(
        "--skill-spread",
        type=float,
        default=d.skill_spread,
        help="training matches: each game, each team's miss probability is drawn from "
        f"{WorldConfig.miss_probability:g} +- this, so "
        "lopsided scores are common (default %(default)s; held-out matches never vary)",
    )
    model.add_argument(
        "--video-seconds", type=int, default=d.video_seconds, help="length of each (default %(default)s)"
    )
    model.add_argument(
        "--sft-steps", type=int, default=d.sft_steps, help=f"SFT optimizer steps (default {d.sft_steps})"
    )
    model.add_argument(
        "--sft-batch", type=int, default=d.sft_batch, help=f"SFT windows per step (default {d.sft_batch})"
    )
    model.add_argument("--text-s", type=float, default=d.text_s, help="text warm-up, seconds (0: none)")
    model.add_argument(
        "--warmup-s", type=float, default=d.warmup_s, help=f"vision warm-up, seconds ({d.warmup_s:g})"
    )
    model.add_argument(
        "--warmup-decay",
        action=on_off,
        default=d.warmup_decay,
        help="the vision warm-up's learning rate falls linearly to 0 over its time instead of staying "
        "constant (%(default)s)",
    )
    model.add_argument(
        "--text-only-fraction",
        type=float,
        default=d.text_only_fraction,
        help="share of SFT windows shown without frames, loss on the score numbers only (%(default)s)",
    )
    model.add_argument(
        "--text-matches",
        type=int,
        default=d.text_matches,
        help="commentary-only matches (no video, fresh seeds) whose windows are added to SFT without "
        "frames (%(default)s)",
    )
    model.add_argument(
        "--score-on-serve",
        action=on_off,
        default=d.score_on_serve,
        help="matches that also announce the score with every serve",
    )
    model.add_argument(
        "--goal-light",
        action=on_off,
        default=d.goal_light,
        help="matches where the conceding goal line glows after a point, until the next serve",
    )
    model.add_argument(
        "--score-change",
        action=on_off,
        default=d.score_change,
        help="matches whose point lines repeat the score before the point, then the new count",
    )
    model.add_argument(
        "--time-shift-max",
        type=int,
        default=d.time_shift_max,
        help="shift half the SFT windows' time labels by up to this many seconds, so the model has seen "
        f"the time stamps of long streams ({d.time_shift_max}; 0: off)",
    )
    model.add_argument(
        "--memory-number-labels",
        action=on_off,
        default=d.memory_number_labels,
        help="SFT loss also on the score numbers of each window's previous-text block",
    )
    model.add_argument(
        "--pointer-supervision",
        action=on_off,
        default=d.pointer_supervision,
        help="SFT: two heads of a layer are taught to attend to the latest Red / Blue score number",
    )
    model.add_argument(
        "--pointer-layer",
        type=int,
        default=d.pointer_layer,
        help="the layer of those heads (%(default)s)",
    )
    model.add_argument(
        "--pointer-copy-head",
        action=on_off,
        default=d.pointer_copy_head,
        help="with --pointer-supervision: one head instead, taught only before each score number to "
        "attend to that team's latest number",
    )
    model.add_argument(
        "--pointer-readout-weight",
        type=float,
        default=d.pointer_readout_weight,
        help="with --pointer-supervision: weight of a loss on the number those heads write, read "
        "through the output head (%(default)s: off)",
    )
    model.add_argument(
        "--pointer-code-weight",
        type=float,
        default=d.pointer_code_weight,
        help="with --pointer-supervision: weight of a loss asking what those heads write to tell every "
        "copied number apart by its direction (%(default)s: off)",
    )
    model.add_argument(
        "--streaming-mask",
        action=on_off,
        default=d.streaming_mask,
        help="SFT: each round of a window attends only to what the streaming policy keeps then (older "
        "rounds' words as text memory, their frames gone) instead of to the whole window",
    )
    model.add_argument(
        "--replay-streams",
        type=int,
        default=d.replay_streams,
        help="replay fine-tuning after SFT: whole matches streamed through the model's own cache "
        "(%(default)s; 0: skipped)",
    )
    model.add_argument(
        "--replay-seconds", type=int, default=d.replay_seconds, help="length of each (%(default)s)"
    )
    model.add_argument(
        "--call-streams",
        type=int,
        default=d.call_streams,
        help="then the calls phase of the replay: matches streamed side by side, every text weight "
        "learning, every other match without the ball in the goal (%(default)s; 0: skipped)",
    )
    model.add_argument(
        "--call-seconds", type=int, default=d.call_seconds, help="length of each (%(default)s)"
    )
    model.add_argument(
        "--call-runs",
        type=int,
        default=d.call_runs,
        help="calls phase runs, each on its own matches, side by side in worker processes; their "
        "weights are averaged (%(default)s)",
    )
    model.add_argument(
        "--seed",
        type=int,
        default=d.seed,
        help="seed of the initial weights, the warm-up and SFT's sampling; the matches stay the same "
        "(%(default)s)",
    )
    model.add_argument("--eval-seconds", type=int, default=300, help="held-out evaluation length (300)")
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
    from .recipe import train_world_model

    options = {f.name for f in fields(Recipe)}  # each train-model option is named after its field
    recipe = Recipe(**{k: v for k, v in vars(args).items() if k in options})
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
