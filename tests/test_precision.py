"""bfloat16 autocast on the CPU only where it is measured to be faster (`train.precision`)."""

import time

import torch

from streamvlm.train import precision
from streamvlm.train.config import TrainConfig
from streamvlm.train.trainer import use_bf16


def test_bf16_choice_follows_a_timing_of_this_cpu():
    x, w = torch.randn(512, 256), torch.randn(256, 512, requires_grad=True)

    def best(bf16: bool) -> float:  # an independent timing of the same product
        times = []
        for _ in range(6):
            started = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                (x @ w).float().sum().backward()
            times.append(time.perf_counter() - started)
        return min(times[1:])

    fast = precision.cpu_bf16_is_fast()
    ratio = best(True) / best(False)
    if ratio < 0.5 or ratio > 2.0:  # clear cases only: a shared CPU makes close timings noisy
        assert fast == (ratio < 1.0), ratio
    assert use_bf16(TrainConfig(bf16="auto", device="cpu")) == fast
    assert use_bf16(TrainConfig(bf16=True, device="cpu")) and not use_bf16(TrainConfig(bf16=False))


def test_cpu_autocast_is_bf16_only_where_fast(monkeypatch):
    for fast in (True, False):
        monkeypatch.setattr(precision, "cpu_bf16_is_fast", lambda fast=fast: fast)
        with precision.cpu_autocast():
            assert torch.is_autocast_enabled("cpu") == fast
            y = torch.randn(4, 4) @ torch.randn(4, 4)
        assert y.dtype == (torch.bfloat16 if fast else torch.float32)
