"""The chat layout, reply shapes, and token selection."""

import pytest
import torch
from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

from streamvlm import StreamConfig, StreamingSession
from streamvlm.cache import Kind, Layout
from streamvlm.engine.decode import Sampler, banned_token_mask
from streamvlm.engine.prompt import Renderer


def test_layout_matches_the_qwen_chat_template(tiny):
    """Our piecewise rendering equals the published chat template over the same conversation (with
    the query as a turn of its own: the research layout is tests/test_fidelity_prompt.py's)."""
    renderer = Renderer(tiny.tokenizer, query_turn="prefix")
    layout = Layout()
    layout.extend(renderer.prefix(query="Commentate on this match", previous_text="Red leads 3 to 1."))
    offsets = torch.zeros(3, 4, dtype=torch.long)
    layout.extend(renderer.round(0, 0.0, 1.0, offsets))
    layout.extend(renderer.reply(0, "Blue serves"))
    layout.extend(renderer.round(1, 1.0, 2.0, offsets))
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Commentate on this match"},
        {"role": "previous text", "content": "Red leads 3 to 1."},
        {"role": "user", "content": [{"type": "text", "text": "Time=0.0-1.0s"}, {"type": "video"}]},
        {"role": "assistant", "content": " Blue serves ..."},
        {"role": "user", "content": [{"type": "text", "text": "Time=1.0-2.0s"}, {"type": "video"}]},
    ]
    text = tiny.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    text = text.replace("<|video_pad|>", "<|video_pad|>" * 4)
    assert layout.token_ids().tolist() == tiny.tokenizer.encode(text, add_special_tokens=False)


def test_encode_keeps_its_tokens_and_hands_out_copies(tiny, monkeypatch):
    import pickle

    import streamvlm.engine.prompt as prompt

    monkeypatch.setattr(prompt, "ENCODED", 3)
    renderer = Renderer(tiny.tokenizer)
    texts = ["Red serves", " Blue returns", "Time=1.0-2.0s", "Time=2.0-3.0s", "Red serves"]
    for text in texts:
        got = renderer.encode(text)
        assert got == tiny.tokenizer.encode(text, add_special_tokens=False)
        got.append(-1)  # the caller's list: the kept tokens are not touched
    assert renderer.encode("Red serves")[-1] != -1
    assert len(renderer._tokens) == 3  # "\n" and the first two texts: no more are kept
    assert renderer.encode("") == []
    assert pickle.loads(pickle.dumps(renderer)).encode("Red serves") == renderer.encode("Red serves")


def test_content_length_strips_only_the_silence_marker(tiny):
    r = Renderer(tiny.tokenizer)
    enc = r.encode
    im_end = r.im_end
    assert r.content_length(enc(" ...") + [im_end]) == 0
    assert r.content_length(enc(" Blue scores") + enc(" ...") + [im_end]) == len(enc(" Blue scores"))
    assert r.content_length(enc(" Blue scores") + [im_end]) == len(enc(" Blue scores"))
    dots = enc(" ..") + enc(".")  # the marker split over two tokens
    assert r.content_length(enc(" Red") + dots + [im_end]) == len(enc(" Red"))
    assert r.content_length(enc(" wait...")) == len(enc(" wait..."))  # part of a word, not the marker
    assert r.content_length([]) == 0


def test_reply_turns_stay_well_formed(tiny):
    """Whatever is generated (silence, words, cut at the limit), each turn ends `<|im_end|>\\n`."""
    session = StreamingSession(
        tiny, StreamConfig(temperature=3.0, max_new_tokens=3, vision_window=4, text_rounds=4)
    )
    from streamvlm.sources import ArraySource, synthetic_frames

    for _ in session.run(ArraySource(synthetic_frames(12, 2, (56, 56)), 2)):
        pass
    close = session.renderer.turn_close()
    for r in session.layout.rounds():
        spans = [s for s in session.layout.spans if s.round == r and s.kind in (Kind.REPLY, Kind.REPLY_CLOSE)]
        assert spans[-1].kind == Kind.REPLY_CLOSE and spans[-1].ids[-2:].tolist() == close


def test_structural_tokens_are_never_sampled(tiny):
    vocab = tiny.config.text_config.vocab_size
    im_end = tiny.tokenizer.convert_tokens_to_ids("<|im_end|>")
    banned = banned_token_mask(tiny.tokenizer, vocab, allowed=(im_end,))
    for token in ("<|video_pad|>", "<|image_pad|>", "<|vision_start|>", "<|im_start|>", "<|endoftext|>"):
        assert banned[tiny.tokenizer.convert_tokens_to_ids(token)]
    assert not banned[im_end] and banned[len(tiny.tokenizer) :].all() and not banned[:100].any()
    logits = torch.zeros(vocab)
    logits[banned] = 1e4  # make every forbidden token overwhelmingly likely
    sampler = Sampler(banned, temperature=1.0, seed=0)
    assert not any(banned[sampler(logits)] for _ in range(200))
    assert not banned[Sampler(banned, greedy=True)(logits)]


def test_repetition_penalty_matches_transformers():
    torch.manual_seed(0)
    logits = torch.randn(50)
    seen_ids = torch.tensor([3, 7, 7, 20, 41])
    seen = torch.zeros(50, dtype=torch.bool)
    seen[seen_ids] = True
    expected = RepetitionPenaltyLogitsProcessor(1.3)(seen_ids[None], logits[None].clone())[0]
    sampler = Sampler(torch.zeros(50, dtype=torch.bool), greedy=True, repetition_penalty=1.3)
    for _ in range(5):
        target = int(expected.argmax())
        assert sampler(logits, seen) == target
        logits[target] -= 10  # walk down the ranking
        expected[target] -= 10 if target not in seen_ids else 10 / 1.3 if expected[target] > 0 else 10 * 1.3


def test_sampling_is_seeded(tiny):
    from streamvlm.sources import ArraySource, synthetic_frames

    def texts(seed):
        s = StreamingSession(tiny, StreamConfig(temperature=1.0, seed=seed, max_new_tokens=5))
        return [c.text for c in s.run(ArraySource(synthetic_frames(4, 2, (56, 56)), 2))]

    assert texts(1) == texts(1)
    assert texts(1) != texts(2)


@pytest.mark.parametrize(
    "bad",
    [
        dict(fps=0),
        dict(policy="nope"),
        dict(vision_window=0),
        dict(temperature=0),
        dict(positions="sideways"),
        dict(max_new_tokens=0),
    ],
)
def test_config_rejects_bad_values(bad):
    from streamvlm.errors import StreamvlmError

    with pytest.raises(StreamvlmError):
        StreamConfig(**bad)
