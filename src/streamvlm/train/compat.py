"""Work-arounds for transformers behaviour, kept in one place (each with a test that notices a fix).

transformers 5.24: `Trainer` writes checkpoints with `save_pretrained`, which by default stores the
*original* (pre-v5) key layout of Qwen2-VL / Qwen2.5-VL (`model.layers.*`, `visual.*`), but
`Trainer._load_from_checkpoint` reads them back with a plain `load_state_dict(strict=False)`: every
key but `lm_head` misses, only a warning is logged, and the run "resumes" from the initial weights
with the saved optimizer state. We load the checkpoint's weights through `from_pretrained` (which
knows the key conversion) before handing the checkpoint to the Trainer; its own partial load then
re-writes `lm_head` with the same values. `tests/test_train.py` checks that the bug is still there
(`test_trainer_checkpoint_keys_still_need_conversion`) so the work-around goes when it is fixed.
"""

import torch


def load_full_checkpoint_weights(model: torch.nn.Module, checkpoint: str) -> None:
    """Copy a full-model Trainer checkpoint's weights into `model` (no-op for adapter checkpoints)."""
    from pathlib import Path

    if (
        not (Path(checkpoint) / "model.safetensors").is_file()
        and not (Path(checkpoint) / "model.safetensors.index.json").is_file()
    ):
        return
    dtype = next(model.parameters()).dtype
    fresh = type(model).from_pretrained(checkpoint, dtype=dtype)
    model.load_state_dict(fresh.state_dict(), strict=True)
