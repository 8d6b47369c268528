"""The endless stream: per second, the frames and the ground-truth row, generated lazily.

    world = World(WorldConfig(seed=3))
    world.opening_text                      # "Red are the Foxes. Blue are the Owls."
    for frames, row in world.seconds(60):   # frames: (fps, size, size, 3) uint8 RGB
        print(row["start"], row["text"])    # row: start, end, text, events, score, words

Every call to `seconds` replays the same match from its start; memory does not grow with the
length of the stream (the match keeps only its current segment).
"""

from collections import Counter
from collections.abc import Iterator
from itertools import count
from typing import NamedTuple

import numpy as np

from .commentary import opening_text, pick_nicknames, timed_words, vocabulary
from .config import STEPS_PER_S, WorldConfig
from .game import Event, Match
from .render import Painter


class Second(NamedTuple):
    frames: np.ndarray | None  # (fps, size, size, 3) uint8 RGB; None when not rendered
    row: dict  # {"start", "end", "text", "events", "score", "words"}


class World:
    def __init__(self, config: WorldConfig | None = None):
        self.config = config or WorldConfig()
        self.nicknames = pick_nicknames(self.config)
        self.opening_text = opening_text(self.nicknames)

    def __iter__(self) -> Iterator[Second]:
        return self.seconds()

    def seconds(self, limit: int | None = None, render: bool = True) -> Iterator[Second]:
        """Seconds 0, 1, ... (`limit` of them, or endless). `render=False` skips the frames (fast)."""
        c = self.config
        match = Match(c)
        renderer = Painter(c) if render else None
        for second in count() if limit is None else range(limit):
            events: list[Event] = []
            frames = []
            if renderer is not None:
                for j in range(c.fps):
                    step = (second * c.fps + j) * STEPS_PER_S / c.fps  # exact at whole steps
                    events += match.advance_to(step)
                    frames.append(renderer.frame(match.state_at(step)))
            # every event sits on a whole step; the second's last one is (second + 1) * STEPS_PER_S - 1
            events += match.advance_to((second + 1) * STEPS_PER_S - 1)
            words = timed_words(events, second, c, self.nicknames)
            row = {
                "start": float(second),
                "end": float(second + 1),
                "text": " ".join(w for _, _, w in words),
                "events": [event_dict(e) for e in events],
                "score": list(match.score),
                "words": words,
            }
            yield Second(np.stack(frames) if frames else None, row)

    def rows(self, limit: int | None = None) -> Iterator[dict]:
        """Ground-truth rows only (no frames): for text-only streams and statistics."""
        return (second.row for second in self.seconds(limit, render=False))


def event_dict(event: Event) -> dict:
    """An event as a truth row lists it; the flags appear only when set."""
    d = {"time": event.time_s, "kind": event.kind, "team": event.team}
    if event.game_over:
        d["game_over"] = True
    if event.new_game:
        d["new_game"] = True
    return d


def measure(config: WorldConfig, seconds: int) -> dict:
    """Statistics of the first `seconds` of a stream (commentary only, nothing rendered)."""
    rows = list(World(config).rows(seconds))
    kinds = Counter(e["kind"] for row in rows for e in row["events"])
    words = [w for row in rows for _, _, w in row["words"]]
    vocab = vocabulary(config)
    return {
        "seconds": seconds,
        "silent_fraction": sum(not row["text"] for row in rows) / seconds,
        "event_seconds_fraction": {k: kinds[k] / seconds for k in ("serve", "return", "point")},
        "points_per_minute": kinds["point"] * 60 / seconds,
        "games": sum(e.get("game_over", False) for row in rows for e in row["events"]),
        "max_score": max(max(row["score"]) for row in rows),
        "words_per_second": len(words) / seconds,
        "distinct_words": len(set(words)),
        "vocabulary_size": len(vocab),
    }
