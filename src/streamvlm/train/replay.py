"""Replay fine-tuning: train on the engine's own view of whole streams, through its own cache.

SFT (method §5) trains on 24 s windows with full attention, the commentary before a window encoded
afresh as its `previous text` block. Streaming, the model sees something else: older commentary is
text memory whose K/V were computed when those words were replies in their own rounds (reused,
never recomputed), frames only for the last `vision_window` seconds, and positions re-indexed.
Replay trains on exactly that view.

Annotated videos are streamed from their first second through a `StreamingSession` with teacher
forcing (`train.forcing.force`: each round's ground-truth reply fed in its own round). After each
round its loss goes back into the weights: cross-entropy on the reply (numbers weighted), plus the
losses of any auxiliary objectives (`train.auxiliary`), which see the round's new tokens among the
cache's rows. Then the cache is detached, so earlier rounds are plain data (back-propagation through
one round). The optimizer steps every `accumulate` rounds; `trainable` names the parameters that
learn (substrings of their names), everything else stays as it was. With `interleave` > 1 that many
streams run side by side, a round of each in turn, so that a step mixes streams instead of
following one stream's neighbouring seconds.

A checkpoint after every stream, or group of interleaved streams (weights of the trainable
parameters, optimizer, streams done), lets a killed run continue where it stopped; a group that ends
between two steps takes a last, shorter one first, so nothing is carried over a checkpoint.
"""

import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ..config import StreamConfig
from ..data.sample import label_mask, loss_weights, number_tokens
from ..engine import StreamingSession
from ..errors import StreamvlmError
from . import auxiliary, forcing


@dataclass
class ReplayConfig:
    lr: float = 1e-4
    accumulate: int = 8  # rounds per optimizer step
    #: Streams run side by side, a round of each in turn (a step then mixes several matches, not
    #: `accumulate` neighbouring seconds of one); a checkpoint after each such group.
    interleave: int = 1
    max_grad_norm: float = 1.0
    number_loss_weight: float = 10.0
    #: Substrings of the names of the parameters that learn (the vision tower never does): required.
    trainable: tuple[str, ...] = ()

    def validate(self) -> None:
        if self.lr <= 0 or self.accumulate < 1 or self.interleave < 1 or self.number_loss_weight <= 0:
            raise StreamvlmError("replay: lr, accumulate, interleave and number_loss_weight must be > 0")
        if not self.trainable:
            raise StreamvlmError("replay: name at least one trainable parameter")


@dataclass
class ReplayStream:
    """One annotated stream: its opening text and query, then per second (frames, start, end, text)."""

    name: str
    seconds: Iterable[tuple[np.ndarray, float, float, str]]
    previous_text: str = ""
    query: str | None = None


@dataclass
class ReplayLog:
    rounds: int = 0
    steps: int = 0
    streams_done: int = 0
    losses: list[dict] = field(default_factory=list)  # per stream: mean reply loss, each objective's


def trainable_parameters(model, names: tuple[str, ...]) -> dict[str, torch.nn.Parameter]:
    """Freeze every parameter but those whose name contains one of `names` (never the vision tower)."""
    chosen = {}
    for name, p in model.named_parameters():
        keep = any(n in name for n in names) and "visual" not in name
        p.requires_grad_(keep)
        if keep:
            chosen[name] = p
    if not chosen:
        raise StreamvlmError(f"replay: no parameter name contains any of {list(names)}")
    return chosen


def replay_train(
    loaded,
    streams: Iterable[ReplayStream],
    stream_config: StreamConfig,
    config: ReplayConfig,
    checkpoint_dir: Path | None = None,
    progress: Callable[[int], None] | None = None,
    objectives: Sequence = (),
) -> ReplayLog:
    """Fine-tune `loaded.model` in place on `streams` (see the module notes); returns what it did.
    `progress(n)` is told every round; with `checkpoint_dir` a killed run resumes there. Each of
    `objectives` (`train.auxiliary`) gets each round's targets for its new tokens and adds its loss."""
    config.validate()
    model, tokenizer = loaded.model, loaded.tokenizer
    params = trainable_parameters(model, config.trainable)
    optimizer = torch.optim.AdamW(params.values(), lr=config.lr, weight_decay=0.0)
    log = ReplayLog()
    if checkpoint_dir is not None and (checkpoint_dir / "state.json").is_file():
        log = _resume(checkpoint_dir, params, optimizer)
    is_number = number_tokens(tokenizer)
    for objective in objectives:
        objective.check(model)
    was_training = model.training
    model.eval()  # no dropout: the rounds are computed as inference computes them
    for objective in objectives:
        objective.enable(model)

    def watch(ids: torch.Tensor, cached: int):
        """The `force` context: each objective watches the round's new tokens."""
        targets = {o.key: o.sample_targets(ids, tokenizer)[None, :, cached:] for o in objectives}
        return auxiliary.watched(objectives, targets)

    def train_round(session, second, sums) -> None:
        frames, start, end, text = second
        forced = forcing.force(session, frames, text, start, end, context=watch if objectives else None)
        loss = _reply_loss(forced, session.renderer, is_number, config.number_loss_weight)
        total = loss
        for objective, extra in auxiliary.recorded_losses(objectives):
            total = total + objective.weight * extra
            sums[objective.name] += float(extra.detach())
            sums[objective.name + "_rounds"] += 1
        (total / config.accumulate).backward()
        session.cache.detach()
        sums["loss"] += float(loss.detach())
        sums["rounds"] += 1
        log.rounds += 1
        if log.rounds % config.accumulate == 0:
            step()

    def step() -> None:
        torch.nn.utils.clip_grad_norm_(params.values(), config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        log.steps += 1

    try:
        streams = list(streams)
        for first in range(0, len(streams), config.interleave):
            group = streams[first : first + config.interleave]
            if first + len(group) <= log.streams_done:
                continue
            sessions = [
                StreamingSession(
                    loaded,
                    replace(stream_config, previous_text=s.previous_text, query=s.query, greedy=True),
                )
                for s in group
            ]
            seconds = [iter(s.seconds) for s in group]
            sums = [Counter(loss=0.0, rounds=0) for _ in group]
            active = list(range(len(group)))
            while active:  # one round of each stream in turn, until every stream has ended
                for i in list(active):
                    second = next(seconds[i], None)
                    if second is None:
                        active.remove(i)
                        continue
                    train_round(sessions[i], second, sums[i])
                    if progress is not None:
                        progress(1)
            if log.rounds % config.accumulate:  # what is left of a step: taken, so a resume is exact
                step()
            log.streams_done = first + len(group)
            log.losses += [
                {
                    "stream": stream.name,
                    "rounds": done["rounds"],
                    "loss": done["loss"] / max(done["rounds"], 1),
                    **{
                        f"{o.name}_loss": done[o.name] / done[o.name + "_rounds"]
                        if done[o.name + "_rounds"]
                        else None
                        for o in objectives
                    },
                }
                for stream, done in zip(group, sums, strict=True)
            ]
            if checkpoint_dir is not None:
                _save(checkpoint_dir, params, optimizer, log)
    finally:
        for objective in objectives:
            objective.disable(model)
        for p in model.parameters():
            p.requires_grad_(False)
        model.train(was_training)
    return log


def _reply_loss(forced, renderer, is_number: torch.Tensor, number_weight: float) -> torch.Tensor:
    """Weighted cross-entropy on the round's reply: its words, the silence marker and `<|im_end|>`
    (the tokens SFT labels and weighs, `data.sample.label_mask` and `loss_weights`)."""
    target = forced.ids[1:]
    selected = label_mask(forced.spans, renderer)[1:]
    ce = F.cross_entropy(forced.logits[:-1][selected].float(), target[selected], reduction="none")
    weights = loss_weights(selected, is_number[target], number_weight)[selected]
    return (ce * weights).sum() / weights.sum()


def _save(directory: Path, params, optimizer, log: ReplayLog) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in params.items()}, directory / "trainable.safetensors")
    torch.save(optimizer.state_dict(), directory / "optimizer.pt")
    (directory / "state.json").write_text(json.dumps(asdict(log), indent=1))


def _resume(directory: Path, params, optimizer) -> ReplayLog:
    saved = load_file(directory / "trainable.safetensors")
    if set(saved) != set(params):
        raise StreamvlmError(f"{directory}: the checkpoint trains other parameters than this run")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(saved[name])
    optimizer.load_state_dict(torch.load(directory / "optimizer.pt", weights_only=False))
    return ReplayLog(**json.loads((directory / "state.json").read_text()))
