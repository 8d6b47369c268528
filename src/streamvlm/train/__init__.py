"""Training: SFT on short overlapped chunks of long videos (method §5)."""

from .config import LoraOptions, TrainConfig, load_config

__all__ = ["LoraOptions", "TrainConfig", "load_config"]
