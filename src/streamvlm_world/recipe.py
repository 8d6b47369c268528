"""The shipped model's recipe, end to end, as one resumable command (`streamvlm world train-model`).

1. `init`: the architecture and a tokenizer trained on the world's text (`model`);
2. `data`: long world matches in the public Inf-Stream-Train format, cut by `make-chunks` into the
   method's overlapped windows (24 s, stride 12 s), the same pipeline as the real data;
3. `vision`: the vision tower learns the events with a throw-away per-second head (`warmup`);
4. `sft`: SFT on the windows with frames (vision frozen, its output stored once: `train.features`;
   number tokens weighted; a copy head's pointer supervision, `pointer.CopyPointer`);
5. `replay`, `calls`: the two replay fine-tuning phases, streamed through the model's own cache
   (`replay`, `streamvlm.train.replay`);
6. `ship`: the final checkpoint with its streaming defaults and model card, scored on a held-out match.

What was measured on the way to this recipe, and the shipped model's scores: docs/world.md.

Each stage writes its own directory under the work dir and is skipped once complete: re-running the
command after a kill continues (the SFT stage resumes from its last checkpoint).
"""

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, fields, replace
from functools import partial
from pathlib import Path

from streamvlm.cache.policy import Windows
from streamvlm.errors import StreamvlmError

from .config import MODEL_OPTIONS, WorldConfig

WORLD_PARAMS = "5.0 M-parameter"

#: Held-out matches: world seeds far from any training dataset's (`video_seed(1, i)` = 1_000_000 + i).
EVAL_SEED = 9_000_001
DEMO_SEED = 9_000_002


@dataclass
class Recipe(Windows):
    """The shipped model's recipe. Its cache windows (inherited from `streamvlm.cache.policy.Windows`)
    cut the SFT windows' previous text and are the streaming defaults shipped with the model; the
    world's text memory is smaller than the method's."""

    # the shipped preset's memory (the options and their help are Windows')
    text_sink: int = 32
    text_window: int = 96
    work_dir: str = "runs/world-model"  # stage outputs (a re-run continues there)
    out_dir: str = "src/streamvlm_world/assets/world-model"  # where the model goes
    nicknames: bool = False  # matches with team nicknames (named in the opening text)
    score_on_serve: bool = True  # the world also announces the score with every serve
    goal_light: bool = True  # the conceding goal line glows after a point, until the next serve
    score_change: bool = True  # point lines say the score before the point, then the new count
    skill_spread: float = 0.15  # training matches only: each team's miss probability varies by game
    videos: int = 80  # training matches
    video_seconds: int = 600  # the length of each
    dataset_seed: int = 1  # world dataset seed of the training matches
    window_s: float = 24.0  # SFT window length, seconds (make-chunks)
    stride_s: float = 12.0  # SFT window stride, seconds
    warmup_s: float = 150.0  # wall time of the vision warm-up
    warmup_videos: int = 12  # matches the vision warm-up learns from
    warmup_decay: bool = True  # the vision warm-up's lr falls linearly to 0 over its time, not constant
    sft_steps: int = 2000  # SFT optimizer steps
    sft_batch: int = 4  # SFT windows per step
    sft_lr: float = 1e-3  # SFT peak learning rate (cosine)
    number_loss_weight: float = 10.0  # SFT: weight of the number tokens in the loss
    text_only_fraction: float = 0.3  # SFT windows shown without frames, loss on their numbers only
    pointer_supervision: bool = True  # SFT: a copy head taught where the score number to say is (pointer)
    pointer_layer: int = 2  # the layer of that head
    streaming_mask: bool = False  # SFT: attention inside a window as the streaming policy leaves it
    time_shift_max: int = 7200  # SFT: half the windows' time labels shifted by up to this (long streams)
    replay_streams: int = 6  # replay fine-tuning (`replay`): whole matches streamed (0: skipped)
    replay_seconds: int = 1200  # the length of each
    call_streams: int = 16  # then the `calls` replay phase, side by side (0: skipped)
    call_seconds: int = 600  # the length of each
    call_runs: int = 2  # calls phase runs on other matches, side by side, their weights averaged
    eval_seconds: int = 300  # held-out evaluation length
    seed: int = 0  # seed of the initial weights, the warm-up and SFT's sampling (the matches stay)

    def world(self, seed: int) -> WorldConfig:
        """The world the model is made for (and scored on)."""
        return WorldConfig(seed=seed, **{k: getattr(self, k) for k in MODEL_OPTIONS})

    def training_world(self, seed: int) -> WorldConfig:
        """The world of the SFT matches: the same, with each team's skill varying game by game."""
        return replace(self.world(seed), skill_spread=self.skill_spread)


def load_recipe(path: str | None = None, overrides: dict | None = None) -> Recipe:
    """The shipped recipe, with the options of a YAML file (`path`), then `overrides`, replacing its own."""
    from streamvlm.options import read_yaml_options

    data = read_yaml_options(path, "recipe") if path else {}
    data.update(overrides or {})
    unknown = sorted(set(data) - {f.name for f in fields(Recipe)})
    if unknown:
        raise StreamvlmError(f"unknown recipe option(s): {', '.join(unknown)}")
    return Recipe(**data)


def train_world_model(recipe: Recipe, log=print) -> dict:
    from streamvlm.data.chunks import ChunkStats, make_chunks
    from streamvlm.data.formats import read_annotations, write_annotations
    from streamvlm.models.load import load_model
    from streamvlm.train.config import TrainConfig
    from streamvlm.train.trainer import train

    from .dataset import write_dataset
    from .model import STREAM_DEFAULTS, init_world_checkpoint
    from .pointer import CopyPointer
    from .warmup import load_seconds, vision_warmup

    if recipe.call_runs < 1 or (recipe.call_runs > 1 and recipe.call_streams > 100):
        raise StreamvlmError(
            "train-model: --call-runs must be >= 1, and with several runs --call-streams <= 100 (each run "
            f"streams its own matches, 100 seeds apart); got {recipe.call_runs} and {recipe.call_streams}"
        )
    if recipe.sft_steps < 1 or recipe.sft_batch < 1:
        raise StreamvlmError(
            f"train-model: --sft-steps and --sft-batch must be >= 1; got {recipe.sft_steps} and "
            f"{recipe.sft_batch}"
        )
    work = Path(recipe.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    results: dict = {}

    timings_file = work / "timings.json"
    timings.update(json.loads(timings_file.read_text()) if timings_file.is_file() else {})

    def stage(name: str, done: Path, run) -> None:
        if done.exists():
            log(f"[{name}] already done ({done})")
            return
        started = time.time()
        log(f"[{name}] ...")
        run()
        timings[name] = time.time() - started
        timings_file.write_text(json.dumps(timings, indent=2) + "\n")
        log(f"[{name}] {timings[name]:.0f} s")

    init, data, warm, sft = (work / n for n in ("init", "data", "warm", "sft"))
    world_defaults = {
        **{k: getattr(recipe, k) for k in MODEL_OPTIONS},
        "eval_seed": EVAL_SEED,
        "demo_seed": DEMO_SEED,
    }
    stage(
        "init",
        init / "streamvlm.json",
        lambda: init_world_checkpoint(init, seed=recipe.seed, extra={"world": world_defaults}),
    )

    def cut(annotations: Path, stride_s: float) -> int:
        """Windows of `annotations` (chunks.jsonl beside it, video paths kept relative); how many."""
        tokenizer = load_model(str(init)).tokenizer
        stats = ChunkStats()
        chunks = (
            c
            for r in read_annotations(annotations)
            for c in make_chunks(
                r,
                tokenizer,
                recipe.window_s,
                stride_s,
                recipe.text_sink,
                recipe.text_window,
                r.video_end,
                stats,
            )
        )
        write_annotations(chunks, annotations.parent / "chunks.jsonl")
        return stats.windows

    def make_data():
        world = recipe.training_world(recipe.dataset_seed)
        write_dataset(data, recipe.videos, recipe.video_seconds, world, workers=os.cpu_count() or 1)
        log(f"  {cut(data / 'annotations.jsonl', recipe.stride_s)} windows of {recipe.window_s:.0f} s")

    stage("data", data / "chunks_seeks.jsonl", make_data)

    def save_stage(loaded, source: Path, target: Path, report: dict) -> None:
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        loaded.model.save_pretrained(tmp)
        loaded.tokenizer.save_pretrained(tmp)
        for name in ("preprocessor_config.json", "streamvlm.json"):
            shutil.copy(source / name, tmp / name)
        (tmp / "stage.json").write_text(json.dumps(report, indent=2) + "\n")
        tmp.rename(target)

    def vision_stage():
        loaded = load_model(str(init))
        pairs = [(v, v.with_suffix(".truth.jsonl")) for v in sorted((data / "videos").glob("*.mp4"))]
        items = load_seconds(pairs[: recipe.warmup_videos], loaded.processor)
        held = load_seconds(pairs[-1:], loaded.processor)
        results["vision_warmup"] = vision_warmup(
            loaded.model,
            items,
            recipe.warmup_s,
            seed=recipe.seed,
            held_out=held,
            decay=recipe.warmup_decay,
            log=lambda s: None,
        )
        log(f"  {results['vision_warmup']}")
        save_stage(loaded, init, warm, results["vision_warmup"])

    stage("vision", warm / "stage.json", vision_stage)
    config = TrainConfig(
        model=str(warm),
        train_data=[str(data / "chunks.jsonl")],
        output_dir=str(sft),
        text_sink=recipe.text_sink,
        text_window=recipe.text_window,
        learning_rate=recipe.sft_lr,
        lr_scheduler="cosine",
        warmup_ratio=0.02,
        max_steps=recipe.sft_steps,
        batch_size=recipe.sft_batch,
        logging_steps=25,
        save_steps=150,
        freeze_vision=True,
        vision_cache=str(work / "features"),  # the frozen tower's output, computed once
        number_loss_weight=recipe.number_loss_weight,
        text_only_fraction=recipe.text_only_fraction,
        text_only_labels="numbers",
        time_shift_max=recipe.time_shift_max,
        streaming_mask=recipe.streaming_mask,
        vision_window=recipe.vision_window,
        text_rounds=recipe.text_rounds,
        num_workers=1,
        loader_nice=19,
        device="cpu",
        seed=recipe.seed,
    )
    pointer = [CopyPointer(layer=recipe.pointer_layer)] if recipe.pointer_supervision else []
    stage("sft", sft / "final" / "model.safetensors", lambda: train(config, pointer))
    replay = work / "replay"
    stream_defaults = {
        **STREAM_DEFAULTS,
        "vision_window": recipe.vision_window,
        "text_rounds": recipe.text_rounds,
        "text_sink": recipe.text_sink,
        "text_window": recipe.text_window,
    }

    def replay_stage(phase: str, source: Path, target: Path, streams: int, seconds: int):
        replay_run(target, source, phase, streams, seconds, None, world_defaults, stream_defaults)

    trained = sft / "final"
    if recipe.replay_streams:
        run = partial(replay_stage, "copy", trained, replay, recipe.replay_streams, recipe.replay_seconds)
        stage("replay", replay / "final" / "replay.json", run)
        trained = replay / "final"
    calls = work / "calls"
    if recipe.call_streams:
        if recipe.call_runs == 1:
            run = partial(replay_stage, "calls", trained, calls, recipe.call_streams, recipe.call_seconds)
        else:
            jobs = [
                {
                    "target": work / "calls-runs" / str(seed),
                    "model_dir": trained,
                    "phase": "calls",
                    "streams": recipe.call_streams,
                    "seconds": recipe.call_seconds,
                    "seed": seed,
                    "world_defaults": world_defaults,
                    "stream_defaults": stream_defaults,
                }
                for seed in call_seeds(recipe.call_runs)
            ]
            run = partial(averaged_replay, jobs, calls / "final")
        stage("calls", calls / "final" / "replay.json", run)
        trained = calls / "final"

    def ship():
        out = Path(recipe.out_dir)
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(trained, tmp)
        defaults = json.loads((tmp / "streamvlm.json").read_text())
        defaults["stream"] = stream_defaults
        defaults["world"] = world_defaults
        (tmp / "streamvlm.json").write_text(json.dumps(defaults, indent=2) + "\n")
        results["vision_warmup"] = json.loads((warm / "stage.json").read_text())
        results["sft"] = json.loads((sft / "metrics.json").read_text())
        if (tmp / "replay.json").is_file():
            results["replay"] = json.loads((tmp / "replay.json").read_text())
        results["held_out"] = evaluate_shipped(tmp, recipe)
        results["timings_s"] = timings
        results["recipe"] = asdict(recipe)
        (tmp / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
        (tmp / "README.md").write_text(model_card(results))
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)

    stage("ship", Path(recipe.out_dir) / "metrics.json", ship)
    return {"timings_s": timings, "recipe": asdict(recipe), **results}


def call_seeds(runs: int) -> list[int]:
    """World seeds of the first match of each `calls` run (100 apart: 7100100, 7100200, ...)."""
    from .replay import PHASES

    return [PHASES["calls"].seed + 100 * k for k in range(runs)]


def replay_run(
    target: Path,
    model_dir: Path,
    phase: str,
    streams: int,
    seconds: int,
    seed: int | None,
    world_defaults: dict,
    stream_defaults: dict,
) -> None:
    """One replay phase (`world.replay`) from `model_dir` to `target/final`, resumable from
    `target/checkpoint` (removed once the model is written)."""
    from .replay import replay_world_model

    replay_world_model(
        model_dir,
        target / "final",
        phase,
        streams,
        seconds,
        seed,
        checkpoint_dir=target / "checkpoint",
        world_defaults=world_defaults,
        stream_defaults=stream_defaults,
    )
    shutil.rmtree(target / "checkpoint", ignore_errors=True)


def averaged_replay(jobs: list[dict], out_dir: Path) -> None:
    """Run the replay `jobs` (`replay_run` arguments) side by side in worker processes, then write the
    mean of their weights to `out_dir` (`streamvlm_world.average`), its `replay.json` listing every run. A run
    already written is not run again; one killed part-way continues from its checkpoint."""
    import concurrent.futures
    import multiprocessing

    from .average import average_checkpoints

    todo = [job for job in jobs if not (job["target"] / "final" / "replay.json").is_file()]
    workers = max(1, min(len(todo), os.cpu_count() or 1))
    threads = max(1, (os.cpu_count() or 1) // workers)  # one process per core beats one on all cores
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        for done in [pool.submit(_replay_job, threads, job) for job in todo]:
            done.result()
    finals = [job["target"] / "final" for job in jobs]
    soup = out_dir.with_name(out_dir.name + ".soup")
    average_checkpoints(finals, soup)
    phases = json.loads((soup / "replay.json").read_text())
    phase = jobs[0]["phase"]
    runs = [json.loads((f / "replay.json").read_text())[phase] for f in finals]
    phases[phase] = {
        "streams": jobs[0]["streams"],
        "seconds": jobs[0]["seconds"],
        "averaged": len(runs),
        "runs": runs,
    }
    (soup / "replay.json").write_text(json.dumps(phases, indent=1) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    soup.rename(out_dir)


def _replay_job(threads: int, job: dict) -> None:
    """One `averaged_replay` run, in its own process of `threads` threads."""
    import torch

    torch.set_num_threads(threads)
    replay_run(**job)


def evaluate_shipped(model_dir: Path, recipe: Recipe) -> dict:
    """Streaming-policy scores of the model on a held-out match (the greedy defaults it ships with)."""
    from streamvlm.config import StreamConfig
    from streamvlm.models.load import load_model

    from .eval import stream_world

    loaded = load_model(str(model_dir))
    config = StreamConfig.from_dict(loaded.defaults.get("stream", {}))
    run = stream_world(loaded, config, recipe.world(EVAL_SEED), recipe.eval_seconds)
    return {"seed": EVAL_SEED, "seconds": run["seconds"], **run["metrics"]}


def model_card(results: dict) -> str:
    r, m = results["recipe"], results["held_out"]
    t = results["timings_s"]
    total_min = sum(t.values()) / 60
    stages = ", ".join(f"{k} {v / 60:.1f} min" for k, v in t.items())

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f} %"

    announced = "after each point" + (" and with each serve" if r.get("score_on_serve") else "")
    if r.get("score_change"):
        announced += (
            '; a point line repeats the score before it, then the new count ("Blue scores! Red three '
            'Blue three now Blue four")'
        )
    skills = (
        f"; each game, each team's miss probability drawn from {WorldConfig.miss_probability:g} +- "
        f"{r['skill_spread']:g}, so lopsided "
        "scores are common (the held-out matches below are even)"
        if r.get("skill_spread")
        else ""
    )
    picture = (
        "\nFrom a point to the next serve the conceding goal line glows in the scorer's colour (the\n"
        "score itself is never drawn)."
        if r.get("goal_light")
        else ""
    )
    extras = []
    if r.get("text_only_fraction"):
        extras.append(
            f"{pct(r['text_only_fraction'])} of the windows shown without frames (loss on numbers only)"
        )
    if r.get("streaming_mask"):
        extras.append(
            f"attention inside each window as the streaming policy leaves it ({r['text_rounds']} rounds "
            "kept whole, older commentary as text memory), not full attention"
        )
    if r.get("pointer_supervision"):
        extras.append(
            f"one head of layer {r.get('pointer_layer', 2)} taught to attend, before each score number, "
            "to that team's latest number"
        )
    if r.get("time_shift_max"):
        extras.append(f"time labels of half the windows shifted by up to {r['time_shift_max']} s")
    extras_line = "".join(f";\n   {e}" for e in extras)
    phases = results.get("replay") or {}
    copy, calls = phases.get("copy"), phases.get("calls")
    replay_line = (
        f"\n3. replay fine-tuning (`streamvlm world replay`), {t.get('replay', 0) / 60:.1f} min: "
        f"{copy['streams']} fresh matches x {copy['seconds']} s\n   streamed through the model's own "
        "cache with the true commentary as replies; only layer 2's queries and keys learn,\n   with the "
        "copy head told where the number to copy is among the cached rows."
        if copy
        else ""
    )
    if calls:
        matches = f"{calls['streams']} more matches x {calls['seconds']} s side by side"
        if calls.get("averaged"):
            matches = (
                f"{calls['averaged']} runs, each on {calls['streams']} other matches x {calls['seconds']} s "
                "side by side,\n   their weights averaged"
            )
        replay_line += (
            f"\n4. replay of the calls (`--phase calls`), {t.get('calls', 0) / 60:.1f} min: {matches},\n"
            "   every text weight learning at lr 2e-5, every other match drawn without the ball in the "
            "goal\n   (a point is then called from the goal light's onset)."
        )
    warm_lr = ", its lr falling linearly to 0" if r.get("warmup_decay") else ""
    seed_option = f" --seed {r['seed']}" if r.get("seed") else ""
    serve_score = m.get("serve_score_accuracy")
    serve_row = (
        f"| announced score right (matched serves) | {pct(serve_score)} |\n"
        if serve_score is not None
        else ""
    )
    score = m.get("score_accuracy") or 0.0
    limits = (
        "Every on-screen event (serve, return, point, silence) is commented at the right second, but the\n"
        "running score, which is only in earlier commentary, is often wrong: one slip (a wrong copy or\n"
        "increment, or a missed point) is carried forward until the next game starts at zero, and\n"
        "every announcement must be right for the score to be. The counted row is the ceiling its own\n"
        "point calls leave (one missed, extra or wrong-team point makes every later count wrong); the\n"
        "last row is how often a serve line repeats and a point line adds one to its own previous\n"
        "announcement (the carrying alone)."
        if score < 0.9
        else "The running score is carried from earlier commentary (the text window and memory); it is\n"
        "the model's weakest skill: one wrong number is carried on to the end of the stream (its games\n"
        "then end out of step too)."
    )
    return f"""# streamvlm world model

A {WORLD_PARAMS} Qwen2.5-VL-architecture model (text 256 x 4 layers, vision 2 blocks x 128) trained
by `streamvlm world train-model` on the procedural stream world, for streaming commentary of world
matches. It is the default model of `streamvlm run` and `streamvlm demo`.

## Data
{r["videos"]} matches x {r["video_seconds"]} s (world dataset seed {r["dataset_seed"]}, nicknames
{"on" if r["nicknames"] else "off"}, score announced {announced}{skills}), written in the
Inf-Stream-Train format and cut by `make-chunks` into {r["window_s"]:.0f} s windows with a
{r["stride_s"]:.0f} s stride; previous text cut to {r["text_sink"]} + {r["text_window"]} tokens.{picture}

## Recipe
1. vision warm-up (per-second event head{warm_lr}), {t.get("vision", 0) / 60:.1f} min: held-out accuracy
   {pct(results["vision_warmup"].get("held_out_accuracy"))};
2. SFT on the windows with frames, {r["sft_steps"]} steps x batch {r["sft_batch"]}, lr {r["sft_lr"]} cosine,
   number tokens weighted x{r["number_loss_weight"]:g}, vision frozen, {t.get("sft", 0) / 60:.1f} min, final
   train loss {results["sft"].get("train_loss", float("nan")):.3f}{extras_line}.{replay_line}

Total wall time {total_min:.0f} min on a 2-core CPU (stages: {stages}).

Command: `streamvlm world train-model{seed_option}` (resumable; see `streamvlm world train-model --help`).

## Held-out match (world seed {m["seed"]}, {m["seconds"]} s, streaming policy, greedy)
| metric | value |
|---|---|
| seconds exactly right | {pct(m["exact"])} |
| silence kept | {pct(m["silence_accuracy"])} |
| serves F1 | {m["serve"]["f1"]:.3f} |
| returns F1 | {m["return"]["f1"]:.3f} |
| points F1 (right second ±1, right team) | {m["point"]["f1"]:.3f} |
| announced score right (matched points) | {pct(m["score_accuracy"])} |
{serve_row}| score if its point lines were counted exactly from 0-0 | {pct(m.get("counted_score_accuracy"))} |
| announced scores following from its own previous one | {pct(m.get("stepped_score_accuracy"))} |

Streaming defaults (used when no option is given): vision window {r["vision_window"]} s,
{r["text_rounds"]} text rounds, text memory {r["text_sink"]} + {r["text_window"]} tokens, greedy decoding.

## Limits
{limits}
Wall times are from a 2-core machine.
"""
