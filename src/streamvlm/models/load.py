"""Loading a checkpoint (local dir or hub id) with its tokenizer and video processor.

One code path for the tiny checkpoints written by `streamvlm tiny-model`, the shipped model, and
`mit-han-lab/StreamingVLM` / `Qwen/Qwen2.5-VL-*` / `Qwen/Qwen2-VL-*` (both the current and the older
public weight-key layouts load, through transformers' own conversion).
"""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel
from transformers.utils import logging as hf_logging

from ..errors import ModelLoadError
from .arch import FAMILIES, Family
from .processor import VideoProcessor

REQUIRED_TOKENS = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|video_pad|>")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: object
    processor: VideoProcessor
    family: Family
    path: Path
    #: Streaming defaults stored with the checkpoint (`streamvlm.json`), e.g. pixel budget, query.
    defaults: dict = field(default_factory=dict)

    @property
    def config(self):
        return self.model.config


def resolve_model_dir(name: str) -> Path:
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"model {name} is a file; pass the checkpoint directory")
        return path
    if not _HUB_ID.match(name):
        raise ModelLoadError(f"model directory {name} does not exist")
    try:
        from huggingface_hub import snapshot_download

        patterns = ["*.json", "*.safetensors", "*.jinja", "*.txt", "tokenizer*"]
        return Path(snapshot_download(name, allow_patterns=patterns))
    except Exception as exc:  # offline, unknown repo, gated...
        raise ModelLoadError(
            f"cannot fetch {name} from the Hugging Face Hub ({type(exc).__name__}); "
            "pass a local checkpoint directory instead"
        ) from exc


def check_model_dir(path: Path) -> None:
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    weights = (
        "model.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
        "pytorch_model.bin.index.json",
    )
    if not any((path / w).is_file() for w in weights):
        missing.append("weights (model.safetensors)")
    if not (
        (path / "tokenizer.json").is_file()
        or ((path / "vocab.json").is_file() and (path / "merges.txt").is_file())
    ):
        missing.append("tokenizer (tokenizer.json)")
    if missing:
        raise ModelLoadError(f"model directory {path} is missing {', '.join(missing)}")


def load_model(
    name: str,
    device: str = "cpu",
    dtype: str = "float32",
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> LoadedModel:
    path = resolve_model_dir(name)
    check_model_dir(path)
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    try:
        config = AutoConfig.from_pretrained(path)
    except (ValueError, KeyError, OSError, json.JSONDecodeError) as exc:
        model_type = _peek_model_type(path)
        if model_type is not None and model_type not in FAMILIES:
            raise ModelLoadError(_unsupported(model_type, path)) from exc
        raise ModelLoadError(f"cannot read {path / 'config.json'}: {exc}") from exc
    if config.model_type not in FAMILIES:
        raise ModelLoadError(_unsupported(config.model_type, path))
    family = FAMILIES[config.model_type]
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        model = family.model_class.from_pretrained(path, dtype=DTYPES[dtype], attn_implementation="sdpa")
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:
        raise ModelLoadError(f"cannot load {path}: {type(exc).__name__}: {exc}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    model.to(device).eval()
    _check_tokens(tokenizer, model.config, path)
    defaults = {}
    if (path / "streamvlm.json").is_file():
        defaults = json.loads((path / "streamvlm.json").read_text())
    processor = VideoProcessor.from_pretrained(path, min_pixels=min_pixels, max_pixels=max_pixels)
    return LoadedModel(model, tokenizer, processor, family, path, defaults)


def _peek_model_type(path: Path) -> str | None:
    try:
        return json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def _unsupported(model_type, path: Path) -> str:
    return (
        f"unsupported architecture {model_type!r} in {path / 'config.json'}; "
        f"supported: {', '.join(sorted(FAMILIES))}"
    )


def _check_tokens(tokenizer, config, path: Path) -> None:
    vocab = tokenizer.get_vocab()
    missing = [t for t in REQUIRED_TOKENS if t not in vocab]
    if missing:
        raise ModelLoadError(f"tokenizer in {path} lacks the special tokens {', '.join(missing)}")
    if vocab["<|video_pad|>"] != config.video_token_id:
        raise ModelLoadError(
            f"tokenizer and config disagree in {path}: <|video_pad|> is {vocab['<|video_pad|>']} "
            f"in the tokenizer but video_token_id is {config.video_token_id}"
        )
