"""What the cache keeps: the StreamingVLM policy and the baselines it is compared with.

A policy edits the layout at the start of each round (before the round's tokens are added):

- `streaming` — attention sinks (prefix + text memory head/tail), the vision of the last
  `vision_window` rounds and the text of the last `text_rounds` rounds. When a round's text retires,
  its commentary moves into the text memory (K/V reused); the memory is then cut to head + tail.
- `full` — keep everything (latency and memory grow with the stream).
- `sliding` — keep everything, but every `reset_every` rounds drop all rounds (sawtooth).
- `recompute` — keep what `streaming` keeps, but re-encode all of it from scratch every round
  (sliding window with overlap: bounded, no K/V reuse, slow).

Positions ("contiguous" or "append") are a property of the layout, orthogonal to the policy.
"""

from dataclasses import dataclass, fields

from .layout import ROUND_KINDS, SHELL_KINDS, TEXT_KINDS, VISION_KINDS, Layout


class Policy:
    name = "policy"

    def retire(self, layout: Layout, round_index: int) -> None:
        """Edit `layout` before round `round_index` is added."""

    def moves_reply_of(self, round_index: int, current: int) -> bool:
        """Whether `retire(current)` moves the commentary of `round_index` into the memory."""
        return False


@dataclass
class FullPolicy(Policy):
    name = "full"


@dataclass
class Windows:
    """What the streaming cache keeps (method §2). These options are declared here only: every config
    that needs them inherits them (`StreamConfig`, `TrainConfig`, `RenderOptions`, the benchmarks'),
    and their command-line flags are derived from these fields (`streamvlm.options`)."""

    vision_window: int = 16  # seconds (rounds) of vision tokens kept
    text_rounds: int = 16  # assistant turns kept in place
    text_sink: int = 512  # head of the text memory, tokens
    text_window: int = 512  # tail of the text memory, tokens

    def windows(self) -> "Windows":
        """These options alone (from any config that inherits them)."""
        return Windows(**{f.name: getattr(self, f.name) for f in fields(Windows)})


@dataclass
class StreamingPolicy(Windows, Policy):
    name = "streaming"

    def __post_init__(self):
        if self.vision_window < 1 or self.text_rounds < 1:
            raise ValueError("vision_window and text_rounds must be at least 1 round")
        if self.text_sink < 0 or self.text_window < 0:
            raise ValueError("text_sink and text_window are token counts and cannot be negative")

    def moves_reply_of(self, round_index: int, current: int) -> bool:
        return round_index <= current - self.text_rounds

    def retire(self, layout: Layout, round_index: int) -> None:
        text_cut = round_index - self.text_rounds  # rounds <= text_cut lose their text
        vision_cut = round_index - self.vision_window  # rounds <= vision_cut lose their vision
        for r in layout.rounds():
            if r <= text_cut:
                layout.move_reply_to_memory(r)
        layout.drop(
            lambda s: (
                (s.round <= text_cut and s.kind in TEXT_KINDS)
                or (s.round <= vision_cut and s.kind in VISION_KINDS)
                or (s.round <= min(text_cut, vision_cut) and s.kind in SHELL_KINDS)
            )
        )
        layout.trim_memory(self.text_sink, self.text_window)


@dataclass
class RecomputePolicy(StreamingPolicy):
    """Keeps what `streaming` keeps, and forgets every cached row: the next feed re-encodes it all."""

    name = "recompute"

    def retire(self, layout: Layout, round_index: int) -> None:
        super().retire(layout, round_index)
        layout.unfeed()


@dataclass
class SlidingPolicy(Policy):
    reset_every: int = 16
    name = "sliding"

    def __post_init__(self):
        if self.reset_every < 1:
            raise ValueError("reset_every must be at least 1 round")

    def retire(self, layout: Layout, round_index: int) -> None:
        if round_index > 0 and round_index % self.reset_every == 0:
            layout.drop(lambda s: s.round >= 0 and s.kind in ROUND_KINDS)


POLICIES = ("streaming", "full", "sliding", "recompute")


def make_policy(name: str, windows: Windows | None = None, reset_every: int | None = None) -> Policy:
    """The policy `name` with `windows` (any config inheriting `Windows`; default: the defaults);
    `sliding` resets every `reset_every` rounds (default: the vision window)."""
    w = (windows or Windows()).windows()
    if name == "streaming":
        return StreamingPolicy(**vars(w))
    if name == "recompute":
        return RecomputePolicy(**vars(w))
    if name == "full":
        return FullPolicy()
    if name == "sliding":
        return SlidingPolicy(reset_every or w.vision_window)
    raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}")
