"""Choosing the next token: greedy or sampled, repetition penalty, structural tokens never chosen."""

import torch


def banned_token_mask(tokenizer, vocab_size: int, allowed: tuple[int, ...]) -> torch.Tensor:
    """True for ids that must never be generated: special tokens (vision, pad, turn openers...)
    except `allowed`, and ids past the tokenizer (checkpoints pad their vocabulary)."""
    banned = torch.zeros(vocab_size, dtype=torch.bool)
    special = set(tokenizer.all_special_ids)
    special |= {i for i, tok in tokenizer.added_tokens_decoder.items() if tok.special}
    banned[[i for i in special if i < vocab_size]] = True
    banned[min(len(tokenizer), vocab_size) :] = True
    banned[list(allowed)] = False
    return banned


class Sampler:
    def __init__(
        self,
        banned: torch.Tensor,
        greedy: bool = False,
        temperature: float = 0.9,
        repetition_penalty: float = 1.0,
        seed: int = 42,
    ):
        self.banned = banned
        self.greedy = greedy
        self.temperature = temperature
        self.repetition_penalty = repetition_penalty
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, logits: torch.Tensor, seen: torch.Tensor | None = None) -> int:
        """Pick a token from `logits` (V,); `seen` (V,) bool marks tokens in the context."""
        logits = logits.detach().float().cpu().clone()
        if self.repetition_penalty != 1.0 and seen is not None:
            # As transformers' RepetitionPenaltyLogitsProcessor: shrink the score of every seen token.
            s = logits[seen]
            logits[seen] = torch.where(s > 0, s / self.repetition_penalty, s * self.repetition_penalty)
        logits[self.banned] = float("-inf")
        if self.greedy:
            return int(logits.argmax())
        probs = torch.softmax(logits / self.temperature, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.generator))
