"""Loading checkpoints, the offline video processor, the tiny checkpoint writer."""

import json
import re

import numpy as np
import pytest
import torch
from helpers import record_logits
from safetensors.torch import load_file, save_file
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from streamvlm import StreamConfig, StreamingSession
from streamvlm.errors import ModelLoadError
from streamvlm.models import TinySpec, VideoProcessor, load_model, write_tiny_checkpoint
from streamvlm.sources import ArraySource, synthetic_frames


@pytest.mark.parametrize("size", [(112, 112), (97, 203), (480, 640), (33, 45)])
def test_processor_matches_hf_image_processor(size):
    """Two identical frames patchify exactly like Qwen2VLImageProcessorPil on that frame (PIL path)."""
    image = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    hf = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=28 * 28 * 64)(
        images=[image], return_tensors="np"
    )
    processor = VideoProcessor(min_pixels=56 * 56, max_pixels=28 * 28 * 64, resize="pil")
    pixels, grid = processor(np.stack([image, image]))
    assert np.array_equal(hf["pixel_values"], pixels.numpy())
    assert grid.tolist() == hf["image_grid_thw"][0].tolist()


def test_processor_temporal_layout_and_padding():
    frames = np.random.default_rng(1).integers(0, 256, (3, 56, 56, 3), dtype=np.uint8)
    processor = VideoProcessor(min_pixels=56 * 56, max_pixels=56 * 56)
    pixels, grid = processor(frames)
    assert grid.tolist() == [2, 4, 4]  # 3 frames padded to 4 (last one repeated), 2 temporal patches
    single, _ = processor(frames[2:3])
    assert torch.equal(pixels[16:], single)  # frame 3 + its repeat == frame 3 alone padded


def test_processor_streaming_budget():
    processor = VideoProcessor()  # method §1: 100..768 merged tokens per frame
    assert processor.tokens_per_chunk(720, 1280, 2) <= 768
    assert processor.tokens_per_chunk(64, 64, 2) >= 100


def test_tiny_checkpoint_loads_by_path(tiny_dir):
    loaded = load_model(str(tiny_dir))
    files = {p.name for p in tiny_dir.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "preprocessor_config.json",
        "chat_template.jinja",
    } <= files
    assert loaded.tokenizer.convert_tokens_to_ids("<|video_pad|>") == loaded.config.video_token_id
    assert loaded.config.text_config.vocab_size >= len(loaded.tokenizer)


def _logits(loaded):
    session = StreamingSession(loaded, StreamConfig(greedy=True, max_new_tokens=2, repetition_penalty=1.0))
    session.trace = record_logits(session)
    for _ in session.run(ArraySource(synthetic_frames(3, 2, (56, 56)), 2)):
        pass
    return torch.stack([t[2] for t in session.trace])


def test_public_key_layout_loads_through_same_code(tiny_dir, tmp_path):
    """Weights saved with the published Qwen2.5-VL key names and flat config load identically."""
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json", "streamvlm.json"):
        (legacy / name).write_bytes((tiny_dir / name).read_bytes())
    weights = load_file(tiny_dir / "model.safetensors")
    renamed = {
        re.sub(r"^model\.visual\.", "visual.", re.sub(r"^model\.language_model\.", "model.", k)): v
        for k, v in weights.items()
    }
    assert any(k.startswith("visual.") for k in renamed) and any(
        k.startswith("model.layers.") for k in renamed
    )
    save_file(renamed, legacy / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((tiny_dir / "config.json").read_text())
    text = config.pop("text_config")
    rope = text.pop("rope_parameters")
    flat = {
        **config,
        **{k: v for k, v in text.items() if k not in ("model_type", "layer_types")},
        "rope_scaling": {"type": "mrope", "mrope_section": rope["mrope_section"]},
        "rope_theta": rope["rope_theta"],
    }
    flat["vision_config"]["model_type"] = "qwen2_5_vl"  # as in the published config.json
    (legacy / "config.json").write_text(json.dumps(flat))
    assert torch.equal(_logits(load_model(str(legacy))), _logits(load_model(str(tiny_dir))))


def test_qwen2_vl_streams_behind_the_same_seam(tmp_path):
    loaded = load_model(str(write_tiny_checkpoint(tmp_path / "q2", spec=TinySpec(arch="qwen2_vl"))))
    assert type(loaded.model).__name__ == "Qwen2VLForConditionalGeneration"
    assert not loaded.family.time_scaled
    session = StreamingSession(loaded, StreamConfig(vision_window=2, text_rounds=2, max_new_tokens=3))
    lines = list(session.run(ArraySource(synthetic_frames(6, 2, (56, 56)), 2)))
    assert len(lines) == 6 and session.evictions >= 3


def test_missing_files_and_unknown_architecture(tiny_dir, tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "nothing-here"))
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text((tiny_dir / "config.json").read_text())
    with pytest.raises(ModelLoadError, match=r"missing weights .*tokenizer"):
        load_model(str(partial))
    other = tmp_path / "llama"
    other.mkdir()
    for name in ("model.safetensors", "tokenizer.json"):
        (other / name).write_bytes((tiny_dir / name).read_bytes())
    (other / "config.json").write_text(
        json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]})
    )
    with pytest.raises(ModelLoadError, match="unsupported architecture 'llama'"):
        load_model(str(other))
    with pytest.raises(ModelLoadError, match="Hugging Face Hub"):
        load_model("nobody-offline/no-such-model")
