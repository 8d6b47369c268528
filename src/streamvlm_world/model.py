"""The shipped model's architecture and tokenizer: a few-million-parameter Qwen2.5-VL for the world.

Shapes follow the measured trial (world notes): text 256 wide x 4 layers (4 heads, 2 KV heads,
MLP 1024), vision 2 blocks x 128; frames seen at 56x56 (4 merged vision tokens per second). The
byte-level BPE tokenizer is trained on the world's own text (commentary, opening texts, the
chat layout and time stamps), so every commentary word is one token.
"""

import random
from pathlib import Path

from streamvlm.engine.prompt import QUERY_IN_PREFIX, SILENCE
from streamvlm.models.tiny import TinySpec, write_tiny_checkpoint

from .commentary import NICKNAMES, vocabulary
from .config import WorldConfig
from .stream import World

WORLD_SPEC = TinySpec(
    hidden_size=256,
    layers=4,
    heads=4,
    kv_heads=2,
    intermediate_size=1024,
    mrope_section=(8, 12, 12),
    vision_depth=2,
    vision_hidden=128,
    vision_heads=2,
    vocab_size=512,
    min_pixels=56 * 56,
    max_pixels=56 * 56,
)

#: Streaming defaults stored with the model (`streamvlm.json`): the memory sizes it was trained with.
STREAM_DEFAULTS = {"text_sink": 32, "text_window": 96, "greedy": True, "query": WorldConfig().query}


def world_corpus(seeds: int = 40, seconds: int = 600, seed: int = 0) -> list[str]:
    """Text the shipped tokenizer is trained on: what the model will read and write."""
    rng = random.Random(seed)
    lines = ["You are a helpful assistant.", "previous text", "system", "user", "assistant", SILENCE.strip()]
    lines += [f"{a} are the {b}." for a in ("Red", "Blue") for b in NICKNAMES]
    for s in range(seeds):  # half the matches announce the score with serves too, half say its change
        world = World(WorldConfig(seed=10_000 + s, score_on_serve=s % 2 == 1, score_change=s % 4 >= 2))
        lines.append(world.opening_text)
        lines += [row["text"] + SILENCE for row in world.rows(seconds) if row["text"]]
    for _ in range(4000):
        a = rng.randint(0, 7200)
        lines.append(f"Time={a:.1f}-{a + 1:.1f}s")
    lines.append(" ".join(vocabulary(WorldConfig(score_on_serve=True, score_change=True))))
    return lines


def init_world_checkpoint(out_dir: str | Path, seed: int = 0, extra: dict | None = None) -> Path:
    """The untrained shipped architecture with its tokenizer and processor files."""
    # the query as a never-evicted user turn of its own, as the shipped model was trained (method §7.2)
    extra = {"stream": STREAM_DEFAULTS, "query_turn": QUERY_IN_PREFIX, **(extra or {})}
    return write_tiny_checkpoint(out_dir, seed=seed, spec=WORLD_SPEC, corpus=world_corpus(), extra=extra)
