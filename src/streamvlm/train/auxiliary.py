"""Auxiliary objectives: extra per-sample targets and losses beside the reply cross-entropy.

SFT (`train.trainer.train(config, objectives=[...])`) and replay fine-tuning
(`train.replay.replay_train(..., objectives=[...])`) take any number of them. An objective is an
object (picklable: data-loading workers copy it) with:

    key: str                      where its targets travel in a sample / batch (e.g. "pointer_targets")
    name: str                     its loss's name in logs
    weight: float                 its weight in the total loss
    check(model)                  refuse a model it cannot work on (StreamvlmError), before training
    enable(model) / disable(model)  set up before the first step, undo before the model is saved
    sample_targets(ids, tokenizer) -> Tensor   (rows, n) per rendered token sequence, -1 = nothing
    watch(targets) -> context manager          around one forward pass, targets (batch, rows, n)
                                               for that pass's new tokens, or None (none here)
    loss() -> Tensor | None        what the last watched pass recorded (None: nothing to learn there)

Padding (`data.sample.collate`) fills every extra target with -1. The procedural world's pointer
supervision (`streamvlm_world.pointer.CopyPointer`) is one.
"""

import contextlib
from collections.abc import Sequence

import torch


def watched(objectives: Sequence, targets: dict[str, torch.Tensor | None]) -> contextlib.ExitStack:
    """One context in which every objective watches the forward pass run inside (its targets, or None)."""
    stack = contextlib.ExitStack()
    for objective in objectives:
        stack.enter_context(objective.watch(targets.get(objective.key)))
    return stack


def recorded_losses(objectives: Sequence) -> list[tuple[object, torch.Tensor]]:
    """(objective, unweighted loss) of each objective whose last watched pass recorded one."""
    return [(o, loss) for o in objectives if (loss := o.loss()) is not None]
