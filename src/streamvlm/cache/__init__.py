"""The KV policy: what to keep, moving rows, contiguous 3-D positions, re-rotation.

Pure torch: nothing here knows about video files, models, HTTP or the command line.
"""

from .kv import StreamingKVCache
from .layout import Kind, Layout, Span
from .policy import (
    POLICIES,
    FullPolicy,
    Policy,
    RecomputePolicy,
    SlidingPolicy,
    StreamingPolicy,
    Windows,
    make_policy,
)
from .rope import rotate_keys

__all__ = [
    "POLICIES",
    "FullPolicy",
    "Kind",
    "Layout",
    "Policy",
    "RecomputePolicy",
    "SlidingPolicy",
    "Span",
    "StreamingKVCache",
    "StreamingPolicy",
    "Windows",
    "make_policy",
    "rotate_keys",
]
