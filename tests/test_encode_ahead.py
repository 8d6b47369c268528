"""Vision encoding of the next second ahead of its step (`step(..., ahead=)`; on a GPU it overlaps
the current second's decoding on a side CUDA stream): the same commentary and logits as encoding it
in the step, for every policy; frames that differ from what was encoded are encoded again."""

import numpy as np
import pytest
import torch

from streamvlm import StreamConfig, StreamingSession
from streamvlm.runner import with_next
from streamvlm.sources import synthetic_frames

SMALL = dict(greedy=True, max_new_tokens=4, vision_window=2, text_rounds=2, text_sink=3, text_window=5)


def stream(loaded, seconds, ahead: bool, policy="streaming", swap_at=None):
    session = StreamingSession(loaded, StreamConfig(policy=policy, **SMALL))
    trace = []
    session.on_logits = lambda epoch, rows, logits: trace.append(logits.float().clone())
    frames = list(synthetic_frames(seconds * 2, 1, (56, 84), seed=5))
    frames = [np.stack(frames[2 * i : 2 * i + 2]) for i in range(seconds)]
    texts = []
    for t in range(seconds):
        following = frames[t + 1] if ahead and t + 1 < seconds else None
        if swap_at is not None and t + 1 == swap_at and following is not None:
            following = frames[0]  # encoded ahead, but another second arrives: it must be re-encoded
        texts.append(session.step(frames[t], float(t), t + 1.0, ahead=following).text)
    return session, texts, torch.stack(trace)


@pytest.mark.parametrize("policy", ["streaming", "recompute"])
def test_encoding_ahead_gives_the_same_commentary_and_logits(tiny, policy):
    _, plain_texts, plain = stream(tiny, 8, ahead=False, policy=policy)
    session, texts, got = stream(tiny, 8, ahead=True, policy=policy)
    assert texts == plain_texts and session.evictions > 0
    torch.testing.assert_close(got, plain, atol=1e-5, rtol=1e-5)
    assert session.ahead is None and not session.encoded  # nothing left over


def test_the_encoded_output_is_what_the_step_feeds(tiny, monkeypatch):
    """Encoded ahead, a second's frames go to the model as the tower's output (mm_encoder_outputs), and
    pixels only when the frames that arrive are not the ones encoded."""
    seen = []
    forward = tiny.model.forward

    def spy(*args, **kwargs):
        if "mm_encoder_outputs" in kwargs or "pixel_values_videos" in kwargs:
            seen.append("encoded" if "mm_encoder_outputs" in kwargs else "pixels")
        return forward(*args, **kwargs)

    monkeypatch.setattr(tiny.model, "forward", spy)
    stream(tiny, 5, ahead=True, swap_at=3)
    assert seen == ["pixels", "encoded", "encoded", "pixels", "encoded"]


def test_with_next_hands_over_everything_before_an_error():
    def items():
        yield from (1, 2, 3)
        raise OSError("lost")

    got = []
    with pytest.raises(OSError, match="lost"):
        for pair in with_next(items()):
            got.append(pair)
    assert got == [(1, 2), (2, 3), (3, None)]
    assert list(with_next([])) == [] and list(with_next([7])) == [(7, None)]
