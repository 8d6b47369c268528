"""The one forward seam: the layout's tokens not yet in the cache -> the model -> logits.

`StreamingSession` (each second's prefill and every decoded token, teacher forcing, multiple-choice
questions) and `chat` both feed the model through `feed`, so positions, vision inputs and the
cache are handled in one place.
"""

from collections.abc import Callable, Sequence

import torch

from ..cache import Layout, StreamingKVCache
from ..cache.layout import Span

#: (pixel values, grid) of each unfed vision span, in order, from the spans themselves.
PixelsOf = Callable[[Sequence[Span]], Sequence[tuple[torch.Tensor, torch.Tensor]]]


def feed(model, cache: StreamingKVCache, layout: Layout, pixels_of: PixelsOf, all_logits: bool = False):
    """Run `model` over every token of `layout` not yet in `cache` (at its layout positions, the
    unfed vision spans' pixels from `pixels_of`) and mark them fed. Returns the last position's
    logits, (vocab,), or with `all_logits` every new position's, (n, vocab)."""
    weight = next(model.parameters())
    ids, positions, vision = layout.unfed()
    kwargs = {}
    if vision:
        pixels = pixels_of(vision)
        kwargs["pixel_values_videos"] = torch.cat([p for p, _ in pixels]).to(weight.device, weight.dtype)
        kwargs["video_grid_thw"] = torch.stack([g for _, g in pixels]).to(weight.device)
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
