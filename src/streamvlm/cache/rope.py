"""Moving cached keys to new positions.

RoPE rotations compose: R(a)·R(b) = R(a + b). A key cached at position p is R(p)·k; the same key at
position p + s is R(s)·R(p)·k. Eviction shifts every retained span by one integer `s`, the same on
the three M-RoPE axes (t, h, w), so for every frequency band the extra angle is `s · inv_freq`
whichever axis the band reads: one ordinary 1-D rotation per row moves a 3-D key.

The caller always rotates from the key as the model computed it (never from an already rotated
copy), so rounding error is that of one rotation, however many evictions a row has lived through.
"""

import torch


def rotate_keys(keys: torch.Tensor, shift: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Rotate post-RoPE `keys` (..., N, D) by integer position `shift` (N,).

    Angles are formed in float64 (a shift of thousands times a frequency near 1 loses digits in
    float32), the rotation itself runs in float32, and the result is cast back to `keys.dtype`.
    The half-split layout matches transformers' `rotate_half` convention used by Qwen2/2.5-VL.
    """
    angle = shift.to(torch.float64)[:, None] * inv_freq.to(device=shift.device, dtype=torch.float64)[None, :]
    angle = torch.cat((angle, angle), dim=-1)
    cos = angle.cos().to(device=keys.device, dtype=torch.float32)
    sin = angle.sin().to(device=keys.device, dtype=torch.float32)
    k = keys.float()
    k1, k2 = k.chunk(2, dim=-1)
    rotated = torch.cat((-k2, k1), dim=-1)
    return (k * cos + rotated * sin).to(keys.dtype)
