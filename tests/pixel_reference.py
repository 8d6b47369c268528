"""Recorded pixel references that need torchvision (method §7.1); not a test module.

torchvision cannot be installed here: the only torchvision 0.28.0 wheel the registry has (the one
matching torch 2.13.0) is the CUDA 13.0 build, whose C ops do not load with the CPU torch. Its Python
resize code is all that is needed, so this script defines the two op schemas torchvision's import
registers fake kernels for (nms, qnms) and imports it without its C ops. Run it from the repository
root with torchvision 0.28.0 and qwen-vl-utils 0.0.14 on the path, e.g.

    pip install --no-deps --target /tmp/tvpkg torchvision==0.28.0 qwen-vl-utils==0.0.14 requests
    PYTHONPATH=/tmp/tvpkg .venv/bin/python tests/pixel_reference.py

It prints the comparison of method §7.1 and rewrites tests/data/pixel_reference.npz: for each size,
torchvision's resize of `reference_frames` (as the research code calls it) on a regular subsample.
"""

import hashlib
from pathlib import Path

import numpy as np

MIN_PIXELS, MAX_PIXELS = 100 * 28 * 28, 768 * 28 * 28  # the research code's per-frame budget
#: (height, width): the common ones, then odd ones, one below the minimum budget and one tall.
SIZES = [(1080, 1920), (720, 1280), (360, 640), (112, 112), (481, 853), (333, 1001), (97, 61)]
SUBSAMPLE = (slice(None), slice(None), slice(None, None, 16), slice(None, None, 15))  # (T, C, h, w)
FIXTURE = Path(__file__).parent / "data" / "pixel_reference.npz"


def reference_frames(height: int, width: int, t: int = 2, seed: int = 0) -> np.ndarray:
    """(t, H, W, 3) uint8 from integer arithmetic only: gradients, hard edges, boxes, noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    out = []
    for i in range(t):
        f = np.stack(
            [xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1), (xx + yy) * 7 + 40 * i], -1
        )
        f = f % 256
        for _ in range(12):
            y0, x0 = rng.integers(0, height), rng.integers(0, width)
            dy, dx = rng.integers(1, height // 3 + 2), rng.integers(1, width // 3 + 2)
            f[y0 : y0 + dy, x0 : x0 + dx] = rng.integers(0, 256, 3)
        f = f + rng.integers(-8, 9, f.shape)
        out.append(np.clip(f, 0, 255).astype(np.uint8))
    return np.stack(out)


def _shim_torchvision():
    import torch

    lib = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    return lib


def main() -> None:
    keep = _shim_torchvision()  # noqa: F841 (the library must stay alive)
    import torch
    import torchvision
    import torchvision.transforms.functional as tv1
    from qwen_vl_utils.vision_process import smart_resize as qvu_smart_resize
    from torchvision.transforms import InterpolationMode
    from transformers import Qwen2VLVideoProcessor

    from streamvlm.models import VideoProcessor

    torch.set_num_threads(2)
    print(f"torchvision {torchvision.__version__}, torch {torch.__version__}")
    hf = Qwen2VLVideoProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    ours = {
        path: VideoProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, resize=path)
        for path in ("float", "pil")
    }
    fixture = {}
    for height, width in SIZES:
        frames = reference_frames(height, width)
        h, w = ours["float"].target_size(height, width)
        assert (h, w) == qvu_smart_resize(height, width, 28, MIN_PIXELS, MAX_PIXELS)
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
        # the research code (livecc_utils `_spatial_resize_video`) and qwen-vl-utils `fetch_video`
        research = tv1.resize(x, [h, w], interpolation=InterpolationMode.BICUBIC, antialias=True)
        fixture[f"{height}x{width}"] = research[SUBSAMPLE].numpy()
        fixture[f"{height}x{width}_sha256"] = np.frombuffer(
            hashlib.sha256(research.numpy()).digest(), np.uint8
        )
        hf_out = hf(videos=[x], return_tensors="pt", cap_pixels_per_frame=False)
        print(f"{width}x{height} -> {w}x{h}, grid {hf_out['video_grid_thw'][0].tolist()}")
        for path, processor in ours.items():
            resized = processor.resize_frames(frames, h, w)
            diff = (resized.int() - research.int()).abs().float()
            pixels, grid = processor(frames)
            assert grid.tolist() == hf_out["video_grid_thw"][0].tolist()
            hf_diff = (pixels - hf_out["pixel_values_videos"]).abs()
            print(
                f"  {path:5s} vs torchvision resize: mean {diff.mean():.3f}, max {diff.max():.0f} grey "
                f"levels, {(diff > 0).float().mean():.1%} differ, {(diff > 1).float().mean():.2%} by > 1; "
                f"pixel_values vs transformers' video processor (CPU): max {hf_diff.max():.4f}"
            )
    FIXTURE.parent.mkdir(exist_ok=True)
    np.savez_compressed(FIXTURE, **fixture)
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
