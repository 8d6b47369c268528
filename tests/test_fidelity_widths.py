"""Positions and logits at the real widths (method §7.3).

Random weights with Qwen2.5-VL-7B-Instruct's configuration (`bench.shapes`), cut to one text layer
and two vision blocks; the vocabulary is the tiny tokenizer's (a row lookup in and one independent
row per token out: nothing in a forward mixes vocabulary rows, so its size cannot change a position
or another token's logit). One text layer because only then does a retained K/V row depend on its
own token and position alone: deeper, the streamed rows keep context the fresh forward no longer has
(by design, method §2). References: transformers' `get_rope_index` and a fresh full forward.
"""

from pathlib import Path

import pytest
import torch
from helpers import fed_ids_positions, full_forward, hf_rope_positions, retained_vision
from test_exactness import assert_trace_matches_reference, stream

from streamvlm.bench.shapes import qwen2_5_vl_7b_config
from streamvlm.cache import Kind
from streamvlm.models import VideoProcessor
from streamvlm.models.arch import FAMILIES
from streamvlm.models.load import LoadedModel
from streamvlm.models.tiny import train_tokenizer

#: float32 logits of the streamed steps against the fresh forward, absolute (the logits are O(1)).
ATOL = 1e-4


def real_widths_model() -> LoadedModel:
    tokenizer = train_tokenizer()
    config = qwen2_5_vl_7b_config(tokenizer, text_layers=1, vision_layers=2)
    config.vision_config.fullatt_block_indexes = [7, 15, 23, 31]  # as published: blocks 0, 1 are windowed
    config.text_config.vocab_size = -(-len(tokenizer) // 64) * 64
    torch.manual_seed(0)
    model = FAMILIES["qwen2_5_vl"].model_class._from_config(config, attn_implementation="sdpa").eval()
    processor = VideoProcessor(min_pixels=28 * 28)  # 84x112 frames: 12 merged tokens a second
    return LoadedModel(model, tokenizer, processor, FAMILIES["qwen2_5_vl"], Path("."), {})


@pytest.fixture(scope="module")
def real_widths():
    return real_widths_model()


def test_the_config_is_qwen2_5_vl_7b(real_widths):
    text, vision = real_widths.config.text_config, real_widths.config.vision_config
    assert (text.hidden_size, text.num_attention_heads, text.num_key_value_heads) == (3584, 28, 4)
    assert text.intermediate_size == 18944 and text.num_hidden_layers == 1
    assert text.rope_parameters["rope_theta"] == 1e6 and text.rope_parameters["mrope_section"] == [16, 24, 24]
    assert (vision.hidden_size, vision.num_heads, vision.out_hidden_size, vision.depth) == (1280, 16, 3584, 2)
    assert (vision.window_size, vision.fullatt_block_indexes) == (112, [7, 15, 23, 31])
    assert (vision.patch_size, vision.temporal_patch_size, vision.spatial_merge_size) == (14, 2, 2)
    assert vision.tokens_per_second == 2


@pytest.mark.parametrize("vision_window,text_rounds", [(2, 3), (3, 2)])
def test_positions_and_logits_after_evictions(real_widths, vision_window, text_rounds):
    session = stream(
        real_widths,
        10,
        size=(84, 112),
        vision_window=vision_window,
        text_rounds=text_rounds,
        text_sink=4,
        text_window=6,
        greedy=False,
        temperature=2.0,
    )
    assert session.evictions >= 7
    assert session.layout.find(Kind.MEMORY).n == 4 + 6  # the text memory was cut to head + tail
    ids, pos = fed_ids_positions(session)
    pixels, grids = retained_vision(session)
    assert torch.equal(pos, hf_rope_positions(session.model, ids, grids, fps=2))
    assert assert_trace_matches_reference(session, positions=None, atol=ATOL) >= 2
    # The comparison can fail: a gap of 7 positions in the middle (what `append` leaves) is visible.
    gap = pos.clone()
    gap[:, len(ids) // 2 :] += 7
    wrong = full_forward(session.model, ids, pixels, grids, positions=gap)
    n, logits = session.trace[-1][1:]
    assert (logits - wrong[n - 1]).abs().max() > 100 * ATOL
