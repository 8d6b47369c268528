"""One chat request to a loaded model: text and image turns in, one assistant reply out.

    reply = chat(loaded, [ChatTurn("user", ["What is this?", image_hwc_uint8])], max_tokens=32)

The prompt uses the same chat layout and vision path as the streaming engine (an image is a
one-frame video: `<|vision_start|><|video_pad|>…<|vision_end|>` with its 3-D M-RoPE offsets),
prefilled into a fresh cache; decoding stops at `<|im_end|>`, a stop string or `max_tokens`.
"""

from dataclasses import dataclass

import numpy as np
import torch

from ..cache import Kind, Layout, StreamingKVCache
from ..cache.layout import Span
from ..config import DEFAULT_SYSTEM_PROMPT
from .decode import Sampler, banned_token_mask
from .forward import feed
from .prompt import Renderer


@dataclass
class ChatTurn:
    role: str  # system, user or assistant
    parts: list  # text (str) and images ((H, W, 3) uint8 arrays), in order


@dataclass
class ChatReply:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" or "length"


@dataclass
class ChatPrompt:
    """A rendered chat prompt (its token layout and processed images), for one `chat` call."""

    layout: Layout
    pixels: list  # (pixel values, grid) of each image, in order

    @property
    def tokens(self) -> int:
        return len(self.layout)


@torch.inference_mode()
def prepare_chat(loaded, turns: list[ChatTurn]) -> ChatPrompt:
    """Tokens and pixels of `turns` (no model call: a server counts the tokens before queueing)."""
    model, processor, family = loaded.model, loaded.processor, loaded.family
    renderer = Renderer(loaded.tokenizer)
    if not turns or turns[0].role != "system":
        turns = [ChatTurn("system", [DEFAULT_SYSTEM_PROMPT]), *turns]
    layout, pixels = Layout(), []
    for turn in turns:
        layout.append(Span(Kind.PREFIX, renderer.turn_open(turn.role)))
        for part in turn.parts:
            if isinstance(part, str):
                layout.append(Span(Kind.PREFIX, renderer.encode(part)))
                continue
            values, grid = processor(np.asarray(part)[None])
            offsets = family.vision_offsets(model.config, grid, 1)
            pixels.append((values, grid))
            layout.append(Span(Kind.VISION_OPEN, [renderer.vision_start]))
            layout.append(Span(Kind.VISION, [renderer.video_pad] * offsets.shape[1], rel=offsets))
            layout.append(Span(Kind.VISION_CLOSE, [renderer.vision_end]))
        layout.append(Span(Kind.PREFIX, renderer.turn_close()))
    layout.append(Span(Kind.REPLY_OPEN, renderer.turn_open("assistant")))
    return ChatPrompt(layout, pixels)


@torch.inference_mode()
def chat(
    loaded,
    turns: list[ChatTurn] | ChatPrompt,
    max_tokens: int = 128,
    temperature: float = 1.0,
    seed: int = 0,
    stop: list[str] = (),
    top_p: float = 1.0,
) -> ChatReply:
    """The assistant's reply to `turns` (or to a `prepare_chat` prompt, which it uses up)."""
    model, family = loaded.model, loaded.family
    renderer = Renderer(loaded.tokenizer)
    prompt = turns if isinstance(turns, ChatPrompt) else prepare_chat(loaded, turns)
    layout, pixels, prompt_tokens = prompt.layout, prompt.pixels, prompt.tokens

    cache = StreamingKVCache(family.inv_freq(model))

    pixels_of = lambda spans: pixels  # noqa: E731 - every image is in the first feed

    vocab_size = model.config.text_config.vocab_size
    stops = loaded.stop_ids  # <|im_end|> and the checkpoint's eos ids all end the reply
    sampler = Sampler(
        banned_token_mask(loaded.tokenizer, vocab_size, allowed=stops),
        greedy=temperature == 0,
        temperature=temperature or 1.0,
        seed=seed,
        top_p=top_p,
        stops=stops,
        end=renderer.im_end,
    )
    logits, generated = feed(model, cache, layout, pixels_of), []
    while len(generated) < max_tokens:
        token = sampler(logits)
        if token == renderer.im_end:
            return ChatReply(renderer.decode(generated).strip(), prompt_tokens, len(generated) + 1, "stop")
        generated.append(token)
        text = renderer.decode(generated)
        cut = min((text.find(s) for s in stop if s and s in text), default=-1)
        if cut >= 0:
            return ChatReply(text[:cut].strip(), prompt_tokens, len(generated), "stop")
        layout.append_tokens(Kind.REPLY, -1, [token])
        logits = feed(model, cache, layout, pixels_of)
    return ChatReply(renderer.decode(generated).strip(), prompt_tokens, len(generated), "length")
