"""Training data: the public annotation formats, overlapped chunks, samples rendered like the engine."""

from .chunks import ChunkStats, make_chunks
from .formats import DataError, StreamRecord, read_annotations, write_annotations
from .sample import RenderOptions, StreamDataset, collate, render_sample

__all__ = [
    "ChunkStats",
    "DataError",
    "RenderOptions",
    "StreamDataset",
    "StreamRecord",
    "collate",
    "make_chunks",
    "read_annotations",
    "render_sample",
    "write_annotations",
]
