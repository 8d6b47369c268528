"""The streaming engine: per-second loop, prompt rendering, decoding, output writers."""

from .prompt import Renderer
from .session import Commentary, StepStats, StreamingSession

__all__ = ["Commentary", "Renderer", "StepStats", "StreamingSession"]
