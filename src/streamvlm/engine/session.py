"""StreamingSession: the per-second loop evict -> prefill -> generate -> emit.

    session = StreamingSession(load_model("model_dir"), StreamConfig(greedy=True))
    for line in session.run(open_source("match.mp4")):
        print(line.start, line.text)

The session owns the layout (what is retained, at which positions), the K/V cache (the same rows,
as a transformers `Cache`) and the policy that edits them. It knows nothing about files or HTTP:
frames come in as arrays, commentary goes out as `Commentary` objects.
"""

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import psutil
import torch

from ..cache import Kind, Layout, StreamingKVCache, make_policy
from ..cache.static import StaticKVCache, rounds_kept, static_capacity
from ..config import StreamConfig
from ..errors import StreamvlmError
from ..models.load import LoadedModel
from .decode import Sampler, banned_token_mask
from .forward import CompiledDecode, feed
from .prompt import Renderer, query_turn


@dataclass
class StepStats:
    t: float  # stream time of the second, seconds
    step_ms: float  # wall time of the whole step
    evict_ms: float  # eviction, moves, re-rotation and position bookkeeping
    prefill_ms: float  # vision encoding + prefill of the round
    decode_ms: float  # token generation
    new_tokens: int  # tokens generated this second (the closing <|im_end|> included)
    cache_tokens: int  # rows in the K/V cache after the step
    max_position: int  # largest position id held in the cache
    kv_bytes: int  # bytes of retained keys + values
    rss_mb: float  # process resident memory
    peak_device_mb: float | None = None  # peak accelerator memory (CUDA only)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Commentary:
    start: float
    end: float
    text: str  # empty for silence
    stats: StepStats

    def to_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "text": self.text}


class StreamingSession:
    def __init__(self, loaded: LoadedModel, config: StreamConfig | None = None):
        self.loaded = loaded
        self.config = config = config or StreamConfig()
        config.validate()
        self.model, self.processor, self.family = loaded.model, loaded.processor, loaded.family
        self.device = next(self.model.parameters()).device
        self.renderer = Renderer(loaded.tokenizer, config.system_prompt, query_turn(loaded))
        self.policy = make_policy(config.policy, config, config.reset_every)
        self.layout = Layout(contiguous=config.positions == "contiguous")
        self.cache = StreamingKVCache(self.family.inv_freq(self.model))
        self.decoder: CompiledDecode | None = None  # config.compile: the fixed-shape one-token step
        if config.compile:
            rounds_kept(self.policy)  # a policy with no bound (full) is refused here, before any frame
            capacity = lambda: static_capacity(self.policy, self.layout, config.max_new_tokens)  # noqa: E731
            self.cache = StaticKVCache(self.family.inv_freq(self.model), capacity)
            self.decoder = CompiledDecode(self.model, self.cache)
        vocab_size = self.model.config.text_config.vocab_size
        # the checkpoint's stop tokens end the turn as <|im_end|>; with `ignore_eos` (benchmarks) none is
        # ever chosen: every reply has max_new_tokens
        stops = () if config.ignore_eos else loaded.stop_ids
        self.sampler = Sampler(
            banned_token_mask(loaded.tokenizer, vocab_size, allowed=stops),
            greedy=config.greedy,
            temperature=config.temperature,
            repetition_penalty=config.repetition_penalty,
            seed=config.seed,
            top_k=config.top_k,
            top_p=config.top_p,
            stops=stops,
            end=self.renderer.im_end,
        )
        self.vocab_size = vocab_size
        self.round = 0
        self.frame_size: tuple[int, int] | None = None  # resize target, fixed by the first frames
        self.pixels: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # round -> (pixels, grid) retained
        #: round -> its vision tower output, encoded ahead (`step(..., ahead=)`), until it is fed
        self.encoded: dict[int, tuple[torch.Tensor, object]] = {}
        self.ahead: tuple | None = None  # (frames, pixels, grid, embeddings, event) of the next second
        self.side_stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self.evictions = 0  # steps at which the cache lost, moved or re-positioned rows
        #: Called with (evictions so far, tokens in the cache, logits) for every logits vector of the
        #: stream the session computes (not a question's): tests compare them with a full forward.
        self.on_logits: Callable[[int, int, torch.Tensor], None] | None = None
        self.layout.extend(self.renderer.prefix(config.query, config.previous_text))

    # -- the loop ---------------------------------------------------------------------------
    def run(self, source: Iterable) -> Iterator[Commentary]:
        """Step through a source of chunks (anything yielding objects with start, end, frames)."""
        for chunk in source:
            yield self.step(chunk.frames, chunk.start, chunk.end)

    @torch.inference_mode()
    def step(
        self,
        frames: np.ndarray,
        start: float | None = None,
        end: float | None = None,
        reply: str | None = None,
        ahead: np.ndarray | None = None,
    ) -> Commentary:
        """Watch one second of frames (fps, H, W, 3) uint8 and return its commentary.

        With `ahead` (the next second's frames, when they are already at hand, e.g. from a file), their
        vision encoding starts once this second's turn is added: on a GPU on a side CUDA stream, so it
        runs while this second prefills and decodes; the next `step` with those frames uses it.

        With `reply`, nothing is generated: the given text becomes this second's reply (teacher
        forcing, e.g. to replay ground truth or to check that training renders the same tokens).
        """
        t_step = self._now()
        index = self.round
        start = float(index) if start is None else float(start)
        end = start + 1.0 if end is None else float(end)

        # 1. evict: retire what the policy no longer keeps, re-index positions, re-rotate keys
        self._evict(index)
        t_prefill = self._now()

        # 2. prefill: this second's user turn (and anything not yet in the cache)
        self._add_round(frames, index, start, end)
        if ahead is not None:
            self._encode_ahead(ahead)
        logits = self._feed()
        t_decode = self._now()

        # 3. generate this second's reply
        if reply is None:
            generated = self._generate(logits, index)
            n_content = self.renderer.content_length(generated)
            self._close_reply(index, generated, n_content)
            text = self.renderer.decode(generated[:n_content]).strip()
        else:
            generated, text = [], " ".join(reply.split())
            self.layout.extend(self.renderer.reply(index, text))  # fed with the next prefill
        t_done = self._now()

        self.round += 1
        stats = StepStats(
            t=start,
            step_ms=1000 * (t_done - t_step),
            evict_ms=1000 * (t_prefill - t_step),
            prefill_ms=1000 * (t_decode - t_prefill),
            decode_ms=1000 * (t_done - t_decode),
            new_tokens=len(generated),
            cache_tokens=self.cache.rows,
            max_position=self.max_position(),
            kv_bytes=self.cache.kv_bytes(),
            rss_mb=psutil.Process().memory_info().rss / 2**20,
            peak_device_mb=torch.cuda.max_memory_allocated() / 2**20 if self.device.type == "cuda" else None,
        )
        return Commentary(start, end, text, stats)

    # -- the round API: what `step` does, for callers that drive a round themselves ---------
    def begin_round(
        self, frames: np.ndarray, start: float | None = None, end: float | None = None
    ) -> tuple[int, float, float]:
        """Start the next round: evict what the policy no longer keeps, then add the second's user turn
        and assistant header (its frames ready for the next `feed`). Returns (round, start, end). Add
        the reply to `layout` (e.g. `renderer.reply(round, text)`), `feed`, then `end_round()`.
        Teacher forcing for training is built on this (`streamvlm.train.forcing`)."""
        index = self.round
        start = float(index) if start is None else float(start)
        end = start + 1.0 if end is None else float(end)
        self._evict(index)
        self._add_round(frames, index, start, end)
        return index, start, end

    def feed(self, all_logits: bool = False) -> torch.Tensor:
        """Run the model over every layout token not yet in the cache: the last position's logits, or
        with `all_logits` every new position's, (n, vocab)."""
        return self._feed(all_logits)

    def end_round(self) -> None:
        self.round += 1

    @torch.inference_mode()
    def ask_choice(self, question: str, choices: Sequence[str]) -> torch.Tensor:
        """Ask `question` now, as a text-only user turn, and return the logits (len(choices),) of the
        first token of each choice label (e.g. "A", "B"... or "Yes", "No") as the answer's first token.

        The stream is left exactly as it was: the question turn is taken out of the layout and its
        rows out of the cache, so the following seconds run as if nothing had been asked.
        """
        ids = self.choice_token_ids(choices)
        snapshot, cache_rows = self.layout.snapshot(), self.cache.rows
        on_logits, self.on_logits = self.on_logits, None  # the question's logits are no part of the stream
        try:
            self.layout.extend(self.renderer.question(self.round, question))
            logits = self._feed()  # also feeds the end of the last reply, still pending
        finally:
            self.on_logits = on_logits
            self.layout.restore(snapshot)
            self.cache.reindex(torch.arange(cache_rows), torch.zeros(cache_rows, dtype=torch.long))
        return logits[ids].float().cpu()

    def choice_token_ids(self, choices: Sequence[str]) -> list[int]:
        """The first token of each choice label; labels whose first tokens coincide cannot be told apart."""
        ids = [(self.renderer.encode(c) or [-1])[0] for c in choices]
        if -1 in ids or len(set(ids)) != len(ids):
            raise StreamvlmError(f"choice labels {list(choices)} do not start with distinct tokens")
        return ids

    def max_position(self) -> int:
        """Largest position id among the tokens in the cache."""
        fed = [s.pos[:, : s.fed] for s in self.layout.spans if s.fed]
        return int(torch.cat(fed, dim=1).max()) if fed else -1

    # -- steps ------------------------------------------------------------------------------
    def _evict(self, index: int) -> None:
        last = self.layout.spans[-1]
        if last.fed < last.n and self.policy.moves_reply_of(last.round, index):
            self._feed()  # commentary about to move must be in the cache first
        rows_before = self.cache.rows
        self.policy.retire(self.layout, index)
        src, delta = self.layout.commit()  # nothing fed after recompute's retire: the cache empties
        if src.numel() != rows_before or bool((src != torch.arange(src.numel())).any() or delta.any()):
            self.evictions += 1
        self.cache.reindex(src, delta)
        kept = {s.round for s in self.layout.spans if s.kind == Kind.VISION}
        self.pixels = {r: v for r, v in self.pixels.items() if r in kept or r == index}

    def _add_round(self, frames: np.ndarray, index: int, start: float, end: float) -> None:
        """Append a second's user turn and assistant header, its frames ready for the next feed."""
        frames = np.asarray(frames)
        if self.frame_size is None:
            self.frame_size = self.processor.target_size(frames.shape[1], frames.shape[2])
        ahead, self.ahead = self.ahead, None
        if ahead is not None and (ahead[0] is frames or np.array_equal(ahead[0], frames)):
            _, pixel_values, grid, embeddings, done = ahead
            self.encoded[index] = (embeddings, done)
        else:
            pixel_values, grid = self.processor(frames, size=self.frame_size)
        offsets = self.family.vision_offsets(self.model.config, grid, self.config.fps)
        self.pixels[index] = (pixel_values, grid)
        query = self.config.query if index == 0 else None  # (where the renderer puts it)
        self.layout.extend(self.renderer.round(index, start, end, offsets, query))

    def _encode_ahead(self, frames: np.ndarray) -> None:
        """The vision tower's output for the next second's `frames`, started now (a side CUDA stream on
        a GPU: it overlaps this second's prefill and decoding; on a CPU it simply runs now)."""
        frames = np.asarray(frames)
        pixel_values, grid = self.processor(frames, size=self.frame_size)
        weight = next(self.model.parameters())
        on_side = self.side_stream is not None
        with torch.cuda.stream(self.side_stream) if on_side else contextlib.nullcontext():
            pixels = pixel_values.to(weight.device, weight.dtype, non_blocking=True)
            out = self.model.get_video_features(pixels, grid[None].to(weight.device), return_dict=True)
            embeddings = torch.cat(out.pooler_output)
            done = self.side_stream.record_event() if on_side else None
        self.ahead = (frames, pixel_values, grid, embeddings, done)

    def _embeddings_of(self, spans) -> list[torch.Tensor] | None:
        """The encoded-ahead vision output of every span in `spans`, or None unless all have one."""
        if not spans or any(span.round not in self.encoded for span in spans):
            return None
        out = []
        for span in spans:
            embeddings, done = self.encoded.pop(span.round)
            if done is not None:  # the side stream's work, before the main stream reads it
                torch.cuda.current_stream(self.device).wait_event(done)
                embeddings.record_stream(torch.cuda.current_stream(self.device))
            out.append(embeddings)
        return out

    def _feed(self, all_logits: bool = False) -> torch.Tensor:
        """Run the model over every token not yet in the cache; return the last position's logits
        (`all_logits`: every new position's, (n, vocab))."""
        pixels_of = lambda spans: [self.pixels[span.round] for span in spans]  # noqa: E731
        logits = feed(self.model, self.cache, self.layout, pixels_of, all_logits, self._embeddings_of)
        self.encoded.clear()  # what was encoded ahead went in now, or (recompute) the pixels did
        if all_logits:
            return logits
        if self.on_logits is not None:
            self.on_logits(self.evictions, self.layout.fed_rows, logits)
        return logits

    def _generate(self, logits: torch.Tensor, index: int) -> list[int]:
        seen = None
        if self.sampler.repetition_penalty != 1.0:
            seen = torch.zeros(self.vocab_size, dtype=torch.bool, device=self.device)
            seen[self.layout.token_ids()] = True
        generated: list[int] = []
        for k in range(self.config.max_new_tokens):
            if self.decoder is None:
                token = self.sampler(logits, seen)
                if seen is not None:
                    seen[token] = True
            else:  # chosen on the device; reading it is the one host sync per token (the stop check)
                chosen = self.sampler.pick(logits, seen)
                token = int(chosen)
            generated.append(token)
            if token == self.renderer.im_end or k == self.config.max_new_tokens - 1:
                break
            self.layout.append_tokens(Kind.REPLY, index, [token])
            logits = self._feed() if self.decoder is None else self._step(chosen)
        return generated

    def _step(self, token: torch.Tensor) -> torch.Tensor:
        """The compiled one-token step (`config.compile`): `token` was just appended to the layout."""
        logits = self.decoder(self.layout, lambda spans: [self.pixels[s.round] for s in spans], token)
        if self.on_logits is not None:
            self.on_logits(self.evictions, self.layout.fed_rows, logits)
        return logits

    def _close_reply(self, index: int, generated: list[int], n_content: int) -> None:
        """Give the reply its final shape: content (REPLY) then silence marker + end of turn.

        All generated tokens but the last are in the cache already; the last one and the closing
        tokens are fed with the next second's prefill. A reply cut at the token limit gets a closing
        `<|im_end|>` so the turn structure stays well formed.
        """
        fed = len(generated) - 1
        if n_content < fed:
            self.layout.split_last(n_content, Kind.REPLY_CLOSE)  # the last span is the reply so far
        last = generated[-1]
        close = self.renderer.turn_close()
        if n_content == len(generated):
            self.layout.append_tokens(Kind.REPLY, index, [last])
        elif last != self.renderer.im_end:
            close = [last, *close]
        self.layout.append_tokens(Kind.REPLY_CLOSE, index, close)

    @staticmethod
    def _now() -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()
