"""Choosing the next token: greedy or sampled (temperature, top-k, top-p), repetition penalty,
structural tokens never chosen, any stop token ending the turn as `<|im_end|>`."""

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
    """`top_k` 0 and `top_p` 1.0 keep the whole vocabulary. A token in `stops` is returned as
    `end`: whichever stop the model picks, the turn ends (and is recorded) as `end`."""

    def __init__(
        self,
        banned: torch.Tensor,
        greedy: bool = False,
        temperature: float = 0.9,
        repetition_penalty: float = 1.0,
        seed: int = 42,
        top_k: int = 0,
        top_p: float = 1.0,
        stops: tuple[int, ...] = (),
        end: int | None = None,
    ):
        self.banned = banned
        self.greedy = greedy
        self.temperature = temperature
        self.repetition_penalty = repetition_penalty
        self.top_k = top_k
        self.top_p = top_p
        self.stops = frozenset(stops)
        self.end = end
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)  # another device gets its own, same seed

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Generator]:
        """The ban mask and the random generator on `device` (made once): sampling stays where the
        logits are, and only the chosen id comes back to the CPU."""
        if self.banned.device != device:
            self.banned = self.banned.to(device)
        if self.generator.device != device:
            self.generator = torch.Generator(device=device).manual_seed(self.seed)
        return self.banned, self.generator

    def scores(self, logits: torch.Tensor, seen: torch.Tensor | None = None) -> torch.Tensor:
        """Logits after the repetition penalty and the ban (float32, on the logits' device; fixed
        shapes, no boolean indexing: nothing waits for the device)."""
        scores = logits.detach().float()
        if self.repetition_penalty != 1.0 and seen is not None:
            # As transformers' RepetitionPenaltyLogitsProcessor: shrink the score of every seen token.
            p = self.repetition_penalty
            scores = torch.where(seen, torch.where(scores > 0, scores / p, scores * p), scores)
        return scores.masked_fill(self._on(logits.device)[0], float("-inf"))

    def candidates(self, logits: torch.Tensor, seen: torch.Tensor | None = None):
        """(ids, probabilities) of the tokens sampling may pick: temperature, then top-k, then top-p
        (transformers' order). Only the top-k survivors are sorted: cheap at a 152k vocabulary."""
        scores = self.scores(logits, seen) / self.temperature
        ids = None
        if 0 < self.top_k < scores.numel():
            kth = torch.topk(scores, self.top_k).values[-1]
            ids = torch.nonzero(scores >= kth).squeeze(1)  # ties with the k-th stay, as in transformers
            scores = scores[ids]
        probs = torch.softmax(scores, dim=-1)
        if self.top_p < 1.0:
            probs, order = torch.sort(probs, descending=True)
            ids = order if ids is None else ids[order]
            keep = torch.cumsum(probs, 0) - probs < self.top_p  # the mass before each token
            keep[0] = True  # the likeliest token always stays
            probs, ids = probs[keep], ids[keep]
            probs = probs / probs.sum()
        return (torch.arange(probs.numel(), device=probs.device) if ids is None else ids), probs

    def probabilities(self, logits: torch.Tensor, seen: torch.Tensor | None = None) -> torch.Tensor:
        """The sampling distribution over the whole vocabulary."""
        ids, probs = self.candidates(logits, seen)
        return torch.zeros(logits.numel(), device=probs.device).index_put_((ids,), probs)

    def pick(self, logits: torch.Tensor, seen: torch.Tensor | None = None) -> torch.Tensor:
        """Like `__call__`, but every step stays on the logits' device at fixed shapes (no boolean
        indexing, no `nonzero`: nothing waits for the device) and the chosen id comes back as a 0-d
        tensor there, a stop already mapped to `end`; `seen` gets the id marked in place. Reading the
        id (`int(...)`, the stop check) is the caller's one host sync per token.

        Greedy picks exactly what `__call__` picks (the same scores, bit for bit). Sampling draws
        from the same distribution; with top-k alone (top-p 1) from the same survivors in the same
        order, so with the same seed it picks what `__call__` picks. With top-p < 1 the tokens past
        the mass keep their places with probability 0 (a fixed shape) instead of being cut, so the
        random stream is no longer `__call__`'s."""
        generator = self._on(logits.device)[1]
        scores = self.scores(logits, seen)
        if self.greedy:
            token = scores.argmax()
        else:
            scores = scores / self.temperature
            ids = None
            if 0 < self.top_k < scores.numel():
                # exactly k survivors, in id order as `candidates` lists them (its ties with the k-th
                # beyond k are not kept: the one difference, and only on exact ties)
                ids = torch.topk(scores, self.top_k).indices.sort().values
                scores = scores[ids]
            probs = torch.softmax(scores, dim=-1)
            if self.top_p < 1.0:
                probs, order = torch.sort(probs, descending=True)
                ids = order if ids is None else ids[order]
                keep = torch.cumsum(probs, 0) - probs < self.top_p  # the mass before each token
                keep[0] = True  # the likeliest token always stays
                probs = torch.where(keep, probs, 0.0)  # (not renormalised: multinomial needs no sum 1)
            token = torch.multinomial(probs, 1, generator=generator)[0]
            if ids is not None:
                token = ids[token]
        if self.stops and self.end is not None:
            stops = self._stop_ids(logits.device)
            token = torch.where(torch.isin(token, stops), torch.full_like(token, self.end), token)
        if seen is not None:
            seen.index_fill_(0, token.view(1), True)
        return token

    def _stop_ids(self, device: torch.device) -> torch.Tensor:
        ids = getattr(self, "_stops_on", None)
        if ids is None or ids.device != device:
            ids = self._stops_on = torch.tensor(sorted(self.stops), dtype=torch.long, device=device)
        return ids

    def __call__(self, logits: torch.Tensor, seen: torch.Tensor | None = None) -> int:
        """Pick a token from `logits` (V,); `seen` (V,) bool marks tokens in the context."""
        if self.greedy:
            token = int(self.scores(logits, seen).argmax())
        else:
            ids, probs = self.candidates(logits, seen)
            token = int(ids[torch.multinomial(probs, 1, generator=self._on(probs.device)[1])])
        return self.end if token in self.stops and self.end is not None else token
