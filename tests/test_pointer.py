"""The world's copy-head pointer supervision (`streamvlm_world.pointer`): its targets, its loss against
eager attention, the trainer adding it through the auxiliary-objective seam, and a training run."""

from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from test_train import chunks, write_config  # noqa: F401 (fixture)

from streamvlm.data.sample import RenderOptions, StreamDataset, collate
from streamvlm.errors import StreamvlmError
from streamvlm.models import load_model
from streamvlm.train.config import load_config
from streamvlm.train.trainer import StreamTrainer, train
from streamvlm_world import pointer
from streamvlm_world.pointer import CopyPointer, pointer_targets


def _encode(tokenizer, pieces):
    """Token ids of `pieces` said in a row, and the index of each piece's last token."""
    ids, last = [], []
    for piece in pieces:
        ids += tokenizer.encode(piece, add_special_tokens=False)
        last.append(len(ids) - 1)
    return torch.tensor(ids), last


def test_copy_targets_point_before_each_number_at_that_words_latest_number(tiny):
    tokenizer = tiny.tokenizer
    pieces = [" Red", " 3", " Blue", " 4", " serves", " Red", " 3", " Blue", " 5", " Red", " 7"]
    pieces += [" Red", " 5"]  # Blue's latest number, but said after " Red": Red's latest (7) is asked for
    ids, last = _encode(tokenizer, pieces)
    got = pointer_targets(ids, tokenizer, ["Red", "Blue"])
    expected = torch.full((1, len(ids)), -1)
    # right before each number (the token before its own: " Red" or a space after it), the latest number
    # of the word said before it; the first " Red 3" and " Blue 4" have none yet
    for number, source in ((6, 1), (8, 3), (10, 6), (12, 10)):
        expected[0, last[number] - 1] = last[source]
    assert torch.equal(got, expected)
    assert torch.equal(CopyPointer().sample_targets(ids, tokenizer), expected)  # the objective's targets
    blue = torch.full((1, len(ids)), -1)
    blue[0, last[8] - 1] = last[3]  # only Blue's numbers asked for
    assert torch.equal(CopyPointer(words=("Blue",)).sample_targets(ids, tokenizer), blue)


@pytest.mark.parametrize("masked", [False, True], ids=["causal", "custom-4d-mask"])
def test_loss_is_minus_log_of_the_eager_attention_weight(tiny_dir, masked):
    """Also under a custom 4-D mask (`streaming_mask`): the loss reads the attention the mask leaves.
    Head 1 reads the keys of KV head 0 (grouped KV heads: 4 query heads, 2 KV heads)."""
    model = load_model(str(tiny_dir)).model
    layer, head = model.config.text_config.num_hidden_layers - 1, 1
    objective = CopyPointer(layer=layer, head=head)
    objective.check(model)
    ids = torch.randint(0, 200, (2, 40))
    gen = torch.Generator().manual_seed(0)
    allowed = torch.ones(2, 1, 40, 40, dtype=torch.bool).tril()
    if masked:
        allowed &= torch.rand(2, 1, 40, 40, generator=gen) < 0.6
        allowed |= torch.eye(40, dtype=torch.bool)
    targets = torch.full((2, 1, 40), -1)
    for b in range(2):
        for q in range(5, 40, 2):  # every other position told nothing
            keys = allowed[b, 0, q].nonzero()[:, 0]
            targets[b, 0, q] = keys[torch.randint(0, len(keys), (1,), generator=gen)]
    mask = {"attention_mask": allowed} if masked else {}
    additive = {"attention_mask": torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))}
    with torch.no_grad():
        model.set_attn_implementation("eager")
        eager = model(input_ids=ids, output_attentions=True, **(additive if masked else {}))
        objective.enable(model)
        with objective.watch(targets):
            ours = model(input_ids=ids, **mask)
        loss = objective.loss()
        with objective.watch(torch.full((2, 1, 40), -1)):  # nothing asked: no loss, not the stale one
            model(input_ids=ids, **mask)
        assert objective.loss() is None
        with objective.watch(None):
            model(input_ids=ids, **mask)
        assert objective.loss() is None
        objective.disable(model)
    weights = eager.attentions[layer]
    told = targets[:, 0] >= 0
    b, q = told.nonzero(as_tuple=True)
    reference = -torch.log(weights[b, head, q, targets[b, 0, q]]).mean()
    assert told.sum() == 2 * 18
    assert torch.allclose(loss, reference, atol=1e-4)
    assert torch.allclose(ours.logits, eager.logits, atol=1e-4)  # the forward pass is unchanged
    assert model.config._attn_implementation == "sdpa"


def test_trainer_adds_the_weighted_pointer_loss_through_the_objective_seam(tiny_dir, chunks):  # noqa: F811
    """`StreamTrainer.compute_loss` with a `CopyPointer` among its `auxiliary` objectives is the plain
    loss plus weight x the pointer loss read off eager attention; in eval mode the plain loss."""
    loaded = load_model(str(tiny_dir))
    model = loaded.model
    # the first digit of each "Time=3.0-4.0s" label follows "=": every label but a window's first asks
    # for the previous label's first digit
    objective = CopyPointer(words=("=",), layer=1, head=1, weight=2.0)
    dataset = StreamDataset([chunks], loaded, RenderOptions(targets=(objective,)))
    batch = collate([dataset[0], dataset[1]], pad_id=0)
    targets = batch["pointer_targets"]
    assert targets.shape == (2, 1, batch["input_ids"].shape[1])
    assert (targets >= 0).sum() >= 4
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "loss_weights", "pointer_targets")}
    with torch.no_grad():
        plain = StreamTrainer.compute_loss(SimpleNamespace(auxiliary=()), model, dict(batch))
        model.set_attn_implementation("eager")
        attentions = model(**inputs, output_attentions=True).attentions[1]
    told = targets[:, 0] >= 0
    b, q = told.nonzero(as_tuple=True)
    reference = -torch.log(attentions[b, 1, q, targets[b, 0, q]]).mean()
    assert reference > 0
    objective.enable(model)
    trainer = SimpleNamespace(auxiliary=(objective,))
    with torch.no_grad():
        model.train()
        weighted = StreamTrainer.compute_loss(trainer, model, dict(batch))
        model.eval()
        evaluated = StreamTrainer.compute_loss(trainer, model, dict(batch))  # targets popped, not used
    objective.disable(model)
    assert torch.allclose(weighted, plain + 2.0 * reference, atol=1e-4)
    assert torch.allclose(evaluated, plain, atol=1e-5)


def _config(tmp_path, tiny_dir, chunks, name, **extra):  # noqa: F811
    return load_config(str(write_config(tmp_path / f"{name}.yaml", tiny_dir, chunks, **extra)))


class Recording(CopyPointer):
    """A `CopyPointer` that notes, in this process, each loss it hands the trainer and how it is set
    up and undone."""

    events: list = []

    def enable(self, model):
        super().enable(model)
        Recording.events.append(("enable", model.config._attn_implementation))

    def disable(self, model):
        super().disable(model)
        Recording.events.append(("disable", model.config._attn_implementation))

    def loss(self):
        value = super().loss()
        if value is not None:
            Recording.events.append(("loss", float(value.detach())))
        return value


def test_training_with_a_copy_pointer_runs_and_saves_a_plain_model(
    tmp_path,
    tiny_dir,
    chunks,  # noqa: F811 (fixture)
    monkeypatch,
):
    from streamvlm.train import trainer

    config = _config(tmp_path, tiny_dir, chunks, "c", max_steps=3, output_dir=str(tmp_path / "run"))
    save_final = trainer.save_final
    monkeypatch.setattr(
        trainer, "save_final", lambda *a: Recording.events.append(("save", None)) or save_final(*a)
    )
    Recording.events.clear()
    train(config, [Recording(words=("=",), layer=1)])
    kinds = [kind for kind, _ in Recording.events]
    losses = [value for kind, value in Recording.events if kind == "loss"]
    assert len(losses) >= 3 and all(x > 0 for x in losses)  # the pointer loss in every step
    assert kinds == ["enable", *["loss"] * len(losses), "disable", "save"]  # undone before the save
    assert Recording.events[0][1] == pointer.NAME and Recording.events[-2][1] == "sdpa"
    final = tmp_path / "run" / "final"
    assert "pointer" not in (final / "config.json").read_text()
    saved, initial = load_file(final / "model.safetensors"), load_file(tiny_dir / "model.safetensors")
    assert saved.keys() == initial.keys()  # nothing added to the model
    assert any(not torch.equal(saved[k], initial[k]) for k in saved)  # and it did learn


def test_a_bad_copy_pointer_or_gradient_checkpointing_is_refused(tmp_path, tiny, tiny_dir, chunks):  # noqa: F811
    model = tiny.model  # 2 layers of 4 heads
    CopyPointer(layer=1, head=3).check(model)
    for bad, message in (
        (CopyPointer(layer=2), "layer 2 / head 0 outside"),
        (CopyPointer(layer=-1), "layer -1 / head 0 outside"),
        (CopyPointer(layer=1, head=4), "layer 1 / head 4 outside"),
        (CopyPointer(layer=1, weight=0), "weight must be > 0"),
    ):
        with pytest.raises(StreamvlmError, match=message):
            bad.check(model)
    layer = _config(tmp_path, tiny_dir, chunks, "l", output_dir=str(tmp_path / "l"))
    with pytest.raises(StreamvlmError, match="layer 2"):
        train(layer, [CopyPointer(layer=2)])  # the tiny model has 2 layers
    assert not (tmp_path / "l" / "final").exists()
    checkpointed = _config(
        tmp_path, tiny_dir, chunks, "g", gradient_checkpointing=True, output_dir=str(tmp_path / "g")
    )
    with pytest.raises(StreamvlmError, match="gradient_checkpointing"):
        train(checkpointed, [CopyPointer(layer=1)])
    assert not (tmp_path / "g").exists()  # refused before anything was written


def test_supervise_records_the_heads_it_is_given(tiny_dir):
    """`supervise` takes one row of targets per head: the copy head's row for head 0, another for head 2."""
    model = load_model(str(tiny_dir)).model
    ids = torch.randint(0, 200, (1, 20))
    targets = torch.full((1, 2, 20), -1)
    targets[0, 0, 10], targets[0, 1, 15] = 3, 7
    model.set_attn_implementation("eager")
    with torch.no_grad():
        weights = model(input_ids=ids, output_attentions=True).attentions[0]
        pointer.enable(model)
        with pointer.supervise(targets, 0, (0, 2)):
            model(input_ids=ids)
        pointer.disable(model)
    reference = -(torch.log(weights[0, 0, 10, 3]) + torch.log(weights[0, 2, 15, 7])) / 2
    assert torch.allclose(pointer.loss(), reference, atol=1e-4)
