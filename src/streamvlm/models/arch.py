"""The model-specific seam: everything the engine needs to know about one architecture.

Qwen2.5-VL and Qwen2-VL differ, for streaming, only in how far a video grid advances the
temporal position axis (Qwen2.5-VL scales it by seconds, Qwen2-VL by grid index) and in their
classes. Positions of a vision grid start at its span's start position s:
t = s + floor(i_t · interval), h = s + row, w = s + col (method §3).
"""

from dataclasses import dataclass

import torch
from transformers import (
    PreTrainedModel,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
)


@dataclass(frozen=True)
class Family:
    model_type: str
    model_class: type[PreTrainedModel]
    config_class: type
    #: Temporal positions advance by tokens_per_second · seconds per grid (Qwen2.5-VL) or by 1.
    time_scaled: bool

    def temporal_interval(self, config, fps: float) -> float:
        if not self.time_scaled:
            return 1.0
        vision = config.vision_config
        return vision.tokens_per_second * vision.temporal_patch_size / fps

    def vision_offsets(self, config, grid_thw: torch.Tensor, fps: float) -> torch.Tensor:
        """(3, n) position offsets of a video grid's merged tokens from the grid's start."""
        merge = config.vision_config.spatial_merge_size
        gt, gh, gw = (int(v) for v in grid_thw)
        t = (torch.arange(gt, dtype=torch.float64) * self.temporal_interval(config, fps)).long()
        h = torch.arange(gh // merge)
        w = torch.arange(gw // merge)
        tt, hh, ww = torch.meshgrid(t, h, w, indexing="ij")
        return torch.stack((tt, hh, ww)).reshape(3, -1)

    @staticmethod
    def inv_freq(model: PreTrainedModel) -> torch.Tensor:
        rotary = model.model.language_model.rotary_emb
        if rotary.rope_type != "default" or rotary.attention_scaling != 1.0:
            raise NotImplementedError(f"re-rotation supports default RoPE only, not {rotary.rope_type!r}")
        return rotary.inv_freq


FAMILIES = {
    "qwen2_5_vl": Family(
        "qwen2_5_vl", Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLConfig, time_scaled=True
    ),
    "qwen2_vl": Family("qwen2_vl", Qwen2VLForConditionalGeneration, Qwen2VLConfig, time_scaled=False),
}


def family_of(config) -> Family:
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise KeyError(model_type)
    return FAMILIES[model_type]
