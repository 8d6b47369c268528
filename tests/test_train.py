"""Training: the loss, a short run, resume after a kill, LoRA, two processes in sync."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_data import word_stream

from streamvlm.cli import main
from streamvlm.data.formats import DataError, StreamRecord, write_annotations
from streamvlm.data.sample import RenderOptions, StreamDataset, collate, number_tokens
from streamvlm.sources import synthetic_frames, write_video
from streamvlm.train import features
from streamvlm.train.config import load_config
from streamvlm.train.trainer import StreamTrainer, right_padded

PLAIN = SimpleNamespace(auxiliary=())  # a trainer's settings, without auxiliary objectives


@pytest.fixture(scope="module")
def chunks(tmp_path_factory, tiny_dir):
    root = tmp_path_factory.mktemp("train")
    write_video(root / "videos" / "a.mp4", synthetic_frames(40, 2, (56, 56)), fps=2)
    record = StreamRecord(
        "videos/a.mp4", 0.0, 40.0, query="Commentate.", previous="Red are the Foxes.", words=word_stream(40)
    )
    write_annotations([record], root / "long.jsonl")
    assert (
        main(
            [
                "make-chunks",
                str(root / "long.jsonl"),
                "--out",
                str(root / "chunks.jsonl"),
                "--model",
                str(tiny_dir),
                "--window",
                "6",
                "--stride",
                "3",
            ]
        )
        == 0
    )
    return root / "chunks.jsonl"


def write_config(path, tiny_dir, chunks, **extra):
    config = {
        "model": str(tiny_dir),
        "train_data": [str(chunks)],
        "output_dir": str(path.parent / "run"),
        "learning_rate": 2e-3,
        "lr_scheduler": "constant",
        "warmup_ratio": 0.0,
        "max_steps": 8,
        "save_steps": 2,
        "logging_steps": 1,
        "batch_size": 2,
        "device": "cpu",
        "bf16": False,
        **extra,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_loss_equals_transformers_loss_with_unit_weights(tiny, chunks):
    dataset = StreamDataset([chunks], tiny, RenderOptions())
    batch = collate([dataset[0], dataset[1]], pad_id=0)
    ours = StreamTrainer.compute_loss(PLAIN, tiny.model, dict(batch))
    reference = tiny.model(**{k: v for k, v in batch.items() if k != "loss_weights"}).loss
    assert torch.allclose(ours, reference, atol=1e-5)
    weighted = dict(batch)
    weighted["loss_weights"] = batch["loss_weights"] * 3.0  # a uniform weight changes nothing
    assert torch.allclose(StreamTrainer.compute_loss(PLAIN, tiny.model, weighted), reference, atol=1e-5)


def test_right_padded_batches_drop_their_mask_and_lose_nothing(tiny, chunks):
    """Causal attention never reaches right padding, so the trainer leaves the padding mask out (SDPA
    then runs its faster causal kernel): loss and logits of the real tokens are those with the mask."""
    dataset = StreamDataset([chunks], tiny, RenderOptions(text_only_fraction=0.5))
    lengths = [dataset[i]["input_ids"].numel() for i in range(len(dataset))]
    short, long = lengths.index(min(lengths)), lengths.index(max(lengths))
    assert lengths[short] < lengths[long]  # a batch with padding
    batch = collate([dataset[long], dataset[short]], pad_id=0)
    assert right_padded(batch["attention_mask"])
    assert not right_padded(batch["attention_mask"].flip(1))  # left padding keeps its mask
    assert not right_padded(None) and not right_padded(torch.ones(2, 1, 5, 5, dtype=torch.bool))
    ours = StreamTrainer.compute_loss(PLAIN, tiny.model, dict(batch))
    reference = tiny.model(**{k: v for k, v in batch.items() if k != "loss_weights"})
    assert torch.allclose(ours, reference.loss, atol=1e-5)
    unmasked = tiny.model(**{k: v for k, v in batch.items() if k not in ("loss_weights", "attention_mask")})
    real = batch["attention_mask"].bool()
    assert torch.allclose(unmasked.logits[real], reference.logits[real], atol=1e-5)


@dataclass
class NumberEmbeddings:
    """A toy auxiliary objective (`train.auxiliary`): its targets mark each number token (its own
    position, -1 elsewhere); its loss is the mean squared norm of those tokens' input embeddings."""

    weight: float = 0.5
    key = "toy_targets"
    name = "toy"

    def check(self, model):
        pass

    def enable(self, model):
        self.embeddings, self.watched = model.get_input_embeddings(), []

    def disable(self, model):
        del self.embeddings

    def sample_targets(self, ids, tokenizer):
        return torch.where(number_tokens(tokenizer)[ids], torch.arange(len(ids)), -1)[None]

    @contextmanager
    def watch(self, targets):
        self.watched.append(targets)
        seen = {}
        hook = self.embeddings.register_forward_hook(lambda m, i, out: seen.setdefault("out", out))
        try:
            yield
        finally:
            hook.remove()
        self.marked = None if targets is None else seen["out"][targets[:, 0] >= 0]

    def loss(self):
        return None if self.marked is None or not len(self.marked) else self.marked.pow(2).sum(-1).mean()


def test_the_trainer_adds_each_objectives_weighted_loss_and_collate_pads_its_targets(tiny, chunks):
    """The product seam without the world: a sample gets the objective's targets, a batch pads them with
    -1, and the training loss is the reply loss plus weight x the objective's loss of that forward pass."""
    toy = NumberEmbeddings()
    dataset = StreamDataset([chunks], tiny, RenderOptions(text_only_fraction=0.5, targets=(toy,)))
    samples = [dataset[i] for i in range(len(dataset))]
    lengths = [s["input_ids"].numel() for s in samples]
    long, short = samples[lengths.index(max(lengths))], samples[lengths.index(min(lengths))]
    batch = collate([long, short], pad_id=0)
    targets, n = batch["toy_targets"], short["input_ids"].numel()
    assert targets.shape == (2, 1, max(lengths)) and targets.dtype == torch.long and n < max(lengths)
    assert torch.equal(targets[0], long["toy_targets"])
    assert torch.equal(targets[1, :, :n], short["toy_targets"])
    assert (targets[1, :, n:] == -1).all()  # padding asks for nothing
    numbers = number_tokens(tiny.tokenizer)[batch["input_ids"]] & batch["attention_mask"].bool()
    assert numbers.sum() > 4 and torch.equal(targets[:, 0] >= 0, numbers)
    with torch.no_grad():
        reference = tiny.model.get_input_embeddings()(batch["input_ids"])[numbers].pow(2).sum(-1).mean()
    toy.enable(tiny.model)
    tiny.model.train()
    try:
        with torch.no_grad():
            plain = StreamTrainer.compute_loss(PLAIN, tiny.model, dict(batch))
            weighted = StreamTrainer.compute_loss(SimpleNamespace(auxiliary=(toy,)), tiny.model, dict(batch))
            assert len(toy.watched) == 1 and torch.equal(toy.watched[0], targets)
            tiny.model.eval()  # evaluation: the targets are dropped, nothing watched or added
            evaluated = StreamTrainer.compute_loss(SimpleNamespace(auxiliary=(toy,)), tiny.model, dict(batch))
    finally:
        tiny.model.eval()
        toy.disable(tiny.model)
    assert len(toy.watched) == 1
    assert reference > 0 and torch.allclose(weighted, plain + 0.5 * reference, atol=1e-5)
    assert torch.allclose(evaluated, plain, atol=1e-6)


def test_loader_workers_run_at_the_asked_niceness(tiny, chunks):
    class Probe(StreamDataset):
        def __getitem__(self, index):
            super().__getitem__(index)
            return os.nice(0)

    before = os.nice(0)
    dataset = Probe([chunks], tiny, RenderOptions(), worker_nice=7)
    assert dataset[0] == before  # read in this process: its priority is left alone
    loader = torch.utils.data.DataLoader(dataset, num_workers=1, batch_size=None)
    assert list(loader)[:3] == [min(before + 7, 19)] * 3
    assert os.nice(0) == before


def test_stored_vision_features_give_the_loss_of_decoded_frames(tiny, chunks, tmp_path):
    """`vision_cache`: the tower's output stored once per second of video, read back for each window,
    gives the same sample tokens and the same loss as decoding the frames and running the tower."""
    decoded = StreamDataset([chunks], tiny, RenderOptions())
    stored = StreamDataset([chunks], tiny, RenderOptions())
    assert stored.videos == [chunks.parent / "videos" / "a.mp4"]
    stored.use_features(features.build(tiny.model, tiny.processor, stored.videos, tmp_path / "f", 2, None))
    for index in (0, 3):  # windows from 0 s and from 9 s
        a, b = decoded[index], stored[index]
        assert "pixel_values_videos" in a and "pixel_values_videos" not in b
        for key in ("input_ids", "position_ids", "labels", "video_grid_thw"):
            assert torch.equal(a[key], b[key]), key
        with torch.no_grad():  # the tower on the decoded frames: what the stored features must be
            tower = tiny.model.model.get_video_features(a["pixel_values_videos"], a["video_grid_thw"])
        assert torch.allclose(torch.cat(tower.pooler_output), b["video_embeds"], atol=1e-5)
    batch = [decoded[0], decoded[3]], [stored[0], stored[3]]
    with torch.no_grad():
        losses = [StreamTrainer.compute_loss(PLAIN, tiny.model, collate(b, pad_id=0)) for b in batch]
    assert torch.allclose(losses[0], losses[1], atol=1e-5)


def test_stored_vision_features_are_reused_renewed_and_checked(tiny, chunks, tmp_path):
    dataset = StreamDataset([chunks], tiny, RenderOptions())
    root = tmp_path / "f"
    store = features.build(tiny.model, tiny.processor, dataset.videos, root, 2, None, workers=0)
    file = store.file(dataset.videos[0])
    first, before = file.stat().st_mtime_ns, load_file(file)["embeds"]
    features.build(tiny.model, tiny.processor, dataset.videos, root, 2, None)
    assert file.stat().st_mtime_ns == first  # same tower: nothing computed again
    visual = tiny.model.model.visual
    weight = next(visual.parameters())
    with torch.no_grad():
        weight.add_(0.01)
    try:  # another tower: computed again, and different
        features.build(tiny.model, tiny.processor, dataset.videos, root, 2, None)
    finally:
        with torch.no_grad():
            weight.sub_(0.01)
    assert file.stat().st_mtime_ns != first
    assert not torch.allclose(load_file(file)["embeds"], before, atol=1e-4)
    with pytest.raises(DataError, match="asks for 38-42 s"):
        store.window(dataset.videos[0], 38.0, 4)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not ours to fill"):
        features.build(tiny.model, tiny.processor, dataset.videos, tmp_path / "other", 2, None)
    off = StreamRecord("videos/a.mp4", 0.5, 6.5, query="q", previous="", words=word_stream(6))
    write_annotations([off], chunks.parent / "off.jsonl")
    with pytest.raises(DataError, match="start on a whole second"):
        StreamDataset([chunks.parent / "off.jsonl"], tiny, RenderOptions()).use_features(store)


def test_run_with_stored_vision_features(tmp_path, tiny_dir, chunks):
    """`vision_cache` end to end (bf16 autocast, a loader worker); a learning tower is refused."""
    config = write_config(
        tmp_path / "c.yaml",
        tiny_dir,
        chunks,
        max_steps=2,
        bf16=True,
        num_workers=1,
        vision_cache=str(tmp_path / "features"),
    )
    assert main(["train", str(config)]) == 0
    stored = list((tmp_path / "features").glob("*.safetensors"))
    assert len(stored) == 1 and load_file(stored[0])["embeds"].dtype == torch.bfloat16
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    assert main(["train", str(config), "freeze_vision=false"]) == 2  # a learning tower: refused


def test_short_run_learns_and_writes_a_loadable_checkpoint(tmp_path, tiny_dir, chunks):
    from streamvlm import StreamConfig, StreamingSession, load_model
    from streamvlm.sources import ArraySource

    config = write_config(
        tmp_path / "c.yaml",
        tiny_dir,
        chunks,
        max_steps=30,
        save_steps=100,
        eval_data=[str(chunks)],
        eval_steps=30,
    )
    assert main(["train", str(config)]) == 0
    run = tmp_path / "run"
    losses = [json.loads(line) for line in (run / "losses.jsonl").read_text().splitlines()]
    train_losses = [row["loss"] for row in losses if "loss" in row]
    assert train_losses[-1] < 0.5 * train_losses[0]
    assert any("eval_loss" in row for row in losses) and (run / "loss.png").stat().st_size > 1000
    loaded = load_model(str(run / "final"))
    assert loaded.processor.max_pixels == load_model(str(tiny_dir)).processor.max_pixels
    session = StreamingSession(loaded, StreamConfig(greedy=True, max_new_tokens=4))
    assert len(list(session.run(ArraySource(synthetic_frames(3, 2, (56, 56)), 2)))) == 3


def _train_cmd(config, *overrides):
    return [sys.executable, "-m", "streamvlm", "train", str(config), *overrides]


def test_resume_after_kill_matches_an_uninterrupted_run(tmp_path, tiny_dir, chunks):
    _mk(tmp_path / "whole")
    whole = write_config(tmp_path / "whole" / "c.yaml", tiny_dir, chunks)
    subprocess.run(_train_cmd(whole), check=True, capture_output=True, timeout=300)

    _mk(tmp_path / "killed")
    killed = write_config(tmp_path / "killed" / "c.yaml", tiny_dir, chunks)
    run = tmp_path / "killed" / "run"
    proc = subprocess.Popen(_train_cmd(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not (run / "checkpoint-4" / "trainer_state.json").is_file():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "final").exists()
    shutil.rmtree(
        run / "checkpoint-6", ignore_errors=True
    )  # a checkpoint the kill may have left half-written
    r = subprocess.run(_train_cmd(killed), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming from" in r.stderr
    a = load_file(tmp_path / "whole" / "run" / "final" / "model.safetensors")
    b = load_file(run / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert not all(torch.equal(a[k], load_file(tiny_dir / "model.safetensors")[k]) for k in a)


def test_trainer_checkpoint_keys_still_need_conversion(tiny, tmp_path):
    """transformers saves the pre-v5 key layout that its Trainer cannot load back (see train/compat.py).
    When this fails, transformers changed: drop the work-around in compat.py."""
    tiny.model.save_pretrained(tmp_path / "ckpt")
    saved = set(load_file(tmp_path / "ckpt" / "model.safetensors"))
    assert saved != set(tiny.model.state_dict())
    missing, _ = tiny.model.load_state_dict(load_file(tmp_path / "ckpt" / "model.safetensors"), strict=False)
    assert len(missing) > 1


def _mk(path):
    path.mkdir(parents=True, exist_ok=True)
    return ()


def test_lora_trains_adapters_only_and_merges(tmp_path, tiny_dir, chunks):
    from streamvlm.models import load_model
    from streamvlm.train.trainer import prepare_model

    config = load_config(
        str(write_config(tmp_path / "c.yaml", tiny_dir, chunks)), ["lora.r=4", "max_steps=3"]
    )
    _, model = prepare_model(config)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable) and not any("visual" in n for n in trainable)
    assert main(["train", str(tmp_path / "c.yaml"), "lora.r=4", "max_steps=3"]) == 0
    merged = load_model(str(tmp_path / "run" / "final"))
    assert not any("lora" in k for k in merged.model.state_dict())


def test_two_processes_step_in_sync(tmp_path, tiny_dir, chunks):
    config = write_config(
        tmp_path / "c.yaml", tiny_dir, chunks, max_steps=4, save_steps=100, sync_log=True, batch_size=1
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "29517",
        "-m",
        "streamvlm",
        "train",
        str(config),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    logs = [
        [json.loads(line) for line in (tmp_path / "run" / f"sync-rank{rank}.jsonl").read_text().splitlines()]
        for rank in (0, 1)
    ]
    assert [row["step"] for row in logs[0]] == [row["step"] for row in logs[1]] == [1, 2, 3, 4]
    assert all(abs(a["checksum"] - b["checksum"]) < 1e-6 for a, b in zip(*logs, strict=True))
    assert logs[0][0]["checksum"] != logs[0][-1]["checksum"]  # the weights did move


def test_bad_config_is_one_line(tmp_path, tiny_dir, chunks, capsys):
    config = write_config(tmp_path / "c.yaml", tiny_dir, chunks)
    assert main(["train", str(config), "learning_rat=1"]) == 2
    assert "unknown training option(s): learning_rat" in capsys.readouterr().err
    assert main(["train", str(config), "train_data=missing.jsonl"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", str(config), "text_data=[missing-text.jsonl]"]) == 2
    assert "missing-text.jsonl does not exist" in capsys.readouterr().err
    assert main(["train", str(config), "streaming_mask=true", "text_rounds=0"]) == 2
    assert "text_rounds must be at least 1 round" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2


def test_shipped_7b_recipe_configs_describe_the_paper_recipe():
    from pathlib import Path

    root = Path(__file__).parent.parent / "configs"
    config = load_config(str(root / "qwen2_5vl_7b_sft.yaml"))
    deepspeed = json.loads((Path(__file__).parent.parent / config.deepspeed).read_text())
    launchers = {
        name: yaml.safe_load((root / "accelerate" / f"{name}.yaml").read_text())
        for name in ("deepspeed_zero3", "fsdp")
    }
    assert deepspeed["zero_optimization"]["stage"] == 3
    for launcher in launchers.values():
        assert launcher["num_processes"] * config.batch_size * config.grad_accum == 512
        assert launcher["mixed_precision"] == "bf16"
    assert launchers["deepspeed_zero3"]["deepspeed_config"]["deepspeed_config_file"] == config.deepspeed
    assert (config.learning_rate, config.lr_scheduler, config.warmup_ratio, config.epochs) == (
        1e-5,
        "cosine",
        0.03,
        1,
    )
    assert config.freeze_vision and config.gradient_checkpointing and config.bf16 is True
