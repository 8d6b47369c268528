"""Pointer supervision: its targets, its loss against eager attention, and a training run with it."""

import json
import math
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


@pytest.mark.parametrize("masked", [False, True], ids=["causal", "custom-4d-mask"])
def test_loss_is_minus_log_of_the_eager_attention_weight(tiny_dir, masked):
    """Also under a custom 4-D mask (`streaming_mask`): the loss reads the attention the mask leaves."""
    model = load_model(str(tiny_dir)).model
    text = model.config.text_config
    ids = torch.randint(0, 200, (2, 40))
    heads = pointer.supervised_heads(text.num_attention_heads, 2)
    layer = text.num_hidden_layers - 1
    gen = torch.Generator().manual_seed(0)
    allowed = torch.ones(2, 1, 40, 40, dtype=torch.bool).tril()
    if masked:
        allowed &= torch.rand(2, 1, 40, 40, generator=gen) < 0.6
        allowed |= torch.eye(40, dtype=torch.bool)
    targets = torch.full((2, 2, 40), -1)
    for b in range(2):
        for q in range(5, 40):
            keys = allowed[b, 0, q].nonzero()[:, 0]
            targets[b, :, q] = keys[torch.randint(0, len(keys), (2,), generator=gen)]
    mask = {"attention_mask": allowed} if masked else {}
    additive = {"attention_mask": torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))}
    with torch.no_grad():
        model.set_attn_implementation("eager")
        eager = model(input_ids=ids, output_attentions=True, **(additive if masked else {}))
        pointer.enable(model)
        model.train()  # as the trainer calls it (only in training)
        with pointer.supervise(targets, layer, heads):
            ours = model(input_ids=ids, **mask)
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
    plain = StreamTrainer.compute_loss(
        SimpleNamespace(pointer=None, readout=None, code=None), model, dict(batch)
    )
    pointer.enable(model)
    model.train()
    with torch.no_grad():
        weighted = StreamTrainer.compute_loss(
            SimpleNamespace(pointer=(1, (0,), 2.0), readout=None, code=None), model, dict(batch)
        )
    extra = pointer.loss()
    model.eval()
    pointer.disable(model)
    assert extra is not None and extra > 0
    assert torch.allclose(weighted, plain + 2.0 * extra, atol=1e-4)


def _encode(tokenizer, pieces):
    ids, last = [], []
    for piece in pieces:
        ids += tokenizer.encode(piece, add_special_tokens=False)
        last.append(len(ids) - 1)
    return torch.tensor(ids), last


def test_copy_positions_are_the_words_followed_by_the_number_their_head_finds(tiny):
    tokenizer = tiny.tokenizer
    pieces = [" Red", " 3", " Blue", " 4", " serves", " Red", " 3", " Blue", " 5", " Red", " 7"]
    pieces += [" Red", " 5"]  # Blue's latest number, but said after " Red": no copy for Blue's head
    ids, last = _encode(tokenizer, pieces)
    labels = ids.clone()
    labels[: last[4] + 1] = -100  # the first score is context, not a reply
    targets = pointer_targets(ids, tokenizer, ["Red", "Blue"])
    mask = pointer.copy_positions(ids[None], labels[None], targets[None], False)[0]
    # " Red 3" repeats Red's 3; " Blue 5" is not Blue's 4; " Red 7" is not Red's 3; the first
    # " Red" / " Blue" have no number before them (and are not labelled replies)
    assert {j for j in range(len(ids) - 1) if mask[0, j]} == {last[6] - 1}  # " Red" or a space after it
    assert not mask[1].any()
    # one copy head: a single row of targets, only at the words followed by a number
    one = pointer_targets(ids, tokenizer, ["Red", "Blue"], copy=True)
    expected = torch.full((1, len(ids)), -1)
    for number, source in ((6, 1), (8, 3), (10, 6), (12, 10)):  # before each number, its team's latest number
        expected[0, last[number] - 1] = last[source]
    assert torch.equal(one, expected)
    copies = pointer.copy_positions(ids[None], labels[None], one[None], True)[0, 0]
    assert {j for j in range(len(ids) - 1) if copies[j]} == {last[6] - 1}


def test_heads_write_what_eager_attention_adds_and_the_readout_is_its_direct_logit_effect(tiny_dir):
    model = load_model(str(tiny_dir)).model
    text = model.config.text_config
    layer, heads = 1, pointer.supervised_heads(text.num_attention_heads, 2)
    ids = torch.randint(0, 200, (2, 30))
    targets = torch.randint(0, 5, (2, 2, 30))
    targets[:, :, ::3] = -1  # not told where to look: nothing computed, zero written
    attention = model.get_decoder().layers[layer].self_attn
    captured = {}
    hook = attention.v_proj.register_forward_hook(lambda m, i, o: captured.__setitem__("v", o.detach()))
    model.set_attn_implementation("eager")
    with torch.no_grad():
        eager = model(input_ids=ids, output_attentions=True, output_hidden_states=True)
    hook.remove()
    d = attention.head_dim
    group = text.num_attention_heads // text.num_key_value_heads
    values = captured["v"].view(2, 30, -1, d)
    reference = [
        (eager.attentions[layer][:, h] @ values[:, :, h // group])
        @ attention.o_proj.weight[:, h * d : (h + 1) * d].T.detach()
        for h in heads
    ]
    pointer.enable(model)
    model.train()
    with pointer.supervise(targets, layer, heads, write=True):
        ours = model(input_ids=ids, output_hidden_states=True)
    model.eval()
    pointer.disable(model)
    written = pointer.written()
    assert len(written) == 2
    for i, (got, want) in enumerate(zip(written, reference, strict=True)):
        told = targets[:, i] >= 0
        assert torch.allclose(got[told], want[told], atol=1e-4) and not got[~told].any()
    mask = torch.zeros(2, 2, 29, dtype=torch.bool)
    mask[0, 0, [4, 10]] = mask[1, 1, 20] = True
    following = torch.randint(0, 200, (2, 29))
    hidden = ours.hidden_states[layer + 1]
    loss = pointer.readout_loss(model, written, hidden, following, mask)
    norm, head = model.get_decoder().norm, model.lm_head
    rms = hidden.detach().pow(2).mean(-1, keepdim=True).add(norm.variance_epsilon).sqrt()
    expected = torch.cat(
        [
            torch.nn.functional.cross_entropy(
                head(norm.weight * (want / rms))[:, :-1][mask[:, i]], following[mask[:, i]], reduction="none"
            )
            for i, want in enumerate(reference)
        ]
    ).mean()
    assert torch.allclose(loss, expected, atol=1e-4)
    loss.backward()
    assert head.weight.grad is None and norm.weight.grad is None  # only the heads learn from it
    assert attention.v_proj.weight.grad.abs().sum() > 0
    assert pointer.readout_loss(model, written, hidden, following, torch.zeros_like(mask)) is None


def _scores_window(tiny_dir):
    """The tiny model, and a reply copying two scores (" Red 3 Blue 4") after a context that said them."""
    loaded = load_model(str(tiny_dir))
    pieces = [" Red", " 3", " Blue", " 4", " serves", " Red", " 3", " Blue", " 4", " Red", " 5"]
    ids, last = _encode(loaded.tokenizer, pieces)
    labels = ids.clone()
    labels[: last[4] + 1] = -100  # the first score is context, not a reply
    return loaded, ids, labels


def test_trainer_adds_the_weighted_readout_loss(tiny_dir):
    loaded, ids, labels = _scores_window(tiny_dir)
    batch = {
        "input_ids": ids[None],
        "labels": labels[None],
        "loss_weights": (labels >= 0).float()[None],
        "pointer_targets": pointer_targets(ids, loaded.tokenizer, ["Red", "Blue"])[None],
    }
    mask = pointer.copy_positions(batch["input_ids"], batch["labels"], batch["pointer_targets"], False)
    assert mask.sum() == 2  # Red's 3 and Blue's 4 are copies; Red's 5 is not
    model = loaded.model
    pointer.enable(model)
    model.train()
    with torch.no_grad():
        one = StreamTrainer.compute_loss(
            SimpleNamespace(pointer=(0, (0, 2), 1.0), readout=None, code=None), model, dict(batch)
        )
        with_readout = SimpleNamespace(pointer=(0, (0, 2), 1.0), readout=3.0, code=None, copy_head=False)
        both = StreamTrainer.compute_loss(with_readout, model, dict(batch))
        with pointer.supervise(batch["pointer_targets"], 0, (0, 2), write=True):
            hidden = model(input_ids=batch["input_ids"], output_hidden_states=True).hidden_states[1]
        readout = pointer.readout_loss(model, pointer.written(), hidden, labels[None, 1:], mask)
    model.eval()
    pointer.disable(model)
    assert readout > 0
    assert torch.allclose(both, one + 3.0 * readout, atol=1e-4)


def test_code_loss_is_the_supervised_contrastive_loss_of_what_the_heads_write():
    torch.manual_seed(0)
    written = [torch.randn(2, 6, 8, requires_grad=True), torch.randn(2, 6, 8)]
    mask = torch.zeros(2, 2, 5, dtype=torch.bool)
    mask[0, 0, [0, 2, 4]] = mask[1, 0, [1, 3]] = True  # head 0: five copies; head 1: none
    following = torch.tensor([[7, 0, 8, 0, 7], [0, 8, 0, 9, 0]])
    loss = pointer.code_loss(written, following, mask, temperature=0.5)
    # by hand: anchors in batch order (mask position j: what the heads wrote at j, followed by
    # following[j]), labels 7 8 7 8 9; the 9 has no partner and is no anchor
    vectors = [written[0][0, 0], written[0][0, 2], written[0][0, 4], written[0][1, 1], written[0][1, 3]]
    labels = [7, 8, 7, 8, 9]

    def cos(a, b):
        return float((a @ b / (a.norm() * b.norm())).detach())

    per_anchor = []
    for i in range(5):
        partners = [j for j in range(5) if j != i and labels[j] == labels[i]]
        if partners:
            others = sum(math.exp(cos(vectors[i], vectors[k]) / 0.5) for k in range(5) if k != i)
            per_anchor.append(
                -sum(cos(vectors[i], vectors[j]) / 0.5 - math.log(others) for j in partners) / len(partners)
            )
    assert len(per_anchor) == 4
    assert abs(float(loss.detach()) - sum(per_anchor) / 4) < 1e-5
    scaled = [w * 10 for w in written]  # scale-free
    assert torch.allclose(pointer.code_loss(scaled, following, mask, temperature=0.5), loss, atol=1e-5)
    loss.backward()
    assert written[0].grad[0, 0].abs().sum() > 0 and not written[0].grad[0, 1].any()
    apart = torch.zeros(2, 6, 8)  # each number its own direction: near zero
    for b, j in ((0, 0), (0, 2), (0, 4), (1, 1), (1, 3)):
        apart[b, j, int(following[b, j]) - 6] = 1.0
    assert pointer.code_loss([apart], following, mask[:, :1], temperature=0.05) < 1e-6 < float(loss)
    assert pointer.code_loss(written, following, torch.zeros_like(mask)) is None


def test_trainer_adds_the_weighted_code_loss(tiny_dir):
    loaded, ids, labels = _scores_window(tiny_dir)
    targets = pointer_targets(ids, loaded.tokenizer, ["Red", "Blue"], copy=True)
    batch = {  # the same window twice: each copied number has a partner in the batch
        "input_ids": ids[None].repeat(2, 1),
        "labels": labels[None].repeat(2, 1),
        "loss_weights": (labels >= 0).float()[None].repeat(2, 1),
        "pointer_targets": targets[None].repeat(2, 1, 1),
    }
    model = loaded.model
    pointer.enable(model)
    model.train()
    settings = {"pointer": (0, (0,), 1.0), "readout": None, "copy_head": True}
    with torch.no_grad():
        one = StreamTrainer.compute_loss(SimpleNamespace(**settings, code=None), model, dict(batch))
        both = StreamTrainer.compute_loss(SimpleNamespace(**settings, code=2.0), model, dict(batch))
        with pointer.supervise(batch["pointer_targets"], 0, (0,), write=True):
            model(input_ids=batch["input_ids"])
        mask = pointer.copy_positions(batch["input_ids"], batch["labels"], batch["pointer_targets"], True)
        code = pointer.code_loss(pointer.written(), batch["labels"][:, 1:], mask)
    model.eval()
    pointer.disable(model)
    assert mask.sum() == 4 and code > 0
    assert torch.allclose(both, one + 2.0 * code, atol=1e-4)


def test_training_with_pointer_supervision_runs_and_saves_a_plain_model(tmp_path, tiny_dir, chunks):  # noqa: F811
    config = write_config(
        tmp_path / "c.yaml",
        tiny_dir,
        chunks,
        max_steps=3,
        pointer_words=["Red", "Blue"],
        pointer_layer=1,
        pointer_readout_weight=1.0,
        pointer_code_weight=1.0,
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
    readout = write_config(tmp_path / "r.yaml", tiny_dir, chunks, pointer_readout_weight=1.0)
    assert main(["train", str(readout)]) != 0  # a readout needs pointer words
    code = write_config(tmp_path / "k.yaml", tiny_dir, chunks, pointer_code_weight=1.0)
    assert main(["train", str(code)]) != 0  # so does a code loss
