"""The static-shape, compiled decode path (issue 28) against the eager path and an independent RoPE.

`StreamConfig(compile=True)`: K/V buffers at a fixed capacity (`cache/static.py`), the one-token
decode step compiled with torch.compile (inductor's C++ kernels on this CPU). Its greedy commentary
must be the eager path's, token for token, over a stream long enough to evict vision and text.
"""

from types import SimpleNamespace

import pytest
import torch
import torch._dynamo
from test_rope_and_cache import HEAD_DIM, inv_freq, rope_reference
from torch._dynamo.utils import counters
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from streamvlm import StreamConfig, StreamingSession
from streamvlm.cache import Kind, StreamingKVCache
from streamvlm.cache.static import StaticKVCache
from streamvlm.engine.decode import Sampler
from streamvlm.engine.forward import decode_attention
from streamvlm.errors import StreamvlmError
from streamvlm.sources import ArraySource, synthetic_frames


def _step(cache: StaticKVCache, k: torch.Tensor, v: torch.Tensor) -> None:
    """One row through the fixed-shape path, as the compiled step writes it (here uncompiled)."""
    cache.begin_step()
    keys, values = cache.update(k, v, 0)
    cache.end_step()
    assert keys.shape[-2] == values.shape[-2] == cache.capacity  # the step reads every buffer row
    mask = cache.step_mask()
    assert mask.shape == (1, 1, 1, cache.capacity)
    assert int(mask.sum()) == cache.rows and bool(mask[0, 0, 0, : cache.rows].all())


def test_static_rows_after_eviction_and_rerotation_equal_an_independent_reference():
    """Rows appended by prefill and by one-token steps, then evicted, moved and re-rotated many times:
    the static buffers hold R(final position)·k and the right values (transformers' RoPE in float64
    is the reference), the same bytes as the growing cache, in the buffers allocated at the start."""
    torch.manual_seed(0)
    total = 120
    k_pre = torch.randn(1, 2, total, HEAD_DIM, dtype=torch.float64)
    v_all = torch.randn(1, 2, total, HEAD_DIM)
    born = torch.arange(total) * 3  # the position each row is computed at
    k_all = rope_reference(k_pre, born).float()
    static, dynamic = StaticKVCache(inv_freq(), capacity=64), StreamingKVCache(inv_freq())
    origin = torch.zeros(0, dtype=torch.long)  # which computed row each cached row is
    pos = torch.zeros(0, dtype=torch.long)  # each cached row's current position
    gen = torch.Generator().manual_seed(1)
    nxt, buffers, evictions = 0, None, 0
    while nxt < total:
        n = min(int(torch.randint(1, 6, (1,), generator=gen)), total - nxt)  # a prefill ...
        rows = slice(nxt, nxt + n)
        static.update(k_all[:, :, rows], v_all[:, :, rows], 0)
        dynamic.update(k_all[:, :, rows], v_all[:, :, rows], 0)
        for i in range(nxt + n, min(nxt + n + 3, total)):  # ... then up to 3 one-token steps
            _step(static, k_all[:, :, i : i + 1], v_all[:, :, i : i + 1])
            dynamic.update(k_all[:, :, i : i + 1], v_all[:, :, i : i + 1], 0)
        added = torch.arange(nxt, min(nxt + n + 3, total))
        origin, pos, nxt = torch.cat((origin, added)), torch.cat((pos, born[added])), int(added[-1]) + 1
        if buffers is None:
            buffers = [b.data_ptr() for b in (static.layers[0].keys, static.layers[0].values)]
        if static.rows > 24:  # evict: keep a 4-row sink, drop some rows, shift the rest by one scalar
            rest = torch.arange(4, static.rows)
            keep = torch.cat((torch.arange(4), rest[torch.rand(rest.numel()) > 0.4]))
            delta = torch.where(keep < 4, 0, int(torch.randint(-200, 200, (1,), generator=gen)))
            delta = torch.where(pos[keep] + delta < 0, 0, delta)
            static.reindex(keep, delta)
            dynamic.reindex(keep, delta)
            origin, pos = origin[keep], pos[keep] + delta
            evictions += 1
    assert evictions >= 5 and static.rows == dynamic.rows == origin.numel()
    layer, rows = static.layers[0], static.rows
    expected = rope_reference(k_pre[:, :, origin], pos)
    assert (layer.keys[:, :, :rows].double() - expected).abs().max() < 2e-5
    assert torch.equal(layer.values[:, :, :rows], v_all[:, :, origin])
    assert torch.equal(layer.keys_orig[:, :, :rows], k_all[:, :, origin])
    assert torch.equal(static.shift, pos - born[origin])
    assert torch.equal(layer.keys[:, :, :rows], dynamic.layers[0].keys[:, :, :rows])
    assert torch.equal(layer.values[:, :, :rows], dynamic.layers[0].values[:, :, :rows])
    # written in place: the buffers of the first feed, at the first capacity
    assert [b.data_ptr() for b in (layer.keys, layer.values)] == buffers
    assert layer.keys.shape[-2] == static.capacity == 64 and static.regrowths == 0


def test_static_cache_regrows_when_outgrown():
    cache = StaticKVCache(inv_freq(), capacity=lambda: 8)
    k = torch.randn(1, 2, 6, HEAD_DIM)
    cache.update(k, k, 0)
    _step(cache, k[:, :, :1], k[:, :, :1])
    _step(cache, k[:, :, 1:2], k[:, :, 1:2])
    with pytest.warns(UserWarning, match="reallocating"):
        _step(cache, k[:, :, 2:3], k[:, :, 2:3])
    assert cache.regrowths == 1 and cache.capacity == 16 and cache.rows == 9
    assert torch.equal(cache.layers[0].keys[:, :, :9], torch.cat((k, k[:, :, :3]), dim=2))


def test_device_pick_chooses_what_the_host_sampler_chooses():
    """Greedy `pick` (fixed shapes, no host sync) equals `__call__`, penalty, bans and stops included;
    sampled with top-k alone it draws what `__call__` draws; with top-p it stays inside top-k."""
    torch.manual_seed(0)
    vocab = 300
    banned = torch.zeros(vocab, dtype=torch.bool)
    banned[:10] = True
    seen = torch.rand(vocab) > 0.7
    for greedy_stop in (False, True):
        sampler = Sampler(banned, greedy=True, repetition_penalty=1.3, stops=(42, 43), end=7)
        for _ in range(50):
            logits = torch.randn(vocab) * 3
            if greedy_stop:
                logits[43] = 100.0
            seen_host, seen_dev = seen.clone(), seen.clone()
            token = sampler(logits, seen_host)
            seen_host[token] = True
            picked = sampler.pick(logits, seen_dev)
            assert int(picked) == token and torch.equal(seen_dev, seen_host)
            assert token != 43 and (token == 7) == greedy_stop
    # top-k alone: the same survivors in the same order, so the same draws from the same seed
    host, device = (Sampler(banned, temperature=0.7, top_k=20, repetition_penalty=1.2, seed=5) for _ in "ab")
    draws = [torch.randn(vocab) for _ in range(100)]
    seen_host, seen_dev = seen.clone(), seen.clone()
    picked = [int(device.pick(x, seen_dev)) for x in draws]
    chosen = []
    for x in draws:
        chosen.append(host(x, seen_host))
        seen_host[chosen[-1]] = True
    assert picked == chosen and torch.equal(seen_dev, seen_host)
    sampler = Sampler(banned, temperature=0.7, top_k=5, top_p=0.9)
    logits = torch.randn(vocab)
    allowed = set(torch.topk(logits.masked_fill(banned, float("-inf")), 5).indices.tolist())
    picked = {int(sampler.pick(logits)) for _ in range(300)}
    assert picked <= allowed and len(picked) > 1


def test_decode_attention_keeps_grouped_heads_inside_compile():
    """Inside compile one query attends on the K/V heads as they are (query heads packed per group,
    no copy of K/V per query head) and gives transformers' SDPA attention; outside, it is that one."""
    torch.manual_seed(0)
    module = SimpleNamespace(num_key_value_groups=3, is_causal=True, training=False)
    q, k, v = torch.randn(1, 6, 1, 8), torch.randn(1, 2, 20, 8), torch.randn(1, 2, 20, 8)
    mask = (torch.arange(20) < 15).view(1, 1, 1, 20)
    reference = sdpa_attention_forward(module, q, k, v, mask, scaling=0.3)[0]
    queries = []

    def backend(gm, example_inputs):
        for node in gm.graph.nodes:
            if "scaled_dot_product_attention" in str(node.target):
                queries.append(tuple(node.args[0].meta["example_value"].shape))
        return gm

    compiled = torch.compile(
        lambda q, k, v, m: decode_attention(module, q, k, v, m, scaling=0.3)[0], backend=backend
    )
    assert torch.allclose(compiled(q, k, v, mask), reference, atol=1e-6)
    assert queries == [(1, 2, 3, 8)]  # the 6 query heads as 2 groups of 3 rows, on the 2 K/V heads
    assert torch.equal(decode_attention(module, q, k, v, mask, scaling=0.3)[0], reference)


def test_compile_refuses_an_unbounded_policy(tiny):
    with pytest.raises(StreamvlmError, match="bounded"):
        StreamingSession(tiny, StreamConfig(policy="full", compile=True))


def _stream(loaded, compile: bool):
    config = StreamConfig(
        greedy=True,
        repetition_penalty=1.05,
        max_new_tokens=5,
        vision_window=2,
        text_rounds=2,
        text_sink=3,
        text_window=5,
        compile=compile,
    )
    session = StreamingSession(loaded, config)
    trace, tokens = [], []
    session.on_logits = lambda epoch, rows, logits: trace.append((epoch, rows, logits.float().clone()))
    generate = session._generate

    def recording(logits, index):
        generated = generate(logits, index)
        tokens.append(list(generated))
        return generated

    session._generate = recording
    frames = ArraySource(synthetic_frames(10, 2, (56, 84), seed=3), 2)
    texts = [line.text for line in session.run(frames)]
    return session, texts, tokens, trace


def test_compiled_greedy_commentary_equals_eager(tiny):
    eager, eager_texts, eager_tokens, eager_trace = _stream(tiny, compile=False)
    torch._dynamo.reset()  # graphs other tests compiled (other capacities) would count as recompiles
    counters.clear()
    with torch._dynamo.config.patch(error_on_recompile=True):  # one compile for the whole stream
        fast, texts, tokens, trace = _stream(tiny, compile=True)
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    assert eager.evictions >= 7 and fast.evictions == eager.evictions
    assert fast.layout.find(Kind.MEMORY).n == 3 + 5  # commentary moved into the memory and cut
    assert tokens == eager_tokens and texts == eager_texts
    assert sum(len(t) for t in tokens) > 20 and any(texts)
    # every logits vector: prefills (eager in both) and compiled one-token steps
    assert [(e, n) for e, n, _ in trace] == [(e, n) for e, n, _ in eager_trace]
    for (_, n, logits), (_, _, reference) in zip(trace, eager_trace, strict=True):
        assert torch.allclose(logits, reference, atol=1e-4, rtol=0), (n, (logits - reference).abs().max())
    # the same rows in the same cache order, in the buffers allocated at the first feed
    rows = fast.cache.rows
    assert rows == eager.cache.rows and fast.cache.regrowths == 0 and rows <= fast.cache.capacity
    for a, b in zip(fast.cache.layers, eager.cache.layers, strict=True):
        assert a.keys.shape[-2] == fast.cache.capacity
        assert torch.allclose(a.keys[:, :, :rows], b.keys[:, :, :rows], atol=1e-5, rtol=0)
        assert torch.allclose(a.values[:, :, :rows], b.values[:, :, :rows], atol=1e-5, rtol=0)
    assert torch.equal(fast.cache.shift, eager.cache.shift)
