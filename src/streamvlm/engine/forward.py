"""The one forward seam: the layout's tokens not yet in the cache -> the model -> logits.

`StreamingSession` (each second's prefill and every decoded token, teacher forcing, multiple-choice
questions) and `chat` both feed the model through `feed`, so positions, vision inputs and the
cache are handled in one place.
"""

from collections.abc import Callable, Sequence

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_outputs import BaseModelOutputWithPooling

from ..cache import Layout, StreamingKVCache
from ..cache.layout import Span

#: (pixel values, grid) of each unfed vision span, in order, from the spans themselves.
PixelsOf = Callable[[Sequence[Span]], Sequence[tuple[torch.Tensor, torch.Tensor]]]


def feed(
    model,
    cache: StreamingKVCache,
    layout: Layout,
    pixels_of: PixelsOf,
    all_logits: bool = False,
    embeddings_of: Callable[[Sequence[Span]], Sequence[torch.Tensor] | None] | None = None,
):
    """Run `model` over every token of `layout` not yet in `cache` (at its layout positions, the
    unfed vision spans' pixels from `pixels_of`, or their vision tower output already computed from
    `embeddings_of` when it has every span's) and mark them fed. Returns the last position's logits,
    (vocab,), or with `all_logits` every new position's, (n, vocab)."""
    weight = next(model.parameters())
    ids, positions, vision = layout.unfed()
    kwargs = {}
    if vision:
        pixels = pixels_of(vision)
        kwargs["video_grid_thw"] = torch.stack([g for _, g in pixels]).to(weight.device)
        embeddings = embeddings_of(vision) if embeddings_of is not None else None
        if embeddings is not None:  # the tower's output, handed over as transformers takes it
            pooled = (torch.cat(list(embeddings)),)
            kwargs["mm_encoder_outputs"] = {"video": BaseModelOutputWithPooling(pooler_output=pooled)}
        else:
            kwargs["pixel_values_videos"] = torch.cat([p for p, _ in pixels]).to(weight.device, weight.dtype)
    out = model(
        input_ids=ids[None].to(weight.device),
        position_ids=positions[:, None, :].to(weight.device),
        cache=cache,
        use_cache=True,
        logits_to_keep=0 if all_logits else 1,
        **kwargs,
    )
    layout.mark_fed()
    return out.logits[0] if all_logits else out.logits[0, -1]


#: The attention the compiled step runs (registered through transformers' AttentionInterface).
DECODE_ATTENTION = "streamvlm_sdpa"


def decode_attention(module, query, key, value, attention_mask, **kwargs):
    """transformers' SDPA attention, but a single query with grouped K/V heads inside torch.compile
    attends on the K/V heads as they are: the query's heads of a group become that group's rows, as
    transformers does for one query outside compile (its `pack_gqa`). Inside compile transformers
    would expand K and V to every query head (`repeat_kv`): over a whole static cache, a copy of the
    cache per decoded token. Everything else (prefill, eager decode) is `sdpa_attention_forward` as is."""
    groups = getattr(module, "num_key_value_groups", 1)
    if query.shape[2] == 1 and groups > 1 and attention_mask is not None and torch.compiler.is_compiling():
        b, h, _, d = query.shape
        out = torch.nn.functional.scaled_dot_product_attention(
            query.reshape(b, h // groups, groups, d),
            key,
            value,
            attn_mask=attention_mask,
            scale=kwargs.get("scaling"),
        )
        return out.reshape(b, h, 1, d).transpose(1, 2).contiguous(), None
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(DECODE_ATTENTION, decode_attention)
AttentionMaskInterface.register(DECODE_ATTENTION, sdpa_mask)


class CompiledDecode:
    """The one-token decode step at fixed shapes, compiled (issue 28; `StreamConfig.compile`).

    It reads and writes a `StaticKVCache`: the token's K/V go to row `step_index`, attention reads
    every buffer row through the cache's `step_mask()`, handed to the model as its prepared mask
    (`attention_mask={"full_attention": mask}`, the form `generate` passes), and positions come
    explicitly from the layout, so the traced step has the same shapes for every token of the stream:
    one compile, recompiled only if the cache is regrown. Prefill stays eager (`feed`).

    `torch.compile` runs with `mode="reduce-overhead"` (CUDA graphs) on CUDA and with inductor's
    default mode elsewhere (on a CPU: C++ kernels, no graphs).
    """

    def __init__(self, model, cache):
        self.model, self.cache = model, cache
        self.device = next(model.parameters()).device
        self.cuda = self.device.type == "cuda"
        if model.config.text_config._attn_implementation == "sdpa":  # (identical outside the step)
            model.set_attn_implementation({"text_config": DECODE_ATTENTION})
        self.step = torch.compile(self._forward, mode="reduce-overhead" if self.cuda else None, dynamic=False)
        self.ids = torch.zeros(1, 1, dtype=torch.long, device=self.device)
        self.positions = torch.zeros(3, 1, 1, dtype=torch.long, device=self.device)

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        out = self.model(
            input_ids=ids,
            position_ids=positions,
            attention_mask={"full_attention": self.cache.step_mask()},
            cache=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[0, -1]

    def __call__(self, layout: Layout, pixels_of: PixelsOf, token: torch.Tensor | None = None):
        """Feed the layout's one unfed text token (`token`: its id, already on the device, if at hand)
        and return its logits (vocab,) tensor; anything else (several tokens, vision) goes through `feed`."""
        ids, positions, vision = layout.unfed()
        if ids.numel() != 1 or vision:
            return feed(self.model, self.cache, layout, pixels_of)
        self.ids.copy_(token.view(1, 1) if token is not None else ids.view(1, 1))
        self.positions.copy_(positions.view(3, 1, 1))
        self.cache.begin_step()
        ok = False
        try:
            if self.cuda:
                torch.compiler.cudagraph_mark_step_begin()
            logits = self.step(self.ids, self.positions)
            ok = True
        finally:
            self.cache.end_step(ok)
        layout.mark_fed()
        return logits.clone() if self.cuda else logits  # (a CUDA graph's output is overwritten next replay)
