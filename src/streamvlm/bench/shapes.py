"""Random-weight models with exact published shapes, so timings mean something without weights.

Speed does not depend on weight values: a Qwen2.5-VL-7B-shaped model with random weights runs
exactly as fast as the real one. On a CPU the full 7B does not fit or is too slow, so the number
of text / vision layers can be cut while every layer keeps the 7B shapes.
"""

from pathlib import Path

import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from ..models.arch import FAMILIES
from ..models.default import random_model_dir
from ..models.load import DTYPES, LoadedModel, load_model
from ..models.processor import VideoProcessor
from ..models.tiny import train_tokenizer

SHAPES = ("tiny", "7b")


def qwen2_5_vl_7b_config(tokenizer, text_layers: int | None = None, vision_layers: int | None = None):
    """Qwen2.5-VL-7B-Instruct's published configuration (optionally with fewer layers)."""
    ids = {
        name: tokenizer.convert_tokens_to_ids(tok)
        for name, tok in {
            "image": "<|image_pad|>",
            "video": "<|video_pad|>",
            "vs": "<|vision_start|>",
            "ve": "<|vision_end|>",
            "eos": "<|im_end|>",
            "pad": "<|endoftext|>",
        }.items()
    }
    depth = vision_layers or 32
    return Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=152064,
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=text_layers or 28,
            num_attention_heads=28,
            num_key_value_heads=4,
            max_position_embeddings=128000,
            rms_norm_eps=1e-6,
            rope_parameters=dict(rope_type="default", rope_theta=1_000_000.0, mrope_section=[16, 24, 24]),
            bos_token_id=ids["pad"],
            eos_token_id=ids["eos"],
            pad_token_id=ids["pad"],
        ),
        vision_config=dict(
            depth=depth,
            hidden_size=1280,
            intermediate_size=3420,
            num_heads=16,
            out_hidden_size=3584,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            tokens_per_second=2,
            fullatt_block_indexes=[i for i in (7, 15, 23, 31) if i < depth] or [depth - 1],
        ),
        image_token_id=ids["image"],
        video_token_id=ids["video"],
        vision_start_token_id=ids["vs"],
        vision_end_token_id=ids["ve"],
    )


def build_shape(
    shape: str,
    device: str = "cpu",
    dtype: str = "float32",
    text_layers: int | None = None,
    vision_layers: int | None = None,
    seed: int = 0,
) -> LoadedModel:
    if shape == "tiny":
        if text_layers or vision_layers:
            raise ValueError("--text-layers / --vision-layers apply to --shape 7b")
        return load_model(str(random_model_dir()), device=device, dtype=dtype)
    if shape != "7b":
        raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")
    tokenizer = train_tokenizer()
    config = qwen2_5_vl_7b_config(tokenizer, text_layers, vision_layers)
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(
            config, dtype=DTYPES[dtype], attn_implementation="sdpa"
        )
    model.eval()
    return LoadedModel(model, tokenizer, VideoProcessor(), FAMILIES["qwen2_5_vl"], Path("."), {"shape": "7b"})
