"""Vision warm-up for the shipped model: teach the vision tower to see the world's events.

Plain SFT on commentary learns the rhythm of the text and ignores the picture (world notes). A
short warm-up fixes that: the vision tower and merger are trained, with a throw-away linear head on
each second's merged vision tokens, to classify the second (silent, serve/return/point by team)
from the frames decoded from the training videos. The head is discarded; SFT then starts from
vision features that already separate the events.
"""

import json
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from streamvlm.sources import VideoFileSource
from streamvlm.train.precision import cpu_autocast

CLASSES = ("silent", "serve-red", "serve-blue", "return-red", "return-blue", "point-red", "point-blue")


def second_label(row: dict) -> int:
    """The class of a second: its most important event (point > serve > return), else silent."""
    events = row["events"]
    for kind in ("point", "serve", "return"):
        for e in events:
            if e["kind"] == kind:
                return CLASSES.index(f"{kind}-{e['team']}")
    return 0


def load_seconds(videos: list[tuple[Path, Path]], processor, fps: int = 2, limit: int | None = None):
    """(pixel_values, grid, label) for every second of the videos (decoded as training decodes them)."""
    items = []
    for video, truth in videos:
        rows = [json.loads(line) for line in Path(truth).read_text().splitlines()]
        size = None
        for chunk, row in zip(VideoFileSource(video, fps=fps), rows, strict=False):
            size = size or processor.target_size(chunk.frames.shape[1], chunk.frames.shape[2])
            pixels, grid = processor(chunk.frames, size=size)
            items.append((pixels, grid, second_label(row)))
            if limit and len(items) >= limit:
                return items
    return items


def vision_warmup(
    model,
    items,
    seconds: float,
    batch: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    held_out=None,
    decay: bool = False,
    log=print,
) -> dict:
    """Train vision tower + merger with a linear head for `seconds` of wall time (lr 2e-3 does not
    converge here; 1e-3 does; `decay`: the lr falls linearly to 0 over that time, not constant);
    returns training accuracy and, given `held_out` items, held-out accuracy."""
    rng = random.Random(seed)
    visual = model.model.visual
    tokens = items[0][1].prod().item() // visual.spatial_merge_size**2
    width = model.config.vision_config.out_hidden_size
    head = torch.nn.Linear(tokens * width, len(CLASSES))
    params = [p for p in visual.parameters()] + list(head.parameters())
    for p in visual.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    counts = torch.bincount(torch.tensor([label for *_, label in items]), minlength=len(CLASSES)).float()
    class_weight = (counts.sum() / counts.clamp_min(1)).sqrt()  # rare events (points) count more
    batch = min(batch, len(items))  # a small dataset: every second in each step
    visual.train()
    started, step, recent = time.time(), 0, []
    while (elapsed := time.time() - started) < seconds:
        if decay:
            for group in optimizer.param_groups:
                group["lr"] = lr * (1 - elapsed / seconds)
        sample = rng.sample(items, batch)
        pixels = torch.cat([p for p, _, _ in sample])
        grids = torch.stack([g for _, g, _ in sample])
        labels = torch.tensor([y for *_, y in sample])
        with cpu_autocast():
            features = visual(pixels, grid_thw=grids).pooler_output  # (batch * tokens, width)
            logits = head(features.float().reshape(batch, tokens * width))
        loss = F.cross_entropy(logits.float(), labels, weight=class_weight)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        recent = (recent + [(logits.argmax(-1) == labels).float().mean().item()])[-20:]
        step += 1
        if step % 25 == 0:
            accuracy = sum(recent) / len(recent)
            log(f"vision warm-up step {step}: loss {loss.item():.3f}, accuracy {accuracy:.3f}")
    visual.eval()
    result = {
        "steps": step,
        "accuracy_last_20": sum(recent) / max(len(recent), 1),
        "wall_s": time.time() - started,
        "last_lr": optimizer.param_groups[0]["lr"],
    }
    if held_out:
        with torch.no_grad(), cpu_autocast():
            correct = 0
            for i in range(0, len(held_out), 256):
                part = held_out[i : i + 256]
                pixels = torch.cat([p for p, _, _ in part])
                grids = torch.stack([g for _, g, _ in part])
                features = visual(pixels, grid_thw=grids).pooler_output.float().reshape(len(part), -1)
                correct += (head(features).argmax(-1) == torch.tensor([y for *_, y in part])).sum().item()
        result["held_out_accuracy"] = correct / len(held_out)
    return result
