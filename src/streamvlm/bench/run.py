"""`streamvlm bench`: latency and memory per second of stream, per cache policy, over long streams.

Each policy streams the same generated frames through one `StreamingSession`; every reply has
exactly `new_tokens` tokens (end of turn banned) so generation costs the same everywhere. Per
second it records the engine's own step statistics. Memory held by the benchmark itself is a few
numbers per second, whatever the stream length.
"""

import gc
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..cache.policy import Windows
from ..config import StreamConfig
from ..engine import StreamingSession
from ..sources import synthetic_frames

RECORDED = (
    "t",
    "step_ms",
    "evict_ms",
    "prefill_ms",
    "decode_ms",
    "cache_tokens",
    "max_position",
    "kv_bytes",
    "rss_mb",
    "peak_device_mb",
)


@dataclass
class BenchConfig(Windows):
    """One efficiency benchmark; the cache windows are inherited from `cache.policy.Windows`."""

    shape: str | None = "tiny"  # tiny | 7b (random weights with these shapes); or model=DIR
    model: str | None = None
    minutes: float = 5.0
    policies: list[str] = field(default_factory=lambda: ["streaming", "full", "sliding", "recompute"])
    fps: int = 2
    size: tuple[int, int] = (112, 112)  # width, height of the generated frames
    new_tokens: int = 20
    device: str = "cpu"
    dtype: str = "float32"
    text_layers: int | None = None  # 7b shape on a CPU: keep every layer's shape, fewer layers
    vision_layers: int | None = None
    max_step_s: float = 120.0  # stop a policy once one second of stream takes longer than this
    seed: int = 0


def load(config: BenchConfig):
    from ..models.load import load_model
    from .shapes import build_shape

    if config.model:
        return load_model(config.model, device=config.device, dtype=config.dtype)
    return build_shape(
        config.shape, config.device, config.dtype, config.text_layers, config.vision_layers, config.seed
    )


def frame_pool(config: BenchConfig, seconds: int = 8) -> list[np.ndarray]:
    """A few distinct seconds of frames, cycled: vision cost does not depend on content."""
    width, height = config.size
    frames = list(synthetic_frames(seconds, config.fps, (height, width), seed=config.seed))
    return [np.stack(frames[i * config.fps : (i + 1) * config.fps]) for i in range(seconds)]


def bench_policy(loaded, config: BenchConfig, policy: str, pool, progress=None) -> dict:
    stream = StreamConfig(
        fps=config.fps,
        policy=policy,
        **vars(config.windows()),
        max_new_tokens=config.new_tokens,
        greedy=True,
        repetition_penalty=1.0,
        ignore_eos=True,
    )
    session = StreamingSession(loaded, stream)
    if loaded.model.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = int(round(config.minutes * 60))
    series, stopped = [], None
    for t in range(seconds):
        try:
            line = session.step(pool[t % len(pool)], float(t))
        except torch.OutOfMemoryError:
            stopped = f"out of memory at {t} s"
            break
        stats = line.stats.to_dict()
        series.append({k: stats[k] for k in RECORDED})
        if progress is not None:
            progress.update(1)
        if line.stats.step_ms > 1000 * config.max_step_s:
            stopped = f"step over {config.max_step_s:.0f} s at {t} s"
            break
    if progress is not None and len(series) < seconds:
        progress.update(seconds - len(series))
    del session
    gc.collect()
    if loaded.model.device.type == "cuda":
        torch.cuda.empty_cache()
    return {"series": series, "stopped": stopped}


def run_bench(config: BenchConfig, quiet: bool = False) -> dict:
    from tqdm import tqdm

    from .report import summarize

    loaded = load(config)
    pool = frame_pool(config)
    params = sum(p.numel() for p in loaded.model.parameters())
    tokens_per_second = loaded.processor.tokens_per_chunk(config.size[1], config.size[0], config.fps)
    warm = StreamingSession(loaded, StreamConfig(fps=config.fps, max_new_tokens=2, greedy=True))
    for t in range(3):  # first calls pay for allocator and kernel warm-up: keep them out of the series
        warm.step(pool[t % len(pool)], float(t))
    del warm
    total = int(round(config.minutes * 60)) * len(config.policies)
    series, stopped = {}, {}
    started = time.time()
    with tqdm(total=total, unit="s", desc="stream seconds", disable=quiet or not sys.stderr.isatty()) as bar:
        for policy in config.policies:
            bar.set_postfix_str(policy)
            result = bench_policy(loaded, config, policy, pool, bar)
            series[policy], stopped[policy] = result["series"], result["stopped"]
    return {
        "config": {**asdict(config), "size": list(config.size)},
        "machine": machine(loaded.model.device),
        "model": {
            "parameters": params,
            "vision_tokens_per_second": tokens_per_second,
            "text_layers": loaded.config.text_config.num_hidden_layers,
            "vision_layers": loaded.config.vision_config.depth,
        },
        "wall_s": time.time() - started,
        "date": time.strftime("%Y-%m-%d"),
        "series": series,
        "stopped": stopped,
        "summary": summarize(series, config),
    }


def machine(device: torch.device) -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def write_report(report: dict, out: str | Path) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=1) + "\n")
