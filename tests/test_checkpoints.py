"""Checkpoints as the hub lays them out, loud failures on bad ones, decoding defaults and stops."""

import json
import shutil
import sys

import pytest
import torch
from helpers import record_logits
from safetensors.torch import load_file, save_file
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from streamvlm import StreamConfig, StreamingSession
from streamvlm.cache import Kind
from streamvlm.cli import build_parser, config_from_args, main
from streamvlm.engine.decode import Sampler
from streamvlm.errors import ModelLoadError, StreamvlmError
from streamvlm.models import TinySpec, load_model, write_tiny_checkpoint
from streamvlm.models.tiny import write_hub_checkpoint
from streamvlm.sources import ArraySource, synthetic_frames

INDEX = "model.safetensors.index.json"


@pytest.fixture(scope="module")
def hub_dir(tmp_path_factory):
    """bfloat16 weights in 3 shards, Qwen's generation config (top_k 1, eos <|im_end|> + <|endoftext|>)."""
    return write_hub_checkpoint(tmp_path_factory.mktemp("hub") / "Qwen2.5-VL-tiny")


@pytest.fixture
def broken(hub_dir, tmp_path):
    """A copy of the hub checkpoint to damage."""
    out = tmp_path / "broken"
    shutil.copytree(hub_dir, out)
    return out


def _edit_weights(path, edit):
    """Apply `edit(weights)` to the shards' tensors and write them back (index kept in step)."""
    index = json.loads((path / INDEX).read_text())
    for file in sorted(set(index["weight_map"].values())):
        weights = load_file(path / file)
        edit(weights)
        save_file(weights, path / file, metadata={"format": "pt"})
        index["weight_map"] = {k: f for k, f in index["weight_map"].items() if f != file}
        index["weight_map"].update(dict.fromkeys(weights, file))
    (path / INDEX).write_text(json.dumps(index))


def _logits(loaded, seconds=3):
    session = StreamingSession(loaded, StreamConfig(greedy=True, max_new_tokens=2, repetition_penalty=1.0))
    session.trace = record_logits(session)
    for _ in session.run(ArraySource(synthetic_frames(seconds, 2, (56, 56)), 2)):
        pass
    return torch.stack([t[2] for t in session.trace])


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen2_vl"])
def test_hub_layout_loads_like_the_same_weights_in_the_tiny_layout(arch, tmp_path):
    spec = TinySpec(arch=arch)
    hub = write_hub_checkpoint(tmp_path / "hub", seed=3, spec=spec, dtype=torch.float32)
    assert {
        "config.json",
        "generation_config.json",
        INDEX,
        "model-00001-of-00003.safetensors",
        "model-00003-of-00003.safetensors",
        "preprocessor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.json",
        "merges.txt",
        "chat_template.json",
    } <= {p.name for p in hub.iterdir()}
    assert not (hub / "streamvlm.json").exists() and not (hub / "model.safetensors").exists()
    config = json.loads((hub / "config.json").read_text())
    assert "text_config" not in config and config["rope_scaling"]["mrope_section"] == [2, 3, 3]
    keys = json.loads((hub / INDEX).read_text())["weight_map"]
    assert "lm_head.weight" in keys and any(k.startswith("visual.merger.") for k in keys)
    assert any(k.startswith("model.layers.") for k in keys)
    reference = load_model(str(write_tiny_checkpoint(tmp_path / "tiny", seed=3, spec=spec)))
    reference.processor = load_model(str(hub)).processor  # same pixels (no streamvlm.json budget there)
    # the same numbers up to float32 rounding (the weights are equal; the sharded tensors are read
    # into other buffers, which moves the last bits of a few sums)
    torch.testing.assert_close(_logits(load_model(str(hub))), _logits(reference), rtol=0, atol=1e-6)


def test_hub_layout_streams_from_the_command_line(clip, tmp_path):
    hub, out = tmp_path / "hub", tmp_path / "c.jsonl"
    assert main(["tiny-model", str(hub), "--hub-layout", "--arch", "qwen2_vl"]) == 0
    assert (hub / INDEX).is_file() and not (hub / "streamvlm.json").exists()
    argv = ["run", str(clip), "--model", str(hub), "--seconds", "3", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    assert len(out.read_text().splitlines()) == 3


def _run_config(hub_dir, *options):
    args = build_parser().parse_args(["run", "x.mp4", *options])
    return config_from_args(args, load_model(str(hub_dir)).defaults.get("stream"))


def test_generation_config_gives_the_decoding_defaults(hub_dir):
    """Qwen's generation_config.json (top_k 1, top_p 0.001, T 0.1, penalty 1.05) is the default;
    what the user sets wins."""
    c = _run_config(hub_dir)
    assert (c.greedy, c.top_k, c.top_p, c.temperature, c.repetition_penalty) == (False, 1, 0.001, 0.1, 1.05)
    c = _run_config(hub_dir, "--top-k", "0", "--top-p", "0.9", "--temperature", "0.7")
    assert (c.greedy, c.top_k, c.top_p, c.temperature) == (False, 0, 0.9, 0.7)
    c = _run_config(hub_dir, "--repetition-penalty", "1.0", "--greedy")
    assert c.greedy and c.repetition_penalty == 1.0
    with pytest.raises(StreamvlmError, match="--greedy cannot be combined with --top-k"):
        _run_config(hub_dir, "--greedy", "--top-k", "3")
    with pytest.raises(StreamvlmError, match=r"top-p must be in \(0, 1\], got 1.5"):
        _run_config(hub_dir, "--top-p", "1.5")


def test_streamvlm_json_stream_defaults_come_before_the_generation_config(hub_dir, tmp_path):
    own = tmp_path / "own"
    shutil.copytree(hub_dir, own)
    (own / "streamvlm.json").write_text(json.dumps({"stream": {"top_k": 7, "greedy": True}}))
    stream = load_model(str(own)).defaults["stream"]
    assert stream == {
        "top_k": 7,
        "greedy": True,
        "top_p": 0.001,
        "temperature": 0.1,
        "repetition_penalty": 1.05,
    }


def test_top_k_1_streams_exactly_like_greedy_with_the_penalty(hub_dir, clip, tmp_path):
    """With its own generation config the checkpoint decodes as the research runs did: argmax after
    the 1.05 repetition penalty, whatever the temperature."""

    def run(name, *options):
        out = tmp_path / f"{name}.jsonl"
        argv = ["run", str(clip), "--model", str(hub_dir), "--seconds", "4", "--out", str(out), "--quiet"]
        assert main([*argv, "--max-new-tokens", "8", *options]) == 0
        return out.read_text()

    default = run("default")
    assert default == run("greedy", "--greedy", "--repetition-penalty", "1.05")
    assert default == run("hot", "--temperature", "5", "--seed", "3")  # top_k 1 still applies
    assert default != run("sampled", "--top-k", "0", "--top-p", "1", "--temperature", "1.5")


@pytest.mark.parametrize(
    "temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.8), (0.9, 20, 0.5)]
)
def test_sampling_distribution_matches_transformers(temperature, top_k, top_p):
    """Independent reference: transformers' processors in generate()'s order."""
    torch.manual_seed(0)
    logits = torch.randn(60) * 3
    seen_ids = torch.tensor([1, 4, 4, 9, 30])
    seen = torch.zeros(60, dtype=torch.bool)
    seen[seen_ids] = True
    scores = RepetitionPenaltyLogitsProcessor(1.05)(seen_ids[None], logits[None].clone())
    scores = TemperatureLogitsWarper(temperature)(seen_ids[None], scores)
    if top_k:
        scores = TopKLogitsWarper(top_k)(seen_ids[None], scores)
    scores = TopPLogitsWarper(top_p)(seen_ids[None], scores)
    expected = torch.softmax(scores[0], dim=-1)
    sampler = Sampler(
        torch.zeros(60, dtype=torch.bool),
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=1.05,
    )
    got = sampler.probabilities(logits, seen)
    assert torch.equal(got > 0, expected > 0)
    assert torch.allclose(got, expected, atol=1e-6)


def test_top_k_keeps_ties_like_transformers():
    logits = torch.tensor([3.0, 1.0, 2.0, 2.0, 2.0, 0.5])
    expected = torch.softmax(TopKLogitsWarper(2)(None, logits[None].clone())[0], dim=-1)
    got = Sampler(torch.zeros(6, dtype=torch.bool), temperature=1.0, top_k=2).probabilities(logits)
    assert (got > 0).tolist() == [True, False, True, True, True, False]
    assert torch.allclose(got, expected)


def test_top_k_1_and_tiny_top_p_pick_the_argmax():
    logits = torch.randn(50)
    logits[17] = 5.0
    for kwargs in (dict(top_k=1), dict(top_p=0.001)):
        sampler = Sampler(torch.zeros(50, dtype=torch.bool), temperature=2.0, seed=0, **kwargs)
        assert {sampler(logits) for _ in range(50)} == {17}


class _Always(torch.nn.Module):
    """An lm_head whose logits always put `token` first."""

    def __init__(self, vocab, token):
        super().__init__()
        self.vocab, self.token = vocab, token

    def forward(self, hidden):
        logits = torch.zeros(*hidden.shape[:-1], self.vocab, dtype=hidden.dtype)
        logits[..., self.token] = 10.0
        return logits


def _replies_with_endoftext_first(path):
    loaded = load_model(str(path))
    eot = loaded.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    loaded.model.lm_head = _Always(loaded.config.text_config.vocab_size, eot)
    session = StreamingSession(loaded, StreamConfig(greedy=True, max_new_tokens=4))
    lines = list(session.run(ArraySource(synthetic_frames(3, 2, (56, 56)), 2)))
    replies = [s.ids for s in session.layout.spans if s.kind in (Kind.REPLY, Kind.REPLY_CLOSE)]
    return lines, torch.cat(replies).tolist(), eot, session.renderer.im_end


def test_an_eos_of_the_generation_config_ends_the_turn_as_im_end(hub_dir, broken):
    """Qwen lists <|endoftext|> as an eos: picked, it ends the reply (as in generate()); the cache
    gets the turn's <|im_end|>, as in training. A checkpoint that does not list it never emits it."""
    lines, replied, eot, im_end = _replies_with_endoftext_first(hub_dir)
    assert [line.text for line in lines] == ["", "", ""]
    assert eot not in replied and replied.count(im_end) == 3
    gen = json.loads((broken / "generation_config.json").read_text())
    (broken / "generation_config.json").write_text(json.dumps({**gen, "eos_token_id": im_end}))
    lines, replied, eot, im_end = _replies_with_endoftext_first(broken)
    assert eot not in replied and all(line.text for line in lines)  # banned: 4 other tokens each second


def test_shipped_model_decodes_as_before():
    """The shipped world model has no sampling fields in its generation_config.json: greedy, from
    its streamvlm.json, and only <|im_end|> stops it."""
    from streamvlm_world.plugin import shipped_model_dir

    path = shipped_model_dir()
    if path is None:
        pytest.skip("no shipped model")
    generation = json.loads((path / "generation_config.json").read_text())
    assert not {"top_k", "top_p", "temperature", "repetition_penalty", "do_sample"} & set(generation)
    loaded = load_model(str(path))
    config = StreamConfig.from_dict(loaded.defaults["stream"])
    assert config.greedy and loaded.stop_ids == (loaded.tokenizer.convert_tokens_to_ids("<|im_end|>"),)


def _drop(*prefixes):
    return lambda w: [w.pop(k) for k in list(w) if k.startswith(prefixes)]


def _rename(old, new):
    return lambda w: old in w and w.__setitem__(new, w.pop(old))


def _change(name, fn):
    return lambda w: name in w and w.__setitem__(name, fn(w[name]))


@pytest.mark.parametrize(
    "damage,message",
    [
        (_drop("lm_head."), r"missing weights lm_head\.weight \(tie_word_embeddings is false"),
        (_drop("visual.merger."), r"missing weights model\.visual\.merger\.ln_q\.weight, .* and \d+ more"),
        (
            _rename("model.norm.weight", "model.norm.scale"),
            r"missing weights model\.language_model\.norm\.weight; unexpected weights .*norm\.scale",
        ),
        (
            _change("lm_head.weight", lambda t: t[:, :32].clone()),
            r"lm_head\.weight has shape \[640, 32\] in the checkpoint but \[640, 64\] in config\.json",
        ),
        (
            _change("lm_head.weight", lambda t: t.to(torch.int8)),
            r"tensor lm_head\.weight in .* is stored as I8",
        ),
    ],
    ids=["no-lm-head", "no-merger", "renamed", "shape", "int8"],
)
def test_weights_that_do_not_fill_the_model_are_refused(broken, damage, message, clip, capsys):
    _edit_weights(broken, damage)
    with pytest.raises(ModelLoadError, match=message):
        load_model(str(broken))
    with pytest.raises(SystemExit) as exc:
        sys.exit(main(["run", str(clip), "--model", str(broken)]))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "does not match its config.json" in err or "stored as I8" in err


def test_tied_embeddings_may_leave_out_lm_head(broken):
    """Qwen2.5-VL-3B ties the output layer to the embeddings: no lm_head.weight is stored."""
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": True}))
    _edit_weights(broken, _drop("lm_head."))
    model = load_model(str(broken)).model
    assert torch.equal(model.lm_head.weight, model.model.language_model.embed_tokens.weight)


def test_missing_index_and_missing_shard(broken):
    (broken / INDEX).rename(broken / "index.bak")
    shards = r"has weight shards \(model-00001-of-00003.safetensors, ...\) but no "
    with pytest.raises(ModelLoadError, match=shards + INDEX):
        load_model(str(broken))
    (broken / "index.bak").rename(broken / INDEX)
    (broken / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=rf"missing 1 of the 3 weight shards listed in {INDEX}: model-"):
        load_model(str(broken))


def test_other_architectures_and_devices(broken, hub_dir):
    """Text-only Qwen weights under a Qwen2.5-VL config; a quantized config; a dtype we do not load;
    cuda without CUDA."""
    _edit_weights(broken, _drop("visual."))
    text_only = r"does not match its config.json \(qwen2_5_vl\): missing weights model\.visual"
    with pytest.raises(ModelLoadError, match=text_only):
        load_model(str(broken))
    config = json.loads((broken / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "awq", "bits": 4}
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"quantized checkpoint \(awq\)"):
        load_model(str(broken))
    with pytest.raises(ModelLoadError, match="unknown dtype 'float64'; choose one of float32, bfloat16"):
        load_model(str(hub_dir), dtype="float64")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="device cuda: CUDA is not available"):
            load_model(str(hub_dir), device="cuda")


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("top_p", 0, r"top_p 0 is not a valid value"),
        ("top_k", -1, r"top_k -1 is not a valid value"),
        ("eos_token_id", [602, 10**6], r"eos_token_id \[602, 1000000\] is not a token id below 640"),
        ("eos_token_id", "<|im_end|>", r"eos_token_id '<\|im_end\|>' is not a token id"),
    ],
)
def test_a_bad_generation_config_is_named(broken, field, value, message):
    gen = json.loads((broken / "generation_config.json").read_text())
    (broken / "generation_config.json").write_text(json.dumps({**gen, field: value}))
    with pytest.raises(ModelLoadError, match="generation_config.json: " + message):
        load_model(str(broken))


def test_temperature_0_in_the_generation_config_means_greedy(broken):
    gen = json.loads((broken / "generation_config.json").read_text())
    (broken / "generation_config.json").write_text(json.dumps({**gen, "temperature": 0.0}))
    config = StreamConfig.from_dict(load_model(str(broken)).defaults["stream"])
    assert config.greedy and config.top_k == 1
