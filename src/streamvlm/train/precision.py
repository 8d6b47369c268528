"""Whether bfloat16 autocast pays on this CPU: measured once, not assumed.

On a CPU with bfloat16 matrix instructions (AVX512-BF16, AMX) autocast to bfloat16 makes the small
models' training steps ~1.8x faster; on one without them (e.g. an AVX2-only EPYC) the same products
are emulated and ~50x slower. A short timing of one product in each dtype tells them apart.
"""

import functools
import time

import torch


@functools.cache
def cpu_bf16_is_fast(rows: int = 512, inner: int = 256, repeats: int = 5) -> bool:
    """True when a (`rows` x `inner`) @ (`inner` x `rows`) product, forward and backward, the size of a
    small model's layers on a batch, is clearly faster (by 20 %) under bfloat16 autocast than in
    float32 on this CPU: best of `repeats` each, after one warm-up, the two dtypes taking turns so a
    busy machine slows both alike (~0.5 s where bfloat16 is emulated, once a process)."""
    x = torch.randn(rows, inner)
    w = torch.randn(inner, rows, requires_grad=True)
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(repeats + 1):
        for bf16 in (True, False):
            started = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                (x @ w).float().sum().backward()
            times[bf16].append(time.perf_counter() - started)
    return min(times[True][1:]) < 0.8 * min(times[False][1:])


def cpu_autocast():
    """`torch.autocast` on the CPU in bfloat16 where that is faster here (`cpu_bf16_is_fast`), else a
    no-op context (float32)."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_bf16_is_fast())
