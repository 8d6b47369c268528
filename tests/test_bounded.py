"""Long streams: the streaming cache stays bounded; the baselines behave as defined."""

import torch

from streamvlm import StreamConfig, StreamingSession
from streamvlm.cache import Kind
from streamvlm.sources import ArraySource, synthetic_frames


def run(loaded, seconds, size=(28, 28), **options):
    options = {"max_new_tokens": 3, "temperature": 1.5, **options}
    session = StreamingSession(loaded, StreamConfig(**options))
    stats = [line.stats for line in session.run(ArraySource(synthetic_frames(seconds, 2, size), 2))]
    return session, stats


def test_thirty_minute_stream_is_bounded(tiny):
    """Default windows (16 s vision, 16 rounds, 512 + 512 memory) over 1800 s of stream."""
    session, stats = run(tiny, 1800)
    config = session.config
    prefix = session.layout.find(Kind.PREFIX).n + session.layout.find(Kind.MEMORY_END).n
    # per round at most: its structure (user turn, time, vision, reply header) + generated tokens
    # + the closing <|im_end|>\n appended when the token limit cuts a reply
    structure = max(
        sum(
            s.n for s in session.layout.spans if s.round == r and s.kind not in (Kind.REPLY, Kind.REPLY_CLOSE)
        )
        for r in session.layout.rounds()
    )
    per_round = structure + config.max_new_tokens + 2
    bound = (
        prefix
        + config.text_sink
        + config.text_window
        + max(config.vision_window, config.text_rounds) * per_round
    )
    tokens = torch.tensor([s.cache_tokens for s in stats])
    positions = torch.tensor([s.max_position for s in stats])
    assert session.layout.find(Kind.MEMORY).n == config.text_sink + config.text_window  # memory is full
    assert int(tokens.max()) <= bound and int(positions.max()) <= bound
    # flat once full: the second half never exceeds what the first half after filling reached
    filled = int((tokens >= tokens[-1] - per_round).nonzero()[0, 0])
    assert filled < 900
    assert (
        int(tokens[900:].max()) <= int(tokens[filled:900].max()) + config.text_rounds * config.max_new_tokens
    )
    assert (
        int(positions[900:].max())
        <= int(positions[filled:900].max()) + config.text_rounds * config.max_new_tokens
    )
    assert (
        stats[-1].kv_bytes == session.cache.kv_bytes() <= bound * stats[-1].kv_bytes // stats[-1].cache_tokens
    )


def test_full_attention_grows(tiny):
    _, stats = run(tiny, 30, policy="full")
    tokens = [s.cache_tokens for s in stats]
    assert all(b > a for a, b in zip(tokens, tokens[1:], strict=False))
    assert stats[-1].max_position > stats[0].max_position + 30 * 4


def test_sliding_resets_every_n_seconds(tiny):
    session, stats = run(tiny, 26, policy="sliding", reset_every=8)
    tokens = [s.cache_tokens for s in stats]
    prefix = sum(s.n for s in session.layout.spans if s.round < 0)
    for t in (8, 16, 24):  # right after a reset only the prefix and the new round remain
        assert tokens[t] < tokens[t - 1]
        assert tokens[t] - prefix <= 30
    assert tokens[7] > tokens[1] and tokens[15] > tokens[9]


def test_streaming_is_bounded_where_full_is_not(tiny):
    _, streaming = run(tiny, 60, vision_window=4, text_rounds=4, text_sink=8, text_window=8)
    _, full = run(tiny, 60, policy="full")
    assert max(s.cache_tokens for s in streaming[30:]) <= max(s.cache_tokens for s in streaming[15:30]) + 16
    assert full[-1].cache_tokens > 3 * streaming[-1].cache_tokens
