"""The shipped model's recipe end to end, in miniature: every stage runs and is skipped when done."""

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from streamvlm_world.recipe import Recipe, train_world_model


def test_miniature_recipe_runs_every_stage_and_resumes(tmp_path):
    recipe = Recipe(
        work_dir=str(tmp_path / "work"),
        out_dir=str(tmp_path / "model"),
        videos=2,
        video_seconds=24,
        window_s=8,
        stride_s=8,
        warmup_s=1,
        warmup_videos=1,
        sft_steps=2,
        sft_batch=2,
        score_change=True,
        eval_seconds=6,
        replay_streams=1,
        replay_seconds=4,
        call_streams=2,
        call_seconds=3,
        call_runs=2,
    )
    logs: list[str] = []
    result = train_world_model(recipe, log=logs.append)
    work = tmp_path / "work"
    assert set(result["timings_s"]) == {"init", "data", "vision", "sft", "replay", "calls", "ship"}
    # the training matches vary the teams' skills game by game; the held-out world the model is made for
    # (its streamvlm.json, the evaluation) does not
    assert json.loads((work / "data" / "world.json").read_text())["config"]["skill_spread"] == 0.15
    config = json.loads((work / "sft" / "train_config.json").read_text())
    assert config["text_data"] == [] and not (work / "data" / "commentary").exists()
    model = tmp_path / "model"
    card = (model / "README.md").read_text()
    assert "one head of layer 2 taught to attend, before each score number" in card  # the copy head
    assert "warm-up on commentary" not in card and "1. vision warm-up" in card
    assert "its lr falling linearly to 0" in card and "`streamvlm world train-model` (resumable" in card
    assert 0 < json.loads((work / "warm" / "stage.json").read_text())["last_lr"] < 1e-3  # warm-up lr decayed
    defaults = json.loads((model / "streamvlm.json").read_text())
    assert defaults["stream"]["text_window"] == recipe.text_window
    assert defaults["world"]["score_change"] is True and "now Blue four" in card  # the world it learned
    assert "skill_spread" not in defaults["world"] and "0.19 +- 0.15" in card
    assert (model / "metrics.json").is_file() and (model / "model.safetensors").is_file()
    phases = json.loads((model / "replay.json").read_text())
    assert phases["copy"]["log"]["rounds"] == 4 and phases["calls"]["averaged"] == 2
    runs = phases["calls"]["runs"]
    assert [r["seed"] for r in runs] == [7_100_100, 7_100_200]
    assert [r["log"]["rounds"] for r in runs] == [6, 6]
    assert runs[1]["log"]["losses"][0]["stream"] == "world seed 7100200"
    # the shipped weights are the mean of the two calls runs' (each fine-tuned from the copy phase)
    weights = "final/model.safetensors"
    one, two = (load_file(work / "calls-runs" / seed / weights) for seed in ("7100100", "7100200"))
    shipped, copy = load_file(model / "model.safetensors"), load_file(work / "replay" / weights)
    moved = [k for k in one if not torch.equal(one[k], two[k])]
    assert moved and all(not torch.equal(one[k], copy[k]) for k in moved)
    for name in one:
        expected = ((one[name].double() + two[name].double()) / 2).to(one[name].dtype)
        torch.testing.assert_close(shipped[name], expected, atol=1e-6, rtol=0)
    assert "replay fine" in card and "2 runs, each on 2 other matches" in card
    logs.clear()
    train_world_model(recipe, log=logs.append)  # a second run finds every stage done
    assert sum("already done" in line for line in logs) == 7, logs

    # one calls run (--call-runs 1): that run's model is shipped, nothing averaged
    shutil.rmtree(work / "calls")
    single = tmp_path / "model1"
    train_world_model(replace(recipe, call_runs=1, out_dir=str(single)), log=logs.append)
    calls = json.loads((single / "replay.json").read_text())["calls"]
    assert calls["seed"] == 7_100_100 and calls["log"]["rounds"] == 6 and "averaged" not in calls
    ran = load_file(work / "calls" / weights)
    assert all(torch.equal(w, ran[k]) for k, w in load_file(single / "model.safetensors").items())
    assert "2 more matches x 3 s" in (single / "README.md").read_text()


def test_every_train_model_option_reaches_the_recipe(monkeypatch, tmp_path):
    from streamvlm.cli import main
    from streamvlm_world import recipe as recipe_module

    seen = []
    monkeypatch.setattr(recipe_module, "train_world_model", lambda r, log: seen.append(r) or {})
    argv = ["world", "train-model", "--work-dir", str(tmp_path / "w"), "--out-dir", str(tmp_path / "m")]
    argv += ["--videos", "3", "--video-seconds", "30", "--sft-steps", "5", "--sft-batch", "3"]
    argv += ["--warmup-s", "4", "--text-only-fraction", "0.5"]
    argv += ["--time-shift-max", "9", "--pointer-layer", "1", "--eval-seconds", "12"]
    argv += ["--nicknames", "--no-score-on-serve", "--no-goal-light", "--no-score-change"]
    argv += ["--no-pointer-supervision", "--streaming-mask", "--replay-streams", "2"]
    argv += ["--replay-seconds", "7", "--call-streams", "3", "--call-seconds", "5", "--call-runs", "3"]
    argv += ["--seed", "3", "--skill-spread", "0.05", "--no-warmup-decay"]
    assert main(argv) == 0
    expected = Recipe(
        work_dir=str(tmp_path / "w"),
        out_dir=str(tmp_path / "m"),
        videos=3,
        video_seconds=30,
        sft_steps=5,
        sft_batch=3,
        warmup_s=4.0,
        text_only_fraction=0.5,
        time_shift_max=9,
        pointer_layer=1,
        eval_seconds=12,
        nicknames=True,
        score_on_serve=False,
        goal_light=False,
        score_change=False,
        pointer_supervision=False,
        streaming_mask=True,
        replay_streams=2,
        replay_seconds=7,
        call_streams=3,
        call_seconds=5,
        call_runs=3,
        seed=3,
        skill_spread=0.05,
        warmup_decay=False,
    )
    assert seen == [expected]


def test_contradicting_options_are_refused_before_any_stage(tmp_path, capsys):
    from streamvlm.cli import main

    argv = ["world", "train-model", "--work-dir", str(tmp_path / "w"), "--out-dir", str(tmp_path / "m")]
    assert main([*argv, "--call-runs", "0"]) != 0
    assert main([*argv, "--call-runs", "2", "--call-streams", "101"]) != 0
    assert "--call-runs" in capsys.readouterr().err
    assert main([*argv, "--sft-batch", "0"]) != 0
    assert "--sft-batch" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()  # refused before any stage ran


@pytest.mark.parametrize("decay", [False, True])
def test_vision_warmup_learning_rate_stays_constant_or_falls_to_zero(decay):
    from streamvlm.models import load_model
    from streamvlm_world.plugin import shipped_model_dir
    from streamvlm_world.warmup import CLASSES, vision_warmup

    loaded = load_model(str(shipped_model_dir()))  # a world-sized vision tower, trained in memory only
    rng = np.random.default_rng(0)
    size = loaded.processor.target_size(112, 112)
    items = []
    for k in range(8):
        pixels, grid = loaded.processor(rng.integers(0, 256, (2, 112, 112, 3), dtype=np.uint8), size=size)
        items.append((pixels, grid, k % len(CLASSES)))
    result = vision_warmup(loaded.model, items, 2.0, batch=4, lr=1e-3, decay=decay, log=lambda s: None)
    assert result["steps"] >= 2 and result["wall_s"] >= 2.0
    if decay:  # the last step started in the last of the 2 s, so its lr is close to 0
        assert 0 < result["last_lr"] < 0.25e-3
    else:
        assert result["last_lr"] == 1e-3
