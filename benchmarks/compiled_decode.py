"""Compiled (static-shape) vs eager decode, ms per decoded token, at the tiny shape and a 7B layer shape.

    python benchmarks/compiled_decode.py [--device cpu] [--seconds 10] [--max-new-tokens 16] \
        [--text-layers 2] [--warm-compile-cache] [--out benchmarks/results/cpu-compiled-decode.json]

For each shape (`tiny`: the random default model; `7b`: Qwen2.5-VL-7B's layer shapes, hidden 3584,
28 heads, 4 KV heads, intermediate 18944, vocabulary 152064, with --text-layers decoder layers and
one vision layer, random weights) the same generated clip is streamed twice, with
`StreamConfig(compile=False)` and `StreamConfig(compile=True)` (the two sessions step second by
second in turn, so that load from other processes falls on both alike), under the streaming policy
with small windows (it evicts every second from the third on). Every reply is --max-new-tokens long
(`ignore_eos`). A second's decode time (`StepStats.decode_ms`: sampling and the one-token forwards)
over its token count is the ms per decoded token; the first --warmup seconds are left out (the
compile happens in the first second's decode; CUDA graphs are recorded in the next ones). The
compile time is reported apart: the first second's decode time minus a warm second's (a cold
compile: inductor's on-disk cache is a fresh directory unless --warm-compile-cache).
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from streamvlm import StreamConfig, StreamingSession
from streamvlm.bench.shapes import build_shape
from streamvlm.sources import ArraySource, synthetic_frames


def sessions(loaded, args) -> dict[bool, StreamingSession]:
    """An eager and a compiled session over the same stream settings."""
    options = dict(
        ignore_eos=True,
        max_new_tokens=args.max_new_tokens,
        vision_window=args.window,
        text_rounds=args.window,
        text_sink=32,
        text_window=32,
    )
    return {c: StreamingSession(loaded, StreamConfig(compile=c, **options)) for c in (False, True)}


def measure(loaded, args) -> dict:
    """Step both sessions second by second, in turn (a load spike on a shared machine hits both)."""
    runs = sessions(loaded, args)
    fps = runs[False].config.fps
    stats = {False: [], True: []}
    for chunk in ArraySource(synthetic_frames(args.seconds, fps, (112, 112), seed=0), fps):
        for compile, session in runs.items():
            stats[compile].append(session.step(chunk.frames, chunk.start, chunk.end).stats)
    out = {}
    for compile, session in runs.items():
        steps = stats[compile]
        warm = steps[args.warmup :]
        per_token = [s.decode_ms / s.new_tokens for s in warm]
        out["compiled" if compile else "eager"] = {
            "ms_per_token_median": statistics.median(per_token),
            "ms_per_token_min": min(per_token),
            "ms_per_token_by_second": [round(x, 3) for x in per_token],
            "first_second_decode_ms": steps[0].decode_ms,
            "compile_ms_estimate": steps[0].decode_ms - statistics.median(s.decode_ms for s in warm),
            "prefill_ms_median": statistics.median(s.prefill_ms for s in warm),
            "cache_rows_last": steps[-1].cache_tokens,
            "static_capacity": session.cache.capacity if compile else None,
            "evictions": session.evictions,
            "tokens_measured": sum(s.new_tokens for s in warm),
        }
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, help="default float32 on cpu, bfloat16 on cuda")
    p.add_argument("--shapes", default="tiny,7b")
    p.add_argument("--text-layers", type=int, default=2, help="decoder layers of the 7b shape")
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2, help="seconds left out of the per-token figures")
    p.add_argument("--window", type=int, default=2, help="vision window and text rounds, seconds")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", default="benchmarks/results/cpu-compiled-decode.json")
    p.add_argument(
        "--warm-compile-cache",
        action="store_true",
        help="reuse inductor's on-disk cache (default: a fresh one, so the compile time is a cold compile's)",
    )
    args = p.parse_args(argv)
    if not args.warm_compile_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    results = {
        "command": "python " + " ".join(sys.argv),
        "device": args.device,
        "dtype": dtype,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "seconds": args.seconds,
        "warmup_seconds": args.warmup,
        "compile_cache": "warm" if args.warm_compile_cache else "cold",
        "max_new_tokens": args.max_new_tokens,
        "window": args.window,
        "shapes": {},
    }
    for shape in args.shapes.split(","):
        t0 = time.perf_counter()
        layers = dict(text_layers=args.text_layers, vision_layers=1) if shape == "7b" else {}
        loaded = build_shape(shape, device=args.device, dtype=dtype, **layers)
        entry = {
            "text_layers": args.text_layers
            if shape == "7b"
            else loaded.model.config.text_config.num_hidden_layers
        }
        entry.update(measure(loaded, args))
        entry["speedup"] = entry["eager"]["ms_per_token_median"] / entry["compiled"]["ms_per_token_median"]
        entry["wall_s"] = time.perf_counter() - t0
        results["shapes"][shape] = entry
        print(
            f"{shape}: eager {entry['eager']['ms_per_token_median']:.2f} ms/token, compiled "
            f"{entry['compiled']['ms_per_token_median']:.2f} ms/token (x{entry['speedup']:.2f}); "
            f"compile ~{entry['compiled']['compile_ms_estimate'] / 1000:.1f} s",
            flush=True,
        )
        del loaded
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
