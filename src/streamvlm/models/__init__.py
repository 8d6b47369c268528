"""The model-specific seam: architectures, loading, the offline video processor, tiny checkpoints."""

from .arch import FAMILIES, Family, family_of
from .load import LoadedModel, load_model
from .processor import VideoProcessor, smart_resize
from .tiny import TinySpec, write_tiny_checkpoint

__all__ = [
    "FAMILIES",
    "Family",
    "LoadedModel",
    "TinySpec",
    "VideoProcessor",
    "family_of",
    "load_model",
    "smart_resize",
    "write_tiny_checkpoint",
]
