"""The K/V store: a `transformers` `Cache` whose rows can be reordered, dropped and re-rotated.

This is the public seam into the model: attention calls `update()` and gets back every retained
row; nothing in transformers is patched. What to keep is decided elsewhere (`layout`, `policy`);
this module only stores rows and applies a plan `reindex(src, delta)`:

    new row j = old row src[j], moved delta[j] positions.

Per layer it holds three buffers: `keys` (at current positions, what attention reads), `keys_orig`
(exactly as the model computed them) and `values`, plus one shared `shift` per row (current position
minus computed position). Moved keys are re-derived from `keys_orig`, so error never accumulates.
Buffers are pre-allocated and grow by doubling; appends and compaction write in place.
"""

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from .rope import rotate_keys


class StreamingLayer(CacheLayerMixin):
    """One attention layer's rows."""

    is_sliding = False
    is_compileable = False
    is_croppable = False

    def __init__(self, **kwargs):
        super().__init__()
        self.length = 0
        self.keys_orig: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        b, h, _, d = key_states.shape
        self.device, self.dtype = key_states.device, key_states.dtype
        self.keys = key_states.new_empty(b, h, 0, d)
        self.keys_orig = key_states.new_empty(b, h, 0, d)
        self.values = value_states.new_empty(b, h, 0, value_states.shape[-1])
        self.is_initialized = True

    def reserve(self, rows: int) -> None:
        """Make room for `rows` rows, doubling the capacity so appends stay amortised O(1)."""
        capacity = self.keys.shape[-2]
        if rows <= capacity:
            return
        capacity = max(rows, 2 * capacity, 64)
        for name in ("keys", "keys_orig", "values"):
            old = getattr(self, name)
            new = old.new_empty(*old.shape[:2], capacity, old.shape[-1])
            new[:, :, : self.length] = old[:, :, : self.length]
            setattr(self, name, new)

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = key_states.shape[-2]
        self.reserve(self.length + n)
        rows = slice(self.length, self.length + n)
        self.keys[:, :, rows] = key_states
        self.keys_orig[:, :, rows] = key_states
        self.values[:, :, rows] = value_states
        self.length += n
        return self.keys[:, :, : self.length], self.values[:, :, : self.length]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        self.length = 0

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("streaming cache rows are removed with reindex(), not crop()")


class StreamingKVCache(Cache):
    """K/V rows for every layer, reindexed and re-rotated by plans from the layout.

    `inv_freq` is the text model's RoPE inverse frequencies (head_dim / 2 values).
    """

    def __init__(self, inv_freq: torch.Tensor, layer_class=StreamingLayer):
        super().__init__(layer_class_to_replicate=layer_class)
        self.inv_freq = inv_freq.detach().to("cpu", torch.float64)
        self.shift = torch.zeros(0, dtype=torch.long)

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        if layer_idx == 0:
            n = key_states.shape[-2]
            self.shift = torch.cat((self.shift, torch.zeros(n, dtype=torch.long)))
        return super().update(key_states, value_states, layer_idx, *args, **kwargs)

    @property
    def rows(self) -> int:
        return self.layers[0].length if self.layers else 0

    def reindex(self, src: torch.Tensor, delta: torch.Tensor) -> None:
        """Keep rows `src` (in that order) and move row j by `delta[j]` positions.

        Rows before the first one that changes (the never-evicted prefix, the untouched head of
        the text memory) are not touched at all: their bytes stay exactly as they were.
        """
        src = src.to(torch.long).cpu()
        delta = delta.to(torch.long).cpu()
        n = src.numel()
        if delta.numel() != n:
            raise ValueError(f"reindex: {n} source rows but {delta.numel()} shifts")
        if n and (int(src.max()) >= self.rows or int(src.min()) < 0):
            raise IndexError(f"reindex: source row out of range (cache holds {self.rows} rows)")
        changed = (src != torch.arange(n)) | (delta != 0)
        first = int(changed.nonzero()[0, 0]) if bool(changed.any()) else n
        new_shift = self.shift[src] + delta
        tail_src = src[first:]
        moved = (delta[first:] != 0).nonzero().squeeze(1)
        for layer in self.layers:
            if first < n:
                index = tail_src.to(layer.device)
                for name in ("keys", "keys_orig", "values"):
                    buf = getattr(layer, name)
                    buf[:, :, first:n] = buf.index_select(2, index)
                if moved.numel():
                    rows = (moved + first).to(layer.device)
                    layer.keys[:, :, rows] = rotate_keys(
                        layer.keys_orig.index_select(2, rows), new_shift[moved + first], self.inv_freq
                    )
            layer.length = n
        self.shift = new_shift

    def reset(self) -> None:
        super().reset()
        self.shift = torch.zeros(0, dtype=torch.long)

    def detach(self) -> None:
        """Cut every row from the autograd graph it was computed in (training on streamed rounds:
        the rows of earlier rounds are then plain data, the way inference reuses them)."""
        for layer in self.layers:
            if layer.is_initialized:
                layer.keys, layer.keys_orig, layer.values = (
                    layer.keys.detach(),
                    layer.keys_orig.detach(),
                    layer.values.detach(),
                )

    def kv_bytes(self) -> int:
        """Bytes of the K/V rows attention reads (keys + values of retained rows, all layers)."""
        total = 0
        for layer in self.layers:
            if layer.is_initialized:
                per_row = layer.keys[:, :, :1].numel() * layer.keys.element_size()
                total += 2 * per_row * layer.length
        return total

    def storage_bytes(self) -> int:
        """Bytes allocated, including `keys_orig` and spare capacity."""
        return sum(
            buf.numel() * buf.element_size()
            for layer in self.layers
            if layer.is_initialized
            for buf in (layer.keys, layer.keys_orig, layer.values)
        )
