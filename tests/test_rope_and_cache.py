"""The K/V store on its own: re-rotation against an independent RoPE, drift, plans."""

import pytest
import torch
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb

from streamvlm.cache import StreamingKVCache, rotate_keys

HEAD_DIM = 16


def inv_freq(theta=10000.0, dim=HEAD_DIM):
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))


def rope_reference(k_pre: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """transformers' own rotation, in float64, of pre-RoPE keys (B, H, N, D) at integer positions (N,)."""
    angle = positions.to(torch.float64)[:, None] * inv_freq()[None]
    angle = torch.cat((angle, angle), -1)[None]  # (1, N, D)
    _, k = apply_rotary_pos_emb(k_pre, k_pre.to(torch.float64), angle.cos(), angle.sin())
    return k


def test_rotation_composes_with_transformers_rope():
    torch.manual_seed(0)
    k_pre = torch.randn(1, 2, 50, HEAD_DIM, dtype=torch.float64)
    p = torch.randint(0, 5000, (50,))
    s = torch.randint(-3000, 3000, (50,))
    moved = rotate_keys(rope_reference(k_pre, p).float(), s, inv_freq())
    assert torch.allclose(moved.double(), rope_reference(k_pre, p + s), atol=2e-5)


def _cache_with(keys: torch.Tensor, values: torch.Tensor) -> StreamingKVCache:
    cache = StreamingKVCache(inv_freq())
    cache.update(keys, values, 0)
    return cache


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 2e-5), (torch.bfloat16, 3e-2)])
def test_no_drift_after_10000_evictions(dtype, atol):
    """Rows that live through 10,000 shifts hold R(final position)·k within one rounding."""
    torch.manual_seed(0)
    n = 48
    k_pre = torch.randn(1, 2, n, HEAD_DIM, dtype=torch.float64)
    pos = torch.randint(100, 2000, (n,))
    cache = _cache_with(rope_reference(k_pre, pos).to(dtype), torch.randn(1, 2, n, HEAD_DIM).to(dtype))
    sink = cache.layers[0].keys[:, :, :4].clone()
    naive = cache.layers[0].keys[:, :, :n].clone()  # what rotating the current key each time gives
    gen = torch.Generator().manual_seed(1)
    for _ in range(10_000):
        src = torch.arange(n)
        delta = torch.randint(-40, 41, (n,), generator=gen)
        delta[:4] = 0  # the sink never moves
        delta = torch.where(pos + delta < 0, 0, delta)
        pos = pos + delta
        cache.reindex(src, delta)
        naive = rotate_keys(naive, delta, inv_freq())
    expected = rope_reference(k_pre, pos)
    got = cache.layers[0].keys[:, :, :n].double()
    assert (got - expected).abs().max() < atol
    assert torch.equal(cache.layers[0].keys[:, :, :4], sink)
    if dtype == torch.bfloat16:  # the naive scheme drifts well past one rounding: the test can tell
        assert (naive.double() - expected).abs().max() > 3 * (got - expected).abs().max()


def test_reindex_reorders_drops_and_keeps_values():
    torch.manual_seed(0)
    k, v = torch.randn(1, 2, 10, HEAD_DIM), torch.randn(1, 2, 10, HEAD_DIM)
    cache = _cache_with(k, v)
    src = torch.tensor([0, 1, 2, 7, 8, 5])
    delta = torch.tensor([0, 0, 0, -4, -4, 2])
    cache.reindex(src, delta)
    assert cache.get_seq_length() == 6
    assert torch.equal(cache.layers[0].values[:, :, :6], v[:, :, src])
    assert torch.equal(cache.layers[0].keys[:, :, :3], k[:, :, :3])
    assert torch.allclose(
        cache.layers[0].keys[:, :, 3:6], rotate_keys(k[:, :, src[3:]], delta[3:], inv_freq())
    )
    assert cache.get_mask_sizes(5, 0) == (11, 0)
    with pytest.raises(IndexError):
        cache.reindex(torch.tensor([9]), torch.tensor([0]))


def test_appends_grow_capacity_in_place():
    cache = StreamingKVCache(inv_freq())
    for i in range(100):
        k = torch.full((1, 1, 3, HEAD_DIM), float(i))
        keys, values = cache.update(k, k, 0)
    assert keys.shape[-2] == 300 and cache.rows == 300
    assert torch.equal(keys[0, 0, ::3, 0], torch.arange(100, dtype=torch.float32))
    assert cache.kv_bytes() == 2 * 300 * HEAD_DIM * 4
