"""Loading a checkpoint (local dir or hub id) with its tokenizer and video processor.

One code path for the tiny checkpoints written by `streamvlm tiny-model`, the shipped model, and
`mit-han-lab/StreamingVLM` / `Qwen/Qwen2.5-VL-*` / `Qwen/Qwen2-VL-*` (both the current and the older
public weight-key layouts load, through transformers' own conversion), single-file or sharded
(`model.safetensors.index.json` + `model-0000i-of-0000n.safetensors`, as on the hub).

A checkpoint that does not fill the model exactly (a missing, unexpected or misshapen weight, a
missing shard, integer / quantized tensors) is refused in one line rather than run with random
weights. The checkpoint's `generation_config.json` gives the decoding defaults and stop tokens.
"""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel
from transformers.utils import logging as hf_logging

from ..errors import ModelLoadError
from .arch import FAMILIES, Family
from .processor import VideoProcessor

REQUIRED_TOKENS = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|video_pad|>")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: safetensors dtypes of weights we load (then cast to the requested dtype).
FLOAT_STORAGE = ("F32", "BF16", "F16", "F64")
#: generation_config.json fields that become streaming defaults (method §7.4).
GENERATION_DEFAULTS = ("temperature", "top_k", "top_p", "repetition_penalty")
INDEX = "model.safetensors.index.json"
SINGLE_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "pytorch_model.bin.index.json")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: object
    processor: VideoProcessor
    family: Family
    path: Path
    #: Streaming defaults stored with the checkpoint (`streamvlm.json`), e.g. pixel budget, query;
    #: its "stream" entry also holds the decoding defaults of `generation_config.json`.
    defaults: dict = field(default_factory=dict)
    #: End-of-sequence ids of `generation_config.json`.
    eos_ids: tuple[int, ...] = ()

    @property
    def config(self):
        return self.model.config

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """Tokens that end a reply: `<|im_end|>` and the checkpoint's other eos ids."""
        im_end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        return (im_end, *(i for i in self.eos_ids if i != im_end))


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
    if (path / INDEX).is_file():
        _check_shards(path)
    elif not any((path / w).is_file() for w in SINGLE_WEIGHTS):
        shards = sorted(path.glob("model-*-of-*.safetensors"))
        if shards:
            raise ModelLoadError(
                f"model directory {path} has weight shards ({shards[0].name}, ...) "
                f"but no {INDEX} to list them"
            )
        missing.append(f"weights (model.safetensors, or {INDEX} and its shards)")
    if not (
        (path / "tokenizer.json").is_file()
        or ((path / "vocab.json").is_file() and (path / "merges.txt").is_file())
    ):
        missing.append("tokenizer (tokenizer.json)")
    if missing:
        raise ModelLoadError(f"model directory {path} is missing {', '.join(missing)}")


def _check_shards(path: Path) -> None:
    try:
        shards = sorted(set(json.loads((path / INDEX).read_text())["weight_map"].values()))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ModelLoadError(f"cannot read {path / INDEX}: no valid weight_map ({exc})") from exc
    absent = [s for s in shards if not (path / s).is_file()]
    if absent:
        raise ModelLoadError(
            f"model directory {path} is missing {len(absent)} of the {len(shards)} weight shards "
            f"listed in {INDEX}: {', '.join(absent[:3])}{', ...' if len(absent) > 3 else ''}"
        )


def weight_files(path: Path) -> list[Path]:
    """The safetensors files transformers will read (empty for a pytorch_model.bin checkpoint)."""
    if (path / INDEX).is_file():
        return [path / s for s in sorted(set(json.loads((path / INDEX).read_text())["weight_map"].values()))]
    return [path / "model.safetensors"] if (path / "model.safetensors").is_file() else []


def check_weight_dtypes(path: Path) -> None:
    """Every stored tensor is floating point (read from the safetensors headers, nothing loaded)."""
    for file in weight_files(path):
        try:
            with safe_open(file, framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                    dtype = f.get_slice(name).get_dtype()
                    if dtype not in FLOAT_STORAGE:
                        raise ModelLoadError(
                            f"tensor {name} in {file} is stored as {dtype}; streamvlm loads floating-point "
                            f"weights ({', '.join(FLOAT_STORAGE[:3])}) only, not quantized checkpoints"
                        )
        except ModelLoadError:
            raise
        except Exception as exc:  # truncated or not a safetensors file
            raise ModelLoadError(f"cannot read the weights {file}: {type(exc).__name__}: {exc}") from exc


def check_loading_info(info: dict, config, path: Path) -> None:
    """Refuse a checkpoint whose weights do not fill the model exactly (transformers would
    initialise what is missing at random)."""

    def few(keys) -> str:
        keys = sorted(keys)
        return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

    problems = [
        f"{name} has shape {list(stored)} in the checkpoint but {list(wanted)} in config.json"
        for name, stored, wanted in sorted(info.get("mismatched_keys") or ())
    ][:3]
    if info.get("missing_keys"):
        problems.append(f"missing weights {few(info['missing_keys'])}")
        if "lm_head.weight" in info["missing_keys"]:
            problems[-1] += " (tie_word_embeddings is false in config.json, so lm_head.weight must be stored)"
    if info.get("unexpected_keys"):
        problems.append(f"unexpected weights {few(info['unexpected_keys'])}")
    problems += [str(m).splitlines()[0] for m in info.get("error_msgs") or ()][:1]
    if problems:
        raise ModelLoadError(
            f"checkpoint {path} does not match its config.json ({config.model_type}): {'; '.join(problems)}"
        )


def generation_defaults(path: Path, vocab_size: int) -> tuple[dict, tuple[int, ...]]:
    """Decoding defaults (StreamConfig fields) and eos ids from `generation_config.json`."""
    file = path / "generation_config.json"
    if not file.is_file():
        return {}, ()
    try:
        data = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {file}: {exc}") from exc
    stream = {k: data[k] for k in GENERATION_DEFAULTS if data.get(k) is not None}
    for name, value in stream.items():
        if not _valid_setting(name, value):
            raise ModelLoadError(f"{file}: {name} {value!r} is not a valid value")
    if stream.get("temperature", 1.0) <= 0:  # some checkpoints write temperature 0 for greedy
        del stream["temperature"]
        stream["greedy"] = True
    eos = data.get("eos_token_id")
    eos = [] if eos is None else [eos] if isinstance(eos, int) else eos
    if not isinstance(eos, list) or not all(isinstance(i, int) and 0 <= i < vocab_size for i in eos):
        raise ModelLoadError(
            f"{file}: eos_token_id {data.get('eos_token_id')!r} is not a token id below {vocab_size} "
            "or a list of them"
        )
    return stream, tuple(eos)


def _valid_setting(name: str, value) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if name == "top_k":
        return isinstance(value, int) and value >= 0
    if name == "top_p":
        return 0 < value <= 1
    return name == "temperature" or value > 0  # repetition_penalty


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
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device}: CUDA is not available on this machine")
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
    quantization = getattr(config, "quantization_config", None)
    if quantization:
        method = quantization.get("quant_method") if isinstance(quantization, dict) else quantization
        raise ModelLoadError(
            f"{path} is a quantized checkpoint ({method}); streamvlm loads unquantized weights only"
        )
    check_weight_dtypes(path)
    decoding, eos_ids = generation_defaults(path, config.text_config.vocab_size)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        model, info = family.model_class.from_pretrained(
            path,
            dtype=DTYPES[dtype],
            attn_implementation="sdpa",
            output_loading_info=True,
            ignore_mismatched_sizes=True,  # reported below, tensor by tensor
        )
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:
        raise ModelLoadError(f"cannot load {path}: {type(exc).__name__}: {exc}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    check_loading_info(info, config, path)
    model.to(device).eval()
    _check_tokens(tokenizer, model.config, path)
    defaults = {}
    if (path / "streamvlm.json").is_file():
        defaults = json.loads((path / "streamvlm.json").read_text())
    if decoding:  # streamvlm.json's own stream defaults come first
        defaults["stream"] = {**decoding, **defaults.get("stream", {})}
    processor = VideoProcessor.from_pretrained(path, min_pixels=min_pixels, max_pixels=max_pixels)
    return LoadedModel(model, tokenizer, processor, family, path, defaults, eos_ids)


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
