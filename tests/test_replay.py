"""Replay fine-tuning (`train.replay`, `streamvlm world replay`): training on the engine's own view.

A random world-architecture model: the tests check that a forced round is exactly what the engine
computes while streaming, that only the named parameters learn, that a killed run resumes to the
same weights, and that the copy head's pointer loss (`streamvlm_world.pointer`) reads a cached
forward pass as it reads a full one; and that averaged checkpoints (`train.average`, the recipe's
calls runs) hold their mean.
"""

import json
import re
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import record_logits
from transformers import DynamicCache

from streamvlm.cache.layout import Kind
from streamvlm.cli import main
from streamvlm.config import StreamConfig
from streamvlm.engine import StreamingSession
from streamvlm.errors import StreamvlmError
from streamvlm.models import load_model
from streamvlm.train import forcing
from streamvlm.train.forcing import force
from streamvlm.train.replay import ReplayConfig, ReplayStream, replay_train
from streamvlm_world.config import WorldConfig
from streamvlm_world.model import init_world_checkpoint
from streamvlm_world.pointer import CopyPointer
from streamvlm_world.replay import PHASES, world_streams
from streamvlm_world.stream import World

WORLD = {"nicknames": False, "score_on_serve": True, "goal_light": True, "score_change": True}
SMALL = StreamConfig(vision_window=3, text_rounds=3, text_sink=6, text_window=10, greedy=True)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    extra = {"world": {**WORLD, "eval_seed": 9_000_001, "demo_seed": 9_000_002}}
    return init_world_checkpoint(tmp_path_factory.mktemp("world-model"), seed=0, extra=extra)


def test_a_forced_round_is_what_the_engine_computes_while_streaming(world_dir):
    """`force` (gradients on, the reply fed in its own round) gives, at the end of each round's
    assistant header and of its reply, the logits of `step(reply=...)` + feeding that reply, through
    evictions, moves into the text memory and re-indexed positions."""
    loaded = load_model(str(world_dir))
    world = World(WorldConfig(seed=3, **WORLD))
    seconds = list(world.seconds(14))
    engine = StreamingSession(loaded, SMALL)
    engine.trace = record_logits(engine)
    for frames, row in seconds:
        engine.step(frames, reply=row["text"])
        with torch.inference_mode():
            engine.feed()  # the reply in its own round
    assert engine.evictions > 0
    expected = torch.stack([logits for _, _, logits in engine.trace])

    forcing = StreamingSession(loaded, SMALL)
    got = []
    for frames, row in seconds:
        forced = force(forcing, frames, row["text"])
        assert forced.logits.requires_grad and forced.logits.shape[0] == forced.ids.numel()
        kinds = [s.kind for s in forced.spans for _ in range(s.n)]
        header_end = max(i for i, k in enumerate(kinds) if k == Kind.REPLY_OPEN)
        got += [forced.logits[header_end], forced.logits[-1]]
        forcing.cache.detach()
    torch.testing.assert_close(torch.stack(got).detach(), expected, atol=1e-4, rtol=1e-4)
    assert any("scores" in row["text"] for _, row in seconds)  # a score was moved to the memory too
    generating = StreamingSession(loaded, SMALL)
    generating.step(seconds[0][0])  # its reply's last tokens wait for the next second's prefill
    with pytest.raises(RuntimeError, match="every earlier token"):
        force(generating, seconds[1][0], "")


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_replay_trains_only_the_named_parameters_and_resumes_to_the_same_weights(world_dir, tmp_path):
    config = replace(PHASES["copy"].config, lr=1e-3, accumulate=2)  # layer 2's queries and keys
    assert PHASES["copy"].objectives == (CopyPointer(layer=2, head=0),)
    world_defaults = load_model(str(world_dir)).defaults["world"]
    with pytest.raises(StreamvlmError, match="trainable"):  # no default: the caller names them
        replay_train(load_model(str(world_dir)), [], SMALL, ReplayConfig(lr=1e-3))

    def run(streams: int, checkpoint=None):
        loaded = load_model(str(world_dir))
        streams = world_streams(world_defaults, [11, 12][:streams], 24)
        log = replay_train(loaded, streams, SMALL, config, checkpoint, objectives=PHASES["copy"].objectives)
        return loaded.model, log

    before = snapshot(load_model(str(world_dir)).model)
    model, log = run(2)
    after = snapshot(model)
    trained = {n for n in after if not torch.equal(after[n], before[n])}
    assert trained and all(any(t in n for t in config.trainable) for n in trained)
    assert log.streams_done == 2 and log.rounds == 48 and log.steps == 24
    assert all(entry["pointer_loss"] > 0 for entry in log.losses)  # scores were copied
    assert not any(p.requires_grad for p in model.parameters())  # left frozen for inference

    checkpoint = tmp_path / "checkpoint"
    run(1, checkpoint)  # "killed" after the first stream
    assert json.loads((checkpoint / "state.json").read_text())["streams_done"] == 1
    resumed, log = run(2, checkpoint)
    assert log.streams_done == 2 and len(log.losses) == 2
    for name, p in snapshot(resumed).items():
        torch.testing.assert_close(p, after[name], atol=1e-6, rtol=0)


def test_interleaved_streams_take_turns_and_resume_by_group(world_dir, tmp_path, monkeypatch):
    """With `interleave` 2 a round of each stream in turn (a shorter stream drops out when it ends);
    a run killed after the first pair resumes to the weights of an uninterrupted one."""
    config = ReplayConfig(lr=1e-3, accumulate=2, interleave=2, trainable=("model.language_model",))
    world_defaults = load_model(str(world_dir)).defaults["world"]
    forced = []

    def spy(session, frames, reply, start=None, end=None, context=None):
        forced.append((session.config.previous_text, start))
        return force(session, frames, reply, start, end, context)

    def stream(name, seconds):
        second = next(World(WorldConfig(seed=4, **WORLD)).seconds(1))
        return ReplayStream(
            name, [(second.frames, t, t + 1.0, "") for t in range(seconds)], previous_text=name
        )

    monkeypatch.setattr(forcing, "force", spy)
    log = replay_train(load_model(str(world_dir)), [stream("a", 3), stream("b", 2)], SMALL, config)
    assert forced == [("a", 0.0), ("b", 0.0), ("a", 1.0), ("b", 1.0), ("a", 2.0)]
    # steps after rounds 2 and 4, and a last one for round 5 as the group ends
    assert log.rounds == 5 and log.steps == 3 and [e["rounds"] for e in log.losses] == [3, 2]
    assert all(set(e) == {"stream", "rounds", "loss"} for e in log.losses)  # no objectives, no other loss
    monkeypatch.undo()

    def run(streams: int, checkpoint=None):
        loaded = load_model(str(world_dir))
        odd = replace(config, accumulate=4)  # 2 x 5 rounds a group: each ends between two steps
        replay_train(
            loaded, world_streams(world_defaults, [11, 12, 13, 14][:streams], 5), SMALL, odd, checkpoint
        )
        return snapshot(loaded.model)

    after = run(4)
    checkpoint = tmp_path / "checkpoint"
    run(2, checkpoint)  # "killed" after the first pair
    assert json.loads((checkpoint / "state.json").read_text())["streams_done"] == 2
    for name, p in run(4, checkpoint).items():
        torch.testing.assert_close(p, after[name], atol=1e-6, rtol=0)


def test_calls_streams_hide_the_ball_in_the_goal_in_every_other_match(world_dir):
    """Only the seconds of a point look different from the plain world (a white ball gone from the
    lit goal; the codec's small drift on the frames after it aside), and only in the 2nd, 4th ... match."""
    world_defaults = load_model(str(world_dir)).defaults["world"]
    streams = list(world_streams(world_defaults, [5, 6], 40, hide_goal_ball=True))
    assert [s.name for s in streams] == ["world seed 5", "world seed 6 (no ball in the goal)"]
    for seed, stream in zip([5, 6], streams, strict=True):
        plain = list(world_streams(world_defaults, [seed], 40))[0]
        changed = [
            a[1]
            for a, b in zip(stream.seconds, plain.seconds, strict=True)
            if np.abs(a[0].astype(int) - b[0]).max() > 100
        ]
        rows = list(World(WorldConfig.for_model(world_defaults, seed)).rows(40))
        points = [row["start"] for row in rows if any(e["kind"] == "point" for e in row["events"])]
        assert points and changed == (points if seed == 6 else [])


def test_the_pointer_loss_of_a_cached_forward_pass_equals_the_full_pass(world_dir):
    """What replay asks of the copy head: the targets of a round's new tokens count every cached row."""
    loaded = load_model(str(world_dir))
    model = loaded.model
    torch.manual_seed(0)
    n, new = 40, 9
    ids = torch.randint(0, 200, (1, n))
    positions = torch.arange(n).expand(3, 1, n)
    asked = torch.full((1, 1, n), -1)
    asked[0, 0, -new:] = torch.randint(0, n - new, (new,))
    asked[0, 0, -3] = -1  # a position without a target
    copy = CopyPointer(layer=2, head=0)
    copy.enable(model)
    try:
        with torch.no_grad(), copy.watch(asked):
            model(input_ids=ids, position_ids=positions, use_cache=False)
        full = copy.loss()
        cache = DynamicCache()
        with torch.no_grad():
            model(input_ids=ids[:, :-new], position_ids=positions[..., :-new], cache=cache)
            with copy.watch(asked[..., -new:]):
                model(input_ids=ids[:, -new:], position_ids=positions[..., -new:], cache=cache)
        cached = copy.loss()
    finally:
        copy.disable(model)
    assert full is not None and float(full) > 0
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)


def test_world_replay_command_writes_the_model_and_rejects_other_models(
    world_dir, tiny_dir, tmp_path, capsys
):
    out = tmp_path / "replayed"
    assert main(["world", "replay", str(world_dir), str(out), "--streams", "1", "--seconds", "4"]) == 0
    assert (out / "model.safetensors").is_file() and (out / "streamvlm.json").is_file()
    assert json.loads((out / "replay.json").read_text())["copy"]["log"]["rounds"] == 4
    assert not (tmp_path / "replayed.replay-checkpoint").exists()
    calls = ["world", "replay", str(out), str(out), "--phase", "calls", "--streams", "2", "--seconds", "3"]
    assert main(calls) == 0  # the calls phase on top, in place: both phases' logs kept
    phases = json.loads((out / "replay.json").read_text())
    assert phases["copy"]["log"]["rounds"] == 4 and phases["calls"]["log"]["rounds"] == 6
    assert [e["stream"] for e in phases["calls"]["log"]["losses"]] == [
        "world seed 7100100",
        "world seed 7100101 (no ball in the goal)",
    ]
    assert load_model(str(out)).defaults["world"] == load_model(str(world_dir)).defaults["world"]
    capsys.readouterr()
    assert main(["world", "replay", str(tiny_dir), str(tmp_path / "x"), "--seconds", "2"]) == 2
    assert "not a world model" in capsys.readouterr().err


def test_averaging_checkpoints_writes_their_mean_and_refuses_other_models(world_dir, tiny_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    from streamvlm_world.average import average_checkpoints

    weights = load_file(world_dir / "model.safetensors")
    dirs = []
    for k in range(3):  # three "fine-tunes": the weights shifted by k
        d = tmp_path / f"run{k}"
        shutil.copytree(world_dir, d)
        save_file({n: w + k for n, w in weights.items()}, d / "model.safetensors", metadata={"format": "pt"})
        dirs.append(d)
    out = average_checkpoints(dirs, tmp_path / "soup")
    mean = load_file(out / "model.safetensors")
    for name, w in weights.items():
        torch.testing.assert_close(mean[name], w + 1, atol=1e-5, rtol=1e-3)  # (0 + 1 + 2) / 3
    assert (out / "streamvlm.json").read_text() == (world_dir / "streamvlm.json").read_text()
    assert load_model(str(out)).defaults["world"]["score_change"] is True  # a loadable model
    with pytest.raises(StreamvlmError, match="other tensors"):
        average_checkpoints([world_dir, tiny_dir], tmp_path / "mixed")
    name = sorted(weights)[0]
    save_file({**weights, name: weights[name][:1].clone()}, dirs[1] / "model.safetensors")
    with pytest.raises(StreamvlmError, match=re.escape(name)):
        average_checkpoints(dirs, tmp_path / "mixed")
    assert not (tmp_path / "mixed").exists()


def test_replay_adds_each_objectives_weighted_loss_and_logs_it(world_dir, monkeypatch):
    """Each round back-propagates the reply loss plus weight x each objective's loss of that round's
    forward pass, and the stream's log has their means (a toy objective: no world in the seam)."""
    from test_train import NumberEmbeddings

    class Noted(NumberEmbeddings):
        def loss(self):
            value = super().loss()
            self.extras.append(None if value is None else float(value.detach()))
            return value

    toy = Noted(weight=3.0)
    toy.extras = []
    totals = []
    backward = torch.Tensor.backward
    monkeypatch.setattr(
        torch.Tensor, "backward", lambda t, *a, **k: totals.append(float(t.detach())) or backward(t, *a, **k)
    )
    world_defaults = load_model(str(world_dir)).defaults["world"]
    config = ReplayConfig(lr=1e-3, accumulate=1, trainable=("model.language_model",))
    streams = world_streams(world_defaults, [11], 5)
    log = replay_train(load_model(str(world_dir)), streams, SMALL, config, objectives=(toy,))
    assert len(totals) == len(toy.extras) == log.rounds == 5
    assert all(x is not None and x > 0 for x in toy.extras)  # numbers said in every round's turn
    replies = [t - 3.0 * x for t, x in zip(totals, toy.extras, strict=True)]
    entry = log.losses[0]
    assert set(entry) == {"stream", "rounds", "loss", "toy_loss"}
    assert entry["loss"] == pytest.approx(sum(replies) / 5, rel=1e-4)
    assert entry["toy_loss"] == pytest.approx(sum(toy.extras) / 5, rel=1e-6)
