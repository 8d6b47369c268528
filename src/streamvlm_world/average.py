"""Weight averaging ("model soup", Wortsman et al. 2022): the mean of several fine-tunes of one model.

Fine-tunes of the same starting weights on different data stay close enough that their mean is
itself a good model, and can be a better one than each: what one run learned from its own matches
by chance (a slip on one held-out stream here, another there) is diluted, what they all learned
stays. The world recipe can average its `calls` replay runs (`Recipe.call_runs`; measured in the
notes in docs/world.md).
"""

import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from streamvlm.errors import StreamvlmError

WEIGHTS = "model.safetensors"


def average_checkpoints(model_dirs: list[Path], out_dir: Path) -> Path:
    """Write to `out_dir` (whole or not at all) the first model's directory with its weights replaced
    by the mean of every model's (computed in float32, stored in each tensor's own dtype). The models
    must hold the same tensors, of the same shapes and dtypes."""
    model_dirs = [Path(d) for d in model_dirs]
    if not model_dirs:
        raise StreamvlmError("average: no model to average")
    first = load_file(model_dirs[0] / WEIGHTS)
    total = {k: v.to(torch.float32) for k, v in first.items()}
    for other_dir in model_dirs[1:]:
        other = load_file(other_dir / WEIGHTS)
        if set(other) != set(first):
            raise StreamvlmError(f"average: {other_dir} holds other tensors than {model_dirs[0]}")
        for name, value in other.items():
            if value.shape != first[name].shape or value.dtype != first[name].dtype:
                raise StreamvlmError(
                    f"average: {name} is {tuple(value.shape)} {value.dtype} in {other_dir}, "
                    f"{tuple(first[name].shape)} {first[name].dtype} in {model_dirs[0]}"
                )
            total[name] += value.to(torch.float32)
    mean = {k: (v / len(model_dirs)).to(first[k].dtype).contiguous() for k, v in total.items()}
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(model_dirs[0], tmp)
    save_file(mean, tmp / WEIGHTS, metadata={"format": "pt"})
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir
