"""One dataclass with every streaming option; the CLI, the server and the benchmarks fill it in."""

from dataclasses import dataclass, fields

from .cache.policy import POLICIES, Windows
from .errors import StreamvlmError

POSITIONS = ("contiguous", "append")
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."


@dataclass
class StreamConfig(Windows):
    """Every streaming option. The cache windows (`vision_window`, `text_rounds`, `text_sink`,
    `text_window`) are inherited from `cache.policy.Windows`, where they are declared."""

    fps: int = 2  # frames sampled per second
    policy: str = "streaming"  # cache policy (method §2): streaming, full, sliding or recompute
    positions: str = "contiguous"  # contiguous re-indexing (method §3) or append
    reset_every: int | None = None  # sliding: reset period, s (default: the vision window)
    # decoding (method §7.4): a checkpoint's generation_config.json overrides these (load_model puts
    # its top_k / top_p / temperature / repetition_penalty under the checkpoint's stream defaults);
    # these are the research code's values for a checkpoint that sets none (transformers' top_k 50)
    max_new_tokens: int = 20  # tokens generated at most per second
    greedy: bool = False  # greedy decoding (reproducible)
    temperature: float = 0.9  # sampling temperature
    top_k: int = 50  # sample among the k likeliest tokens, 0 = all
    top_p: float = 1.0  # nucleus sampling mass
    repetition_penalty: float = 1.05  # divides the logits of tokens already said
    seed: int = 42  # sampling seed
    ignore_eos: bool = False  # benchmarks: never stop early, always generate max_new_tokens
    #: GPU fast path: K/V buffers at a fixed capacity the policy bounds and the one-token decode step
    #: compiled with torch.compile (CUDA graphs on CUDA); prefill stays eager; greedy commentary is the
    #: eager path's; needs a bounded policy (not full)
    compile: bool = False
    query: str | None = None  # the instruction, after the first second's frames (method §7.2)
    previous_text: str = ""  # context text placed in the text memory at the start
    system_prompt: str = DEFAULT_SYSTEM_PROMPT  # the system prompt

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        checks = [
            (self.fps >= 1, f"fps must be a whole number of frames per second >= 1, got {self.fps}"),
            (self.policy in POLICIES, f"unknown policy {self.policy!r}; choose one of {', '.join(POLICIES)}"),
            (
                self.positions in POSITIONS,
                f"unknown positions {self.positions!r}; choose one of {', '.join(POSITIONS)}",
            ),
            (self.vision_window >= 1, f"vision window must be >= 1 second, got {self.vision_window}"),
            (self.text_rounds >= 1, f"text rounds must be >= 1, got {self.text_rounds}"),
            (self.text_sink >= 0 and self.text_window >= 0, "text sink and text window cannot be negative"),
            (self.reset_every is None or self.reset_every >= 1, "reset interval must be >= 1 second"),
            (self.max_new_tokens >= 1, f"max new tokens must be >= 1, got {self.max_new_tokens}"),
            (
                self.greedy or self.temperature > 0,
                f"temperature must be > 0 when sampling, got {self.temperature}",
            ),
            (self.repetition_penalty > 0, "repetition penalty must be > 0"),
            (self.top_k >= 0, f"top-k must be >= 0 (0: the whole vocabulary), got {self.top_k}"),
            (0 < self.top_p <= 1, f"top-p must be in (0, 1], got {self.top_p}"),
        ]
        for ok, message in checks:
            if not ok:
                raise StreamvlmError(message)

    @classmethod
    def from_dict(cls, data: dict) -> "StreamConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
