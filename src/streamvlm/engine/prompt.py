"""The one place that renders the chat layout, for the engine and for training data alike.

    <|im_start|>system\n{system}<|im_end|>\n                 PREFIX (never evicted)
    <|im_start|>previous text\n                              PREFIX
    {previous text + retired commentary: head + tail}        MEMORY
    <|im_end|>\n                                             MEMORY_END
    <|im_start|>user\n                                       USER_OPEN     } one round per
    Time=12.0-13.0s                                          TIME          } second of stream
    <|vision_start|><|video_pad|>…<|vision_end|>             VISION_*      }
    {query, round 0 only}<|im_end|>\n                        USER_CLOSE    }
    <|im_start|>assistant\n                                  REPLY_OPEN    }
     words spoken in that second                             REPLY         }
     ...<|im_end|>\n                                         REPLY_CLOSE   }

This is the research inference's layout (method §7.2 lists the few differences). The query goes
where it puts it: after the first second's frames, in that user turn, and it leaves with that
turn. A model whose checkpoint says `"query_turn": "prefix"` (the shipped world model, trained that
way) gets it as a user turn of its own after the system prompt, never evicted. Every second's
target is its words followed by the silence marker " ..."; a silent second is just " ...". Text
pieces are tokenised one at a time, always the same way, so a prompt rendered for training and the
engine's prompt for the same seconds are token-identical.
"""

from dataclasses import dataclass

import torch

from ..cache.layout import Kind, Span
from ..config import DEFAULT_SYSTEM_PROMPT
from ..errors import StreamvlmError

SILENCE = " ..."
MEMORY_ROLE = "previous text"
ENCODED = 4096  # texts whose tokens a renderer keeps
#: Where the query goes: in the first round's user turn after its frames (the research inference),
#: or as a never-evicted user turn of its own in the prefix.
QUERY_IN_ROUND, QUERY_IN_PREFIX = "round", "prefix"


def time_text(start: float, end: float) -> str:
    return f"Time={start:.1f}-{end:.1f}s"


def query_turn(loaded) -> str:
    """The query placement a checkpoint was trained with (`query_turn` in its `streamvlm.json`)."""
    turn = loaded.defaults.get("query_turn", QUERY_IN_ROUND)
    if turn not in (QUERY_IN_ROUND, QUERY_IN_PREFIX):
        allowed = f"{QUERY_IN_ROUND!r} or {QUERY_IN_PREFIX!r}"
        raise StreamvlmError(f"{loaded.path}: query_turn must be {allowed}, not {turn!r}")
    return turn


@dataclass
class Renderer:
    tokenizer: object
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    query_turn: str = QUERY_IN_ROUND

    def __post_init__(self):
        vocab = self.tokenizer.get_vocab()
        self.im_start = vocab["<|im_start|>"]
        self.im_end = vocab["<|im_end|>"]
        self.vision_start = vocab["<|vision_start|>"]
        self.vision_end = vocab["<|vision_end|>"]
        self.video_pad = vocab["<|video_pad|>"]
        self._tokens: dict[str, tuple[int, ...]] = {}
        self.newline = self.encode("\n")

    def encode(self, text: str) -> list[int]:
        """Every round repeats the same short pieces (turn shells, the silence marker, common lines):
        each is tokenised once (the first `ENCODED` distinct texts are kept)."""
        if not text:
            return []
        ids = self._tokens.get(text)
        if ids is None:
            ids = tuple(self.tokenizer.encode(text, add_special_tokens=False))
            if len(self._tokens) < ENCODED:
                self._tokens[text] = ids
        return list(ids)

    def decode(self, ids) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def turn_open(self, role: str) -> list[int]:
        return [self.im_start, *self.encode(f"{role}\n")]

    def turn_close(self) -> list[int]:
        return [self.im_end, *self.newline]

    # -- spans ------------------------------------------------------------------------------
    def prefix(self, query: str | None = None, previous_text: str = "") -> list[Span]:
        """System prompt and the text memory; the query too with `query_turn` "prefix"."""
        ids = [*self.turn_open("system"), *self.encode(self.system_prompt), *self.turn_close()]
        if query and self.query_turn == QUERY_IN_PREFIX:
            ids += [*self.turn_open("user"), *self.encode(query), *self.turn_close()]
        ids += self.turn_open(MEMORY_ROLE)
        return [
            Span(Kind.PREFIX, ids),
            Span(Kind.MEMORY, self.encode(previous_text)),
            Span(Kind.MEMORY_END, self.turn_close()),
        ]

    def round(
        self,
        index: int,
        start: float,
        end: float,
        vision_offsets: torch.Tensor | None,
        query: str | None = None,
    ) -> list[Span]:
        """A second's user turn and the assistant header the reply follows. Without vision offsets
        the turn has no frames (text-only training samples). Give the first round the `query`: with
        `query_turn` "round" it closes that user turn and leaves with the turn's shell."""
        query = query if query and self.query_turn == QUERY_IN_ROUND else ""
        spans = [
            Span(Kind.USER_OPEN, self.turn_open("user"), index),
            Span(Kind.TIME, self.encode(time_text(start, end)), index),
        ]
        if vision_offsets is not None:
            spans += [
                Span(Kind.VISION_OPEN, [self.vision_start], index),
                Span(Kind.VISION, [self.video_pad] * vision_offsets.shape[1], index, rel=vision_offsets),
                Span(Kind.VISION_CLOSE, [self.vision_end], index),
            ]
        return spans + [
            Span(Kind.USER_CLOSE, [*self.encode(query), *self.turn_close()], index),
            Span(Kind.REPLY_OPEN, self.turn_open("assistant"), index),
        ]

    def question(self, index: int, text: str) -> list[Span]:
        """A text-only user turn asking `text`, then the assistant header the answer would follow
        (multiple-choice evaluation scores the answer's first token right after it)."""
        return [
            Span(Kind.USER_OPEN, self.turn_open("user"), index),
            Span(Kind.QUESTION, self.encode(text), index),
            Span(Kind.USER_CLOSE, self.turn_close(), index),
            Span(Kind.REPLY_OPEN, self.turn_open("assistant"), index),
        ]

    def reply(self, index: int, text: str) -> list[Span]:
        """A second's target reply (training): its words, then the silence marker and end of turn."""
        words = " ".join(text.split())
        close = Span(Kind.REPLY_CLOSE, [*self.encode(SILENCE), *self.turn_close()], index)
        return [Span(Kind.REPLY, self.encode(f" {words}"), index), close] if words else [close]

    # -- generated replies ------------------------------------------------------------------
    def content_length(self, generated: list[int]) -> int:
        """How many leading generated tokens are commentary: drop `<|im_end|>` and a trailing " ..."."""
        end = len(generated)
        if end and generated[-1] == self.im_end:
            end -= 1
        for k in range(end - 1, -1, -1):  # shortest suffix first
            tail = self.decode(generated[k:end]).rstrip()
            if tail == SILENCE:
                return k
            if tail.strip(" .") or len(tail) > len(SILENCE):
                break
        return end
