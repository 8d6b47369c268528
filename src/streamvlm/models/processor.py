"""A small video processor that reproduces Qwen2-VL / Qwen2.5-VL patching without torchvision.

Frames (T, H, W, 3) uint8 RGB -> Qwen's `smart_resize` (sides multiples of patch·merge, pixel count
in [min_pixels, max_pixels]) -> bicubic antialiased resize -> rescale 1/255 -> CLIP normalisation ->
patches ordered (t, h-block, w-block, merge-h, merge-w) exactly as the HF processors order them.

Two resize paths (method §7.1): "float" (default) is torchvision's tensor resize, bit for bit:
float32 bicubic with antialias, clamped, rounded to uint8. The research code and qwen-vl-utils
resize video with it, in training and inference. "pil" is PIL's bicubic, as transformers'
`Qwen2VLImageProcessorPil` does (two identical frames give exactly its output); the shipped world
model was trained on it and keeps it (its `streamvlm.json`).
"""

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import StreamvlmError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: Streaming defaults (method §1): at most 768 and at least 100 merged tokens per frame.
STREAM_MAX_PIXELS = 768 * 28 * 28
STREAM_MIN_PIXELS = 100 * 28 * 28
RESIZE_PATHS = ("float", "pil")


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen's rule: sides multiples of `factor`, area within [min_pixels, max_pixels], aspect kept."""
    if min(height, width) < 1:
        raise StreamvlmError(f"frame of size {width}x{height} has no pixels")
    if max(height, width) / min(height, width) > 200:
        raise StreamvlmError(f"frame aspect ratio {width}x{height} is beyond 200:1")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@dataclass
class VideoProcessor:
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    min_pixels: int = STREAM_MIN_PIXELS
    max_pixels: int = STREAM_MAX_PIXELS
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD
    #: "float" (torchvision's tensor resize: what the research code feeds) or "pil" (PIL bicubic).
    resize: str = "float"

    def __post_init__(self):
        if self.resize not in RESIZE_PATHS:
            raise StreamvlmError(f"unknown resize path {self.resize!r} (one of {', '.join(RESIZE_PATHS)})")

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        return smart_resize(height, width, self.factor, self.min_pixels, self.max_pixels)

    def tokens_per_chunk(self, height: int, width: int, frames: int) -> int:
        """Merged vision tokens the model sees for `frames` frames of this size."""
        h, w = self.target_size(height, width)
        grid_t = -(-frames // self.temporal_patch_size)
        return grid_t * (h // self.patch_size) * (w // self.patch_size) // self.merge_size**2

    def __call__(
        self, frames: np.ndarray, size: tuple[int, int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Patchify one chunk of frames. Returns `pixel_values` (N, C·tp·p·p) float32 and `grid_thw` (3,).

        `size` (height, width) forces the resize target; by default it comes from the frames.
        The frame count is padded to a multiple of `temporal_patch_size` by repeating the last one.
        """
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise StreamvlmError(f"expected frames as uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
        t, height, width, _ = frames.shape
        h, w = size or self.target_size(height, width)
        resized = self.resize_frames(frames, h, w)  # (T, 3, h, w) uint8
        pad = (-t) % self.temporal_patch_size
        if pad:
            resized = torch.cat([resized, resized[-1:].expand(pad, -1, -1, -1)])
        # Same arithmetic as transformers' numpy path: float64 rescale, float32 normalise.
        x = resized.to(torch.float64).mul(1 / 255).to(torch.float32)
        mean = torch.tensor(self.image_mean, dtype=torch.float32)[None, :, None, None]
        std = torch.tensor(self.image_std, dtype=torch.float32)[None, :, None, None]
        x = (x - mean) / std
        p, m, tp = self.patch_size, self.merge_size, self.temporal_patch_size
        gt, gh, gw = x.shape[0] // tp, h // p, w // p
        x = x.reshape(gt, tp, 3, gh // m, m, p, gw // m, m, p)
        x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # (gt, gh/m, gw/m, m, m, C, tp, p, p)
        pixel_values = x.reshape(gt * gh * gw, 3 * tp * p * p).contiguous()
        return pixel_values, torch.tensor([gt, gh, gw], dtype=torch.long)

    def resize_frames(self, frames: np.ndarray, height: int, width: int) -> torch.Tensor:
        """(T, H, W, 3) uint8 -> (T, 3, height, width) uint8 by this processor's resize path."""
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
        if x.shape[-2:] == (height, width):
            return x
        if self.resize == "pil":
            bicubic = Image.Resampling.BICUBIC
            out = [np.asarray(Image.fromarray(f).resize((width, height), resample=bicubic)) for f in frames]
            return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)
        y = F.interpolate(x.float(), (height, width), mode="bicubic", align_corners=False, antialias=True)
        return y.clamp_(0, 255).round_().to(torch.uint8)

    # -- persistence ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "VideoProcessor":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        size = data.get("size") or {}
        if "min_pixels" not in known and "shortest_edge" in size:
            known["min_pixels"] = size["shortest_edge"]
        if "max_pixels" not in known and "longest_edge" in size:
            known["max_pixels"] = size["longest_edge"]
        for key in ("image_mean", "image_std"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, **overrides) -> "VideoProcessor":
        """Patch geometry and normalisation from the checkpoint; pixel budget from the streaming defaults.

        Hub checkpoints store an image-oriented pixel budget (up to 12.8 M pixels per image); a
        stream needs the per-frame budget of method §1 unless the checkpoint's `streamvlm.json`
        or the caller says otherwise. `streamvlm.json` may also name the resize path.
        """
        model_dir = Path(model_dir)
        data: dict = {}
        for name in ("preprocessor_config.json", "video_preprocessor_config.json"):
            if (model_dir / name).is_file():
                data.update(json.loads((model_dir / name).read_text()))
        data.pop("min_pixels", None)
        data.pop("max_pixels", None)
        data.pop("size", None)
        stream = model_dir / "streamvlm.json"
        if stream.is_file():
            extra = json.loads(stream.read_text())
            data.update({k: extra[k] for k in ("min_pixels", "max_pixels", "resize") if k in extra})
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(data)
