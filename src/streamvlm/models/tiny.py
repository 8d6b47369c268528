"""Tiny random-weight checkpoints in the standard HF layout, for tests and offline use.

`write_tiny_checkpoint(dir)` writes config + safetensors weights, a byte-level BPE tokenizer trained
here with Qwen's pre-tokenizer, special tokens and chat template, and the processor configs — the
same files a hub checkpoint has, so `load_model` reads them through the same code path.
`write_hub_checkpoint(dir)` writes the same kind of model laid out file for file like the
`Qwen/Qwen2.5-VL-*-Instruct` hub repos (see its docstring).
"""

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX
from transformers.utils import logging as hf_logging

from .arch import FAMILIES
from .processor import VideoProcessor

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

#: Qwen2-VL / Qwen2.5-VL chat template (as published with the models).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture "
    "{{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video "
    "{{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_WORDS = [
    "the",
    "ball",
    "goes",
    "over",
    "to",
    "red",
    "blue",
    "team",
    "player",
    "serves",
    "returns",
    "scores",
    "misses",
    "point",
    "match",
    "game",
    "set",
    "great",
    "shot",
    "what",
    "a",
    "rally",
    "and",
    "now",
    "he",
    "she",
    "they",
    "is",
    "are",
    "was",
    "were",
    "in",
    "on",
    "at",
    "it",
    "this",
    "that",
    "here",
    "there",
    "commentate",
    "describe",
    "video",
    "watch",
    "stream",
    "live",
    "second",
    "minute",
    "time",
    "score",
    "lead",
    "tied",
    "again",
    "fast",
    "slow",
    "left",
    "right",
    "middle",
    "top",
    "bottom",
    "corner",
    "wall",
    "net",
    "paddle",
    "hit",
    "back",
    "long",
    "short",
    "nice",
    "close",
    "call",
    "win",
    "wins",
    "you",
    "helpful",
    "assistant",
    "system",
    "user",
    "previous",
    "text",
    "please",
    "keep",
    "going",
    "look",
    "at",
]


def training_corpus(seed: int = 0, lines: int = 3000) -> list[str]:
    """A small deterministic English-like corpus with the chat layout's recurring strings."""
    rng = random.Random(seed)
    out = []
    for i in range(lines):
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12)))
        a = rng.randint(0, 3600)
        out.append(
            f"Time={a:.1f}-{a + 1:.1f}s {words.capitalize()}! Red {rng.randint(0, 30)}, Blue {i % 31} ..."
        )
    return out


def train_tokenizer(
    vocab_size: int = 1024, seed: int = 0, corpus: list[str] | None = None
) -> PreTrainedTokenizerFast:
    """Byte-level BPE with Qwen2's pre-tokenizer; special tokens get the ids after the vocabulary.
    `corpus` (default: a small generic English-like one) decides which words become single tokens."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator(corpus if corpus is not None else training_corpus(seed), trainer)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIAL_TOKENS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


@dataclass
class TinySpec:
    """Shapes of a tiny model. Rules: sum(mrope_section) = head_dim / 2; vision head dim % 4 == 0."""

    arch: str = "qwen2_5_vl"
    hidden_size: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate_size: int = 128
    mrope_section: tuple[int, int, int] = (2, 3, 3)
    vision_depth: int = 2
    vision_hidden: int = 32
    vision_heads: int = 2
    vocab_size: int = 1024
    #: Pixel budget per frame for streaming with this model: 112x112 frames -> 16 tokens/frame.
    min_pixels: int = 28 * 28
    max_pixels: int = 112 * 112


def tiny_config(spec: TinySpec, tokenizer):
    family = FAMILIES[spec.arch]
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in _ID_TOKENS.items()}
    vocab = (
        -(-len(tokenizer) // 64) * 64
    )  # padded like the real checkpoints (never sampled past the tokenizer)
    head_dim = spec.hidden_size // spec.heads
    if 2 * sum(spec.mrope_section) != head_dim:
        raise ValueError(f"sum(mrope_section) must be head_dim/2 = {head_dim // 2}")
    text = dict(
        vocab_size=vocab,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        max_position_embeddings=32768,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0, mrope_section=list(spec.mrope_section)),
        bos_token_id=ids["bos"],
        eos_token_id=ids["eos"],
        pad_token_id=ids["pad"],
    )
    vision = dict(
        depth=spec.vision_depth,
        num_heads=spec.vision_heads,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
    )
    if spec.arch == "qwen2_5_vl":
        vision.update(
            hidden_size=spec.vision_hidden,
            intermediate_size=2 * spec.vision_hidden,
            out_hidden_size=spec.hidden_size,
            window_size=56,
            fullatt_block_indexes=[spec.vision_depth - 1],
            tokens_per_second=2,
        )
    else:
        vision.update(embed_dim=spec.vision_hidden, hidden_size=spec.hidden_size, mlp_ratio=2)
    return family.config_class(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["image"],
        video_token_id=ids["video"],
        vision_start_token_id=ids["vision_start"],
        vision_end_token_id=ids["vision_end"],
    )


_ID_TOKENS = {
    "bos": "<|endoftext|>",
    "eos": "<|im_end|>",
    "pad": "<|endoftext|>",
    "image": "<|image_pad|>",
    "video": "<|video_pad|>",
    "vision_start": "<|vision_start|>",
    "vision_end": "<|vision_end|>",
}


def tiny_model(spec: TinySpec, seed: int = 0, corpus: list[str] | None = None):
    """(tokenizer, model) of a random-weight tiny checkpoint."""
    tokenizer = train_tokenizer(spec.vocab_size, corpus=corpus)
    config = tiny_config(spec, tokenizer)
    torch.manual_seed(seed)
    model = FAMILIES[spec.arch].model_class(config).eval()
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.generation_config.bos_token_id = config.text_config.bos_token_id
    return tokenizer, model


def hf_preprocessor_config(arch: str, processor: VideoProcessor) -> dict:
    return {
        **processor.to_dict(),
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2_5_VLProcessor" if arch == "qwen2_5_vl" else "Qwen2VLProcessor",
    }


def write_tiny_checkpoint(
    out_dir: str | Path,
    seed: int = 0,
    spec: TinySpec | None = None,
    corpus: list[str] | None = None,
    extra: dict | None = None,
) -> Path:
    """Write a random-weight tiny checkpoint with tokenizer and processor files; returns the dir.
    `corpus` trains the tokenizer; `extra` is merged into `streamvlm.json` (streaming defaults)."""
    spec = spec or TinySpec()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer, model = tiny_model(spec, seed, corpus)
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(out)
    finally:
        hf_logging.enable_progress_bar()
    tokenizer.save_pretrained(out)
    processor = VideoProcessor(min_pixels=56 * 56, max_pixels=28 * 28 * 1280)  # HF's image defaults
    (out / "preprocessor_config.json").write_text(
        json.dumps(hf_preprocessor_config(spec.arch, processor), indent=2) + "\n"
    )
    streamvlm = {
        "min_pixels": spec.min_pixels,
        "max_pixels": spec.max_pixels,
        "tiny_spec": asdict(spec),
        "seed": seed,
        **(extra or {}),
    }
    (out / "streamvlm.json").write_text(json.dumps(streamvlm, indent=2) + "\n")
    return out


#: `generation_config.json` of Qwen/Qwen2.5-VL-7B-Instruct (and of the fine-tunes saved from it),
#: with the token ids of the tiny tokenizer: top_k 1 makes its sampling greedy (method §7.4).
QWEN_GENERATION = {
    "bos_token_id": "<|endoftext|>",
    "pad_token_id": "<|endoftext|>",
    "do_sample": True,
    "eos_token_id": ["<|im_end|>", "<|endoftext|>"],
    "repetition_penalty": 1.05,
    "temperature": 0.1,
    "top_k": 1,
    "top_p": 0.001,
}


def write_hub_checkpoint(
    out_dir: str | Path,
    seed: int = 0,
    spec: TinySpec | None = None,
    shards: int = 3,
    dtype: torch.dtype = torch.bfloat16,
    generation: dict | None = None,
) -> Path:
    """A tiny random checkpoint laid out like the Qwen2.5-VL / Qwen2-VL hub repos: weights in `dtype`
    under the published key names (`model.layers.*`, `visual.*`, `lm_head.weight`) in `shards`
    files `model-0000i-of-0000n.safetensors` listed by `model.safetensors.index.json`, the published
    flat config.json (text keys at the top, `rope_scaling` with `mrope_section`, `torch_dtype`),
    `generation_config.json` (`generation`, default `QWEN_GENERATION`; token names become ids),
    Qwen's image `preprocessor_config.json`, tokenizer.json + vocab.json + merges.txt +
    tokenizer_config.json, `chat_template.json`, and no `streamvlm.json`. Same weights as
    `write_tiny_checkpoint` with the same seed and spec (rounded to `dtype`)."""
    spec = spec or TinySpec()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer, model = tiny_model(spec, seed)
    weights = {_published_name(k): v.to(dtype).contiguous() for k, v in model.state_dict().items()}
    names = sorted(weights)
    size = -(-len(names) // shards)
    weight_map = {}
    for i in range(shards):
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: weights[k] for k in names[i * size : (i + 1) * size]}
        save_file(part, out / file, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, file))
    total = sum(v.numel() * v.element_size() for v in weights.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    _write_json(out / "model.safetensors.index.json", index)
    _write_json(out / "config.json", _published_config(model, dtype))
    ids = tokenizer.convert_tokens_to_ids
    gen = {
        k: ([ids(t) for t in v] if isinstance(v, list) else ids(v) if k.endswith("_token_id") else v)
        for k, v in (QWEN_GENERATION if generation is None else generation).items()
    }
    _write_json(out / "generation_config.json", {**gen, "transformers_version": "4.41.2"})
    processor = VideoProcessor(min_pixels=56 * 56, max_pixels=28 * 28 * 1280)
    _write_json(out / "preprocessor_config.json", hf_preprocessor_config(spec.arch, processor))
    tokenizer.save_pretrained(out)
    tokenizer.backend_tokenizer.model.save(str(out))  # vocab.json, merges.txt
    (out / "chat_template.jinja").unlink(missing_ok=True)
    _write_json(out / "chat_template.json", {"chat_template": CHAT_TEMPLATE})
    tok_config = json.loads((out / "tokenizer_config.json").read_text())
    tok_config.pop("backend", None)
    tok_config.update(chat_template=CHAT_TEMPLATE, model_max_length=131072, tokenizer_class="Qwen2Tokenizer")
    _write_json(out / "tokenizer_config.json", tok_config)
    return out


def _published_name(key: str) -> str:
    """transformers' current key names -> the names in the published safetensors."""
    if key.startswith("model.language_model."):
        return "model." + key[len("model.language_model.") :]
    if key.startswith("model.visual."):
        return key[len("model.") :]
    return key


def _published_config(model, dtype: torch.dtype) -> dict:
    config = model.config
    data = config.to_diff_dict()
    text = data.pop("text_config")
    rope = text.pop("rope_parameters")
    vision = data.pop("vision_config")
    vision = {k: v for k, v in vision.items() if k not in ("rope_parameters", "initializer_range")}
    vision["in_chans"] = vision.pop("in_channels")  # the published names
    vision["spatial_patch_size"] = vision["patch_size"]
    vision["model_type"] = config.model_type  # as published: the vision config names the model type
    flat = {
        "architectures": [type(model).__name__],
        **{k: v for k, v in data.items() if k not in ("dtype", "transformers_version")},
        **{k: v for k, v in text.items() if k not in ("model_type", "layer_types", "dtype")},
        "rope_scaling": (  # as each family's published config.json writes it
            {"mrope_section": rope["mrope_section"], "rope_type": "default", "type": "default"}
            if config.model_type == "qwen2_5_vl"
            else {"type": "mrope", "mrope_section": rope["mrope_section"]}
        ),
        "rope_theta": rope["rope_theta"],
        "tie_word_embeddings": config.tie_word_embeddings,
        "torch_dtype": str(dtype).removeprefix("torch."),
        "transformers_version": "4.41.2",
        "vision_config": vision,
    }
    return flat


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
