"""Independent reference computations for the tests: full forwards and HF's own position rule."""

import torch

from streamvlm.cache import Kind


def record_logits(session) -> list[tuple[int, int, torch.Tensor]]:
    """Every logits vector `session` computes from now on, as (evictions, cached rows, logits)."""
    trace = []

    def record(evictions: int, rows: int, logits: torch.Tensor) -> None:
        trace.append((evictions, rows, logits.float().cpu().clone()))

    session.on_logits = record
    return trace


def retained_vision(session):
    """Pixel values and grids of the vision spans in the cache, in sequence order."""
    rounds = [s.round for s in session.layout.spans if s.kind == Kind.VISION and s.fed]
    if not rounds:
        return None, None
    pixels = torch.cat([session.pixels[r][0] for r in rounds])
    grids = torch.stack([session.pixels[r][1] for r in rounds])
    return pixels, grids


def fed_ids_positions(session):
    spans = [s for s in session.layout.spans if s.fed]
    ids = torch.cat([s.ids[: s.fed] for s in spans])
    pos = torch.cat([s.pos[:, : s.fed] for s in spans], dim=1)
    return ids, pos


def hf_rope_positions(model, ids, grids, fps):
    """Positions from transformers' `get_rope_index` over the given ids and video grids."""
    video = model.config.video_token_id
    mm_types = (ids == video).int() * 2
    n_videos = 0 if grids is None else grids.shape[0]
    second_per_grid = torch.full((n_videos,), model.config.vision_config.temporal_patch_size / fps)
    pos, _ = model.model.get_rope_index(
        ids[None], mm_token_type_ids=mm_types[None], video_grid_thw=grids, second_per_grid_ts=second_per_grid
    )
    return pos[:, 0]


@torch.inference_mode()
def full_forward(model, ids, pixels, grids, positions=None, fps=2, cache=None):
    """Logits of one forward over the whole sequence. Without `positions`, HF computes them."""
    kwargs = {}
    if pixels is not None:
        kwargs.update(pixel_values_videos=pixels, video_grid_thw=grids)
    if positions is None:
        kwargs["position_ids"] = hf_rope_positions(model, ids, grids, fps)[:, None]
    else:
        kwargs["position_ids"] = positions[:, None]
    out = model(input_ids=ids[None], cache=cache, use_cache=cache is not None, **kwargs)
    return out.logits[0]


def default_sigint() -> None:
    """`preexec_fn` for children that tests stop with Ctrl-C: a shell that started the test run in
    the background (`cmd &`) makes SIGINT ignored, children inherit that, and Python then never raises
    KeyboardInterrupt. Restoring the default lets the child install its handler."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
