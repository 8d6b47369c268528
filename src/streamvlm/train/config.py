"""One dataclass for a training run, read from YAML with `key=value` overrides on the command line."""

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from ..cache.policy import StreamingPolicy, Windows
from ..errors import StreamvlmError
from ..options import read_yaml_options


@dataclass
class LoraOptions:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


#: The options that name annotation files: a list (a single string is read as one), YAML paths
#: relative to the config file.
DATA_KEYS = ("train_data", "eval_data", "text_data")


@dataclass
class TrainConfig(Windows):
    """A training run. The cache windows are inherited from `cache.policy.Windows`: `text_sink` and
    `text_window` cut each window's previous text (as the text memory does), and with
    `streaming_mask` all four shape attention inside a window."""

    model: str = ""  # checkpoint dir or hub id to start from
    train_data: list[str] = field(default_factory=list)  # chunked annotation files (make-chunks)
    eval_data: list[str] = field(default_factory=list)
    #: Annotation files whose windows are always shown without frames (their videos are never opened):
    #: commentary-only data, e.g. `streamvlm world dataset --text-only`. Labels follow text_only_labels.
    text_data: list[str] = field(default_factory=list)
    output_dir: str = "runs/train"
    # how samples are rendered (must match inference)
    fps: int = 2
    min_pixels: int | None = None
    max_pixels: int | None = None
    number_loss_weight: float = 1.0  # weight of number tokens in the loss (announced scores)
    text_only_fraction: float = 0.0  # share of windows rendered without frames (text-skill curriculum)
    text_only_labels: str = "all"  # loss in those windows: "all" reply tokens or only "numbers"
    time_shift_max: int = 0  # shift half the windows' time labels by up to this many seconds (long streams)
    #: Attention inside a window as the streaming policy leaves it (`data.sample.streaming_visibility`):
    #: rounds older than these windows lose their frames and turn shells, their words stay as text
    #: memory (head `text_sink` + tail `text_window`). False: full attention (the paper's recipe).
    streaming_mask: bool = False
    skip_bad: bool = False  # skip and count bad samples instead of stopping
    # optimisation (research recipe: lr 1e-5 cosine, 3 % warm-up, 1 epoch, frozen vision tower)
    learning_rate: float = 1e-5
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 1  # per device
    grad_accum: int = 1
    bf16: bool | str = "auto"  # "auto": on CUDA with bf16 support, on a CPU where it is faster (precision)
    gradient_checkpointing: bool = False
    freeze_vision: bool = True
    #: Directory for the frozen vision tower's output per second of every training video
    #: (`train.features`): computed once at the start (or reused), then read in place of decoding
    #: frames and running the tower at each step. Needs `freeze_vision` and windows that start on a
    #: whole second (make-chunks with a whole-second stride). None: frames decoded at every step.
    vision_cache: str | None = None
    lora: LoraOptions | None = None
    # bookkeeping
    seed: int = 42
    logging_steps: int = 10
    eval_steps: int | None = None
    save_steps: int = 100
    save_total_limit: int | None = 2
    resume: str = "auto"  # auto: continue from the last checkpoint in output_dir; never; or a checkpoint path
    num_workers: int = 0
    #: Niceness (0-19) of those data-loading workers. Training on CPU the step uses every core; a
    #: worker decoding video at a lower priority takes a core only while the step leaves it idle
    #: (world recipe, 2 cores: 1.12 -> 1.02 s per step at 19). 0: as the trainer itself.
    loader_nice: int = 0
    deepspeed: str | None = None  # DeepSpeed JSON config (ZeRO-3 for the 7B recipe)
    fsdp: str | None = None  # e.g. "full_shard auto_wrap"
    fsdp_config: dict | None = None
    device: str | None = None  # None: what accelerate picks; "cpu" forces CPU
    sync_log: bool = False  # write per-rank step/parameter checksums (tests of multi-process sync)

    def validate(self) -> None:
        if not self.model:
            raise StreamvlmError("train: `model` (checkpoint to start from) is required")
        if not self.train_data and not self.text_data:
            raise StreamvlmError("train: `train_data` or `text_data` (annotation files) is required")
        for path in (p for key in DATA_KEYS for p in getattr(self, key)):
            if not Path(path).is_file():
                raise StreamvlmError(f"train: data file {path} does not exist")
        if self.learning_rate <= 0 or self.batch_size < 1 or self.grad_accum < 1:
            raise StreamvlmError("train: learning_rate must be > 0, batch_size and grad_accum >= 1")
        if not 0 <= self.loader_nice <= 19:
            raise StreamvlmError(f"train: loader_nice must be in 0..19, got {self.loader_nice}")
        if self.time_shift_max < 0:
            raise StreamvlmError(f"train: time_shift_max must be >= 0, got {self.time_shift_max}")
        if self.streaming_mask:  # the policy's own checks, before any data is read
            try:
                StreamingPolicy(**vars(self.windows()))
            except ValueError as exc:
                raise StreamvlmError(f"train: {exc}") from exc
        if self.vision_cache and not self.freeze_vision:
            raise StreamvlmError("train: vision_cache needs freeze_vision (a learning tower changes)")
        if self.text_only_labels not in ("all", "numbers"):
            raise StreamvlmError(
                f"train: text_only_labels must be 'all' or 'numbers', not {self.text_only_labels!r}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


def load_config(path: str | None, overrides: list[str] = ()) -> TrainConfig:
    """Read YAML (relative data paths resolve against its directory), then apply `key=value` overrides
    (values parsed as YAML; nested keys with dots, e.g. `lora.r=8`)."""
    data: dict = {}
    if path:
        data = read_yaml_options(path, "training config")
        base = Path(path).parent
        for key in DATA_KEYS:
            if isinstance(data.get(key), str):
                data[key] = [data[key]]
            data[key] = [str(base / p) if not Path(p).is_absolute() else p for p in data.get(key) or []]
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise StreamvlmError(f"override {item!r}: expected key=value")
        target = data
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {}) if isinstance(target.get(parent, {}), dict) else {}
        target[leaf] = yaml.safe_load(value)
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise StreamvlmError(f"unknown training option(s): {', '.join(unknown)}")
    lora = data.get("lora")
    if isinstance(lora, dict):
        data["lora"] = LoraOptions(**lora)
    elif lora in (True, "true"):
        data["lora"] = LoraOptions()
    elif lora in (False, None, "none"):
        data["lora"] = None
    for key in DATA_KEYS:
        if isinstance(data.get(key), str):
            data[key] = [data[key]]
    try:
        return TrainConfig(**data)
    except TypeError as exc:
        raise StreamvlmError(f"bad training option: {exc}") from exc
