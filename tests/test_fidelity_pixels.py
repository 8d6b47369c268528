"""Pixels (method §7.1): the video processor against transformers' Qwen2-VL processors and against
torchvision's resize as the research code calls it, at the research code's per-frame budget.

transformers' PIL image processor runs here; torchvision does not install here (see
pixel_reference.py), so its resize is a recorded reference: tests/data/pixel_reference.npz.
"""

from functools import lru_cache

import numpy as np
import pixel_reference
import pytest
import torch
from pixel_reference import FIXTURE, MAX_PIXELS, MIN_PIXELS, SIZES, SUBSAMPLE
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize

from streamvlm.errors import StreamvlmError
from streamvlm.models import VideoProcessor
from streamvlm_world.plugin import shipped_model_dir

IDS = [f"{w}x{h}" for h, w in SIZES]
reference_frames = lru_cache(maxsize=None)(pixel_reference.reference_frames)


@pytest.fixture(scope="module")
def recorded():
    return dict(np.load(FIXTURE))


def test_default_budget_is_the_research_codes():
    processor = VideoProcessor()
    assert (processor.min_pixels, processor.max_pixels) == (MIN_PIXELS, MAX_PIXELS)
    assert processor.resize == "float"
    with pytest.raises(StreamvlmError):
        VideoProcessor(resize="bilinear")


@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_resize_size_and_grid_match_transformers(size):
    height, width = size
    processor = VideoProcessor()
    h, w = processor.target_size(height, width)
    assert (h, w) == hf_smart_resize(height, width, 28, MIN_PIXELS, MAX_PIXELS)
    assert 100 <= processor.tokens_per_chunk(height, width, 2) == (h // 28) * (w // 28) <= 768


@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_float_resize_equals_torchvision_as_the_research_code_calls_it(size, recorded):
    """Bit for bit on this machine; the bound leaves room for one float rounding flip in 10^4."""
    height, width = size
    frames = reference_frames(height, width)
    reference = recorded[f"{height}x{width}"].astype(int)
    for path, agrees in (("float", True), ("pil", False)):
        processor = VideoProcessor(resize=path)
        ours = processor.resize_frames(frames, *processor.target_size(height, width))[SUBSAMPLE].numpy()
        diff = np.abs(ours.astype(int) - reference)
        if agrees:
            assert diff.max() <= 1 and (diff > 0).mean() <= 1e-4, (diff.max(), (diff > 0).mean())
        else:  # the PIL path is measurably another resize: the comparison can tell them apart
            assert (diff > 0).mean() > 0.05


@pytest.mark.parametrize("size", SIZES, ids=IDS)
@pytest.mark.parametrize("path", ["pil", "float"])
def test_pixel_values_equal_transformers_image_processor_frame_by_frame(size, path):
    """Each frame's slot of the temporal patch equals transformers' PIL image processor on that frame:
    on the original frame for the PIL path, on our resized frame for the float path (the resize itself
    is checked above). Exact: same rescale and normalisation arithmetic."""
    height, width = size
    frames = reference_frames(height, width)
    processor = VideoProcessor(resize=path)
    pixels, grid = processor(frames)
    h, w = processor.target_size(height, width)
    resized = processor.resize_frames(frames, h, w).permute(0, 2, 3, 1).numpy()
    hf = Qwen2VLImageProcessorPil(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    ours = pixels.view(-1, 3, 2, 14, 14)
    for k in range(2):
        image = frames[k] if path == "pil" else resized[k]
        out = hf(images=[image], return_tensors="np")
        assert out["image_grid_thw"][0].tolist() == grid.tolist()
        theirs = torch.from_numpy(out["pixel_values"]).view(-1, 3, 2, 14, 14)[:, :, 0]
        assert torch.equal(ours[:, :, k], theirs)


def test_the_shipped_world_model_keeps_the_resize_it_was_trained_on():
    assert VideoProcessor.from_pretrained(shipped_model_dir()).resize == "pil"
