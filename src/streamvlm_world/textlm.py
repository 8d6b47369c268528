"""Text warm-up for the shipped model: a plain language model over the world's commentary.

Carrying the score forward ("Blue scores! Red three Blue four" after "... Red three Blue three") is
a skill of the text alone. Inside the chat layout the previous score sits hundreds of tokens back,
behind time stamps and turn markers, and a tiny model barely learns it there; over commentary
written as the text memory holds it (words joined by spaces) it learns it in minutes (world notes).
The memory then hands that same text to the model at inference.
"""

import random
import time

import torch
import torch.nn.functional as F

from streamvlm.data.sample import number_tokens
from streamvlm.train.precision import cpu_autocast

from .config import WorldConfig
from .stream import World


def commentary_ids(tokenizer, config: WorldConfig, seconds: int) -> torch.Tensor:
    """A match's commentary as the text memory holds it: the opening text, then " words" per second."""
    world = World(config)
    text = world.opening_text + "".join(" " + row["text"] for row in world.rows(seconds) if row["text"])
    return torch.tensor(tokenizer.encode(text, add_special_tokens=False))


def number_accuracy(model, ids: torch.Tensor, numbers: torch.Tensor, length: int = 128) -> float:
    """Teacher-forced accuracy on the number tokens of `ids` (cut into `length`-token rows)."""
    rows = ids[: len(ids) // length * length].view(-1, length)
    with torch.no_grad():
        logits = model(input_ids=rows).logits[:, :-1]
    target = rows[:, 1:]
    mask = numbers[target]
    return (logits.argmax(-1)[mask] == target[mask]).float().mean().item()


def text_warmup(
    model,
    tokenizer,
    train_seeds: list[int],
    held_out_seed: int,
    seconds: float,
    world=WorldConfig,
    length: int = 128,
    batch: int = 32,
    lr: float = 2e-3,
    number_weight: float = 10.0,
    seed: int = 0,
    log=print,
) -> dict:
    """Train the language model (text stack) on commentary streams for `seconds` of wall time.
    `world(seed)` gives the world configuration of each stream."""
    train = torch.cat([commentary_ids(tokenizer, world(s), 3000) for s in train_seeds])
    held = commentary_ids(tokenizer, world(held_out_seed), 1200)
    numbers = number_tokens(tokenizer)
    params = [p for n, p in model.named_parameters() if "visual" not in n]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    rng = random.Random(seed)
    model.train()
    started, step = time.time(), 0
    while time.time() - started < seconds:
        starts = [rng.randrange(0, len(train) - length - 1) for _ in range(batch)]
        x = torch.stack([train[s : s + length] for s in starts])
        with cpu_autocast():
            logits = model(input_ids=x).logits[:, :-1].float()
        target = x[:, 1:]
        weight = torch.where(numbers[target], number_weight, 1.0)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none")
        loss = (loss * weight.reshape(-1)).sum() / weight.sum()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        step += 1
        if step % 200 == 0:
            log(f"text warm-up step {step}: loss {loss.item():.3f}")
    model.eval()
    return {
        "steps": step,
        "wall_s": time.time() - started,
        "tokens": len(train),
        "held_out_number_accuracy": number_accuracy(model, held, numbers, length),
    }
