"""`streamvlm eval world`: the long-stream policy study and its attention diagnostics.

A random world-architecture model on 24 s matches (windows of 4 s, one generated token per second):
the numbers say nothing about quality, but every policy must behave as its definition says.
"""

import json
from dataclasses import replace

import pytest
import torch

from streamvlm.cli import main
from streamvlm.config import StreamConfig
from streamvlm.engine import StreamingSession
from streamvlm.eval import attention
from streamvlm.models import load_model
from streamvlm_world import study
from streamvlm_world.config import WorldConfig
from streamvlm_world.model import init_world_checkpoint
from streamvlm_world.stream import World

SMALL = {"vision_window": 4, "text_rounds": 4, "max_new_tokens": 1}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 5 M model gains nothing from more, and the machine is shared
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    extra = {"world": {"nicknames": True, "eval_seed": 9_000_001, "demo_seed": 9_000_002}}
    return init_world_checkpoint(tmp_path_factory.mktemp("world-model"), seed=0, extra=extra)


@pytest.fixture(scope="module")
def world_model(world_dir):
    return load_model(str(world_dir))


@pytest.fixture(scope="module")
def report(world_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "study.json"
    argv = ["eval", "world", "--model", str(world_dir), "--minutes", "0.4", "--bucket-minutes", "0.2"]
    argv += [
        "--max-seconds-full",
        "10",
        "--vision-window",
        "4",
        "--text-rounds",
        "4",
        "--max-new-tokens",
        "1",
    ]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    return out


def _stats(out, policy):
    cell = json.loads(next(out.with_suffix(".cells").glob(f"24s-*-{policy}.json")).read_text())
    return cell["stats"]


def test_report_has_every_policy_and_bucket(report):
    r = json.loads(report.read_text())
    assert report.with_suffix(".md").is_file() and report.with_suffix(".png").stat().st_size > 1000
    (length,) = r["lengths"]
    assert length["seconds"] == 24 and length["seed"] == 9_001_001  # held out: eval seed + 1000
    assert list(length["policies"]) == list(study.VARIANTS)
    for name, cell in length["policies"].items():
        assert [(b["start_s"], b["end_s"]) for b in cell["buckets"]] == [(0, 12), (12, 24)], name
        done = [b for b in cell["buckets"] if not b["skipped"]]
        assert sum(b["points"] for b in done) == cell["overall"]["points"], name
        for b in done:
            assert all(b[m] is None or 0 <= b[m] <= 1 for m in study.METRICS), (name, b)
            assert b["start_s"] == 0 or b["counted_score_accuracy"] is None  # a count starts at 0-0
        counted = cell["overall"]["counted_score_accuracy"]
        assert (counted is None) == (cell["overall"]["score_accuracy"] is None), name
    full = length["policies"]["full"]
    assert full["status"] == "truncated" and full["streamed_s"] == 10
    assert full["buckets"][0]["seconds"] == 10 and full["buckets"][1]["skipped"]
    assert all(c["status"] == "done" for n, c in length["policies"].items() if n != "full")
    md = report.with_suffix(".md").read_text()
    assert (
        "| no-memory |" in md
        and "skipped" in md
        and "full (first" in md
        and "| counted / stepped score |" in md
    )


def test_policies_behave_as_defined(report):
    full, stream = _stats(report, "full"), _stats(report, "streaming")
    append, nomem = _stats(report, "append"), _stats(report, "no-memory")
    assert all(b > a for a, b in zip(full["cache_tokens"], full["cache_tokens"][1:], strict=False))
    assert len(stream["cache_tokens"]) == 24 and full["cache_tokens"][9] > stream["cache_tokens"][9]
    # streaming: once the windows hold only two-digit time stamps (t >= 14), only the memory grows
    rest = [c - m for c, m in zip(stream["cache_tokens"][14:], stream["memory_tokens"][14:], strict=True)]
    assert max(rest) - min(rest) <= 1 and stream["memory_tokens"][-1] > stream["memory_tokens"][4]
    assert min(stream["memory_tokens"]) > 0 and max(nomem["memory_tokens"]) == 0
    # contiguous positions stay below the token count; append positions keep growing past it
    assert all(p < c for p, c in zip(stream["max_position"], stream["cache_tokens"], strict=True))
    assert all(b > a for a, b in zip(append["max_position"], append["max_position"][1:], strict=False))
    assert append["max_position"][-1] > 2 * append["cache_tokens"][-1]
    assert append["cache_tokens"] == stream["cache_tokens"]  # same policy, only positions differ


def test_resume_skips_finished_cells(report, world_model, monkeypatch):
    calls = []
    real = study.run_cell
    monkeypatch.setattr(study, "run_cell", lambda *a, **k: calls.append(a[1].policy) or real(*a, **k))
    kwargs = dict(lengths_s=[24], policies=list(study.VARIANTS), out=report, bucket_s=12, overrides=SMALL)
    before = json.loads(report.read_text())["lengths"]
    rerun = study.run_study(world_model, max_seconds_full=10, progress=False, **kwargs)
    assert calls == [] and rerun["lengths"] == before
    next(report.with_suffix(".cells").glob("24s-*-sliding.json")).unlink()
    study.run_study(world_model, max_seconds_full=10, progress=False, **kwargs)
    assert calls == ["sliding"]


def test_bad_policy_is_one_line_error(capsys):
    assert main(["eval", "world", "--policies", "streaming,bogus"]) == 2
    assert "unknown bogus" in capsys.readouterr().err


def test_attention_shares_match_an_eager_forward(world_model, world_dir):
    """Shares read through the probe seam equal those of transformers' eager attention weights."""
    config = replace(StreamConfig.from_dict(world_model.defaults["stream"]), **SMALL)
    world = World(WorldConfig(seed=9_000_005))
    config = replace(config, previous_text=world.opening_text, query=world.config.query)
    session = StreamingSession(world_model, config)
    for t, (frames, _) in enumerate(world.seconds(3)):
        if t < 2:
            session.step(frames, t)
            continue
        with attention.recording(world_model.model) as recorder:
            session.step(frames, t)
    assert world_model.model.config.text_config._attn_implementation == "sdpa"  # restored
    n_keys, shares = attention.layer_shares(recorder, session, 2)

    eager = world_model.family.model_class.from_pretrained(world_dir, attn_implementation="eager").eval()
    layout = session.layout
    pixels = [session.pixels[r] for r in (0, 1, 2)]
    with torch.no_grad():
        out = eager(
            input_ids=layout.token_ids()[None, :n_keys],
            position_ids=layout.positions()[:, None, :n_keys],
            pixel_values_videos=torch.cat([p for p, _ in pixels]),
            video_grid_thw=torch.stack([g for _, g in pixels]),
            output_attentions=True,
            use_cache=False,
        )
    rows = attention.round_prompt_rows(layout, 2)
    groups = attention.key_groups(layout, 2, 4, 4)[:n_keys]
    assert groups.count("current") == len(rows) and "evicted_vision" not in groups
    assert len(out.attentions) == len(shares) == 4
    for weights, got in zip(out.attentions, shares, strict=True):
        probs = weights[0].mean(0)[rows]  # (queries, keys), mean over heads
        for g in attention.GROUPS:
            keys = [j for j, k in enumerate(groups) if k == g]
            assert got[g] == pytest.approx(float(probs[:, keys].sum(1).mean()), abs=1e-5), g
        assert sum(got.values()) == pytest.approx(1.0, abs=1e-5)


def test_streamed_and_full_attention_agree_until_the_first_eviction(world_model):
    config = replace(StreamConfig.from_dict(world_model.defaults["stream"]), **SMALL)
    result = study.probe_world_attention(world_model, config, WorldConfig(seed=9_000_006), [2, 9])
    early, late = result["probes"]
    assert early["streaming_keys"] == early["full_keys"]
    for s, f in zip(early["streaming"], early["full"], strict=True):
        assert s == pytest.approx(f, abs=1e-5)
    assert late["streaming_keys"] < late["full_keys"]
    for s, f in zip(late["streaming"], late["full"], strict=True):
        assert (
            s["evicted_text"] == s["evicted_vision"] == 0
            and f["evicted_text"] > 0
            and f["evicted_vision"] > 0
        )
        assert sum(s.values()) == pytest.approx(1.0, abs=1e-5) and sum(f.values()) == pytest.approx(
            1.0, abs=1e-5
        )
