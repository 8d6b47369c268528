"""Pointer supervision: its targets, its loss against eager attention, and a training run with it."""

import json
from types import SimpleNamespace

import pytest
import torch
from test_train import chunks, write_config  # noqa: F401 (fixture)

from streamvlm.cli import main
from streamvlm.data.sample import RenderOptions, StreamDataset, collate, pointer_targets
from streamvlm.models import load_model
from streamvlm.train import pointer
from streamvlm.train.trainer import StreamTrainer


def test_targets_point_at_the_latest_number_after_each_word(tiny):
    tokenizer = tiny.tokenizer
    pieces = [" Red", " 3", " Blue", " 4", " serves", " Red", " 5", " returns", " Blue", " 6"]
    ids, starts = [], []
    for piece in pieces:
        starts.append(len(ids))
        ids += tokenizer.encode(piece, add_special_tokens=False)
    last = {
        p: starts[i] + len(tokenizer.encode(p, add_special_tokens=False)) - 1 for i, p in enumerate(pieces)
    }
    got = pointer_targets(torch.tensor(ids), tokenizer, ["Red", "Blue"])
    expected = torch.full((2, len(ids)), -1)
    for team, number, later in ((0, " 3", " 5"), (1, " 4", " 6")):
        expected[team, last[number] :] = last[number]
        expected[team, last[later] :] = last[later]
    assert torch.equal(got, expected)


def test_loss_is_minus_log_of_the_eager_attention_weight(tiny_dir):
    model = load_model(str(tiny_dir)).model
    text = model.config.text_config
    ids = torch.randint(0, 200, (2, 40))
    heads = pointer.supervised_heads(text.num_attention_heads, 2)
    layer = text.num_hidden_layers - 1
    targets = torch.full((2, 2, 40), -1)
    gen = torch.Generator().manual_seed(0)
    for b in range(2):
        for q in range(5, 40):
            targets[b, :, q] = torch.randint(0, q + 1, (2,), generator=gen)
    with torch.no_grad():
        model.set_attn_implementation("eager")
        eager = model(input_ids=ids, output_attentions=True)
        pointer.enable(model)
        model.train()  # as the trainer calls it (only in training)
        with pointer.supervise(targets, layer, heads):
            ours = model(input_ids=ids)
        model.eval()
        pointer.disable(model)
    weights = eager.attentions[layer]
    reference = torch.cat(
        [
            -torch.log(weights[b, h, q, targets[b, i, q]])[None]
            for i, h in enumerate(heads)
            for b in range(2)
            for q in range(40)
            if targets[b, i, q] >= 0
        ]
    ).mean()
    assert torch.allclose(pointer.loss(), reference, atol=1e-4)
    assert torch.allclose(ours.logits, eager.logits, atol=1e-4)  # the forward pass is unchanged
    assert model.config._attn_implementation == "sdpa"


def test_heads_are_spread_and_checked():
    assert pointer.supervised_heads(4, 2) == (0, 2)
    assert pointer.supervised_heads(4, 1) == (0,)
    with pytest.raises(Exception, match="pointer supervision"):
        pointer.supervised_heads(2, 3)


def test_trainer_adds_the_weighted_pointer_loss(tiny_dir, chunks):  # noqa: F811 (fixture)
    loaded = load_model(str(tiny_dir))
    # the first digit of each "Time=3.0-4.0s" label follows "="
    dataset = StreamDataset([chunks], loaded, RenderOptions(pointer_words=("=",)))
    batch = collate([dataset[0], dataset[1]], pad_id=0)
    assert batch["pointer_targets"].shape == (2, 1, batch["input_ids"].shape[1])
    assert (batch["pointer_targets"] >= 0).any()
    model = loaded.model
    plain = StreamTrainer.compute_loss(SimpleNamespace(pointer=None), model, dict(batch))
    pointer.enable(model)
    model.train()
    with torch.no_grad():
        weighted = StreamTrainer.compute_loss(SimpleNamespace(pointer=(1, (0,), 2.0)), model, dict(batch))
    extra = pointer.loss()
    model.eval()
    pointer.disable(model)
    assert extra is not None and extra > 0
    assert torch.allclose(weighted, plain + 2.0 * extra, atol=1e-4)


def test_training_with_pointer_supervision_runs_and_saves_a_plain_model(tmp_path, tiny_dir, chunks):  # noqa: F811
    config = write_config(
        tmp_path / "c.yaml", tiny_dir, chunks, max_steps=3, pointer_words=["Red", "Blue"], pointer_layer=1
    )
    assert main(["train", str(config)]) == 0
    saved = json.loads((tmp_path / "run" / "final" / "config.json").read_text())
    assert "pointer" not in json.dumps(saved)
    bad = write_config(
        tmp_path / "b.yaml", tiny_dir, chunks, pointer_words=["Red"], gradient_checkpointing=True
    )
    assert main(["train", str(bad)]) != 0
    layer = write_config(tmp_path / "l.yaml", tiny_dir, chunks, pointer_words=["Red"], pointer_layer=2)
    assert main(["train", str(layer)]) != 0  # the tiny model has 2 layers
