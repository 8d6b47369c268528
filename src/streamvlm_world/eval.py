"""Streaming a world match through the engine and scoring it against the exact ground truth.

The match is encoded to a video file and decoded back, so the model sees frames exactly as it
saw them in training and as `streamvlm run` would show them. The stream starts with the match's
opening text as previous text and the world's query, like a user would start it.
"""

import tempfile
import time
from dataclasses import replace
from pathlib import Path

from streamvlm.config import StreamConfig
from streamvlm.engine import StreamingSession
from streamvlm.sources import VideoFileSource

from .config import WorldConfig
from .dataset import write_world_video
from .evaluate import score_lines
from .stream import World


def stream_world(
    loaded,
    config: StreamConfig,
    world_config: WorldConfig,
    seconds: int,
    bucket_s: int = 300,
    on_second=None,
    video: Path | None = None,
    session_stats=None,
) -> dict:
    """Metrics over the whole stream and per `bucket_s` bucket, plus per-second texts and stats.

    `video`: this world's match already encoded (at least `seconds` long; it is written otherwise).
    `session_stats(session) -> dict`: extra per-second numbers, merged into that second's stats.
    """
    world = World(world_config)
    with tempfile.TemporaryDirectory() as tmp:
        if video is None:
            video = Path(tmp) / "match.mp4"
            write_world_video(video, world, seconds)
        rows = list(world.rows(seconds))
        config = replace(
            config, fps=world_config.fps, previous_text=world.opening_text, query=world_config.query
        )
        session = StreamingSession(loaded, config)
        predicted, stats = [], []
        started = time.time()
        for line in session.run(VideoFileSource(video, fps=world_config.fps, seconds=seconds)):
            predicted.append(line.text)
            stats.append(line.stats.to_dict())
            if session_stats is not None:
                stats[-1].update(session_stats(session))
            if on_second is not None:
                on_second(line, rows[len(predicted) - 1])
    metrics = score_lines(predicted, rows, world.nicknames, points_to_win=world_config.points_to_win)
    buckets = [
        {"start_s": b, **score_lines(predicted[b : b + bucket_s], rows[b : b + bucket_s], world.nicknames)}
        for b in range(0, len(predicted), bucket_s)
    ]
    return {
        "seed": world_config.seed,
        "seconds": len(predicted),
        "policy": config.policy,
        "metrics": metrics,
        "buckets": buckets,
        "wall_s": time.time() - started,
        "predicted": predicted,
        "truth": [row["text"] for row in rows],
        "stats": stats,
    }
