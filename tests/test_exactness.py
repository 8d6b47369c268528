"""The streaming cache against independent full forwards of the same tokens.

References are plain transformers forwards with a fresh cache; positions come from transformers'
own `get_rope_index` wherever the claim is "what a fresh prefill would assign".
"""

import pytest
import torch
from helpers import fed_ids_positions, full_forward, hf_rope_positions, record_logits, retained_vision
from transformers import DynamicCache

from streamvlm import StreamConfig, StreamingSession
from streamvlm.cache import Kind
from streamvlm.sources import ArraySource, synthetic_frames


def stream(loaded, seconds, size=(56, 84), seed=0, **options) -> StreamingSession:
    options = {"greedy": True, "repetition_penalty": 1.0, "max_new_tokens": 4, **options}
    session = StreamingSession(loaded, StreamConfig(**options))
    session.trace = record_logits(session)
    for _ in session.run(ArraySource(synthetic_frames(seconds, 2, size, seed=seed), 2)):
        pass
    return session


def assert_trace_matches_reference(session, positions=None, atol=1e-5):
    """Every logits vector computed since the last eviction equals a full forward's."""
    ids, pos = fed_ids_positions(session)
    pixels, grids = retained_vision(session)
    reference = full_forward(session.model, ids, pixels, grids, positions=positions)
    checked = [(n, logits) for epoch, n, logits in session.trace if epoch == session.evictions]
    assert checked, "nothing to compare"
    for n, logits in checked:
        assert torch.allclose(logits, reference[n - 1], atol=atol, rtol=0), (
            n,
            (logits - reference[n - 1]).abs().max(),
        )
    return len(checked)


@pytest.mark.parametrize("policy", ["streaming", "full"])
def test_exact_without_eviction(tiny, policy):
    """Windows covering the whole stream: each streamed step equals one full forward (fp32, 1e-5)."""
    session = stream(tiny, 8, policy=policy, vision_window=64, text_rounds=64)
    assert session.evictions == 0
    # positions=None: the reference takes its positions from transformers' get_rope_index
    assert assert_trace_matches_reference(session, positions=None) == len(session.trace) >= 8


@pytest.mark.parametrize("vision_window,text_rounds", [(3, 2), (2, 3), (1, 1)])
def test_positions_contiguous_after_many_evictions(tiny, vision_window, text_rounds):
    session = stream(
        tiny,
        40,
        vision_window=vision_window,
        text_rounds=text_rounds,
        text_sink=6,
        text_window=9,
        greedy=False,
        temperature=2.0,
    )
    assert session.evictions >= 35
    ids, pos = fed_ids_positions(session)
    _, grids = retained_vision(session)
    assert torch.equal(pos, hf_rope_positions(session.model, ids, grids, fps=2))
    assert session.max_position() == int(pos.max())
    assert session.layout.find(Kind.MEMORY).n == 6 + 9  # memory filled and cut to head + tail


def test_rerotated_keys_equal_fresh_keys_and_sinks_never_change(tiny):
    session = StreamingSession(
        tiny,
        StreamConfig(
            vision_window=2, text_rounds=3, text_sink=4, text_window=6, temperature=2.0, max_new_tokens=4
        ),
    )
    frames = ArraySource(synthetic_frames(30, 2, (56, 84)), 2)
    sinks = None
    for i, _ in enumerate(session.run(frames)):
        if i == 0:
            n_prefix = session.layout.find(Kind.PREFIX).n
            sinks = [
                (layer.keys[:, :, :n_prefix].clone(), layer.values[:, :, :n_prefix].clone())
                for layer in session.cache.layers
            ]
    assert session.evictions >= 25
    ids, pos = fed_ids_positions(session)
    pixels, grids = retained_vision(session)
    fresh = DynamicCache()
    full_forward(session.model, ids, pixels, grids, positions=pos, cache=fresh)
    rows = session.cache.rows
    assert torch.allclose(session.cache.layers[0].keys[:, :, :rows], fresh.layers[0].keys, atol=1e-5, rtol=0)
    assert torch.allclose(
        session.cache.layers[0].values[:, :, :rows], fresh.layers[0].values, atol=1e-5, rtol=0
    )
    for layer, (k, v) in zip(session.cache.layers, sinks, strict=True):
        assert torch.equal(layer.keys[:, :, : k.shape[2]], k) and torch.equal(
            layer.values[:, :, : v.shape[2]], v
        )


EVICTING = [
    dict(policy="streaming"),
    dict(policy="streaming", positions="append"),
    dict(policy="streaming", vision_window=1, text_rounds=1),
    dict(policy="streaming", vision_window=4, text_rounds=2),
    dict(policy="sliding", reset_every=5),
    dict(policy="sliding", reset_every=5, positions="append"),
    dict(policy="recompute"),
]


@pytest.mark.parametrize("options", EVICTING, ids=lambda o: "-".join(f"{v}" for v in o.values()))
def test_one_layer_exact_after_evictions(tiny_one_layer, options):
    """One text layer: K/V depend only on own token and position, so after any evictions and moves
    the next step equals a fresh full forward over the retained tokens at their positions."""
    options = {"vision_window": 2, "text_rounds": 3, "text_sink": 4, "text_window": 6, **options}
    session = stream(tiny_one_layer, 27, greedy=False, temperature=2.0, **options)
    assert session.evictions >= 5
    ids, pos = fed_ids_positions(session)
    _, grids = retained_vision(session)
    if options.get("positions", "contiguous") == "contiguous":
        assert torch.equal(pos, hf_rope_positions(session.model, ids, grids, fps=2))
        assert_trace_matches_reference(session, positions=None)
    else:
        assert int(pos.max()) > len(ids)  # append leaves gaps
        assert_trace_matches_reference(session, positions=pos)


def test_recompute_matches_from_scratch_prefill(tiny):
    """Recompute re-encodes the window: exact for any depth, against get_rope_index positions."""
    session = stream(
        tiny,
        20,
        policy="recompute",
        vision_window=3,
        text_rounds=3,
        text_sink=4,
        text_window=4,
        greedy=False,
        temperature=2.0,
    )
    assert session.evictions == 19  # every step but the first
    assert_trace_matches_reference(session, positions=None)
