"""The frozen vision tower's output for every second of the training videos, computed once per run.

With `freeze_vision` the tower never changes during SFT, yet every step would decode its windows'
frames and run the tower on them again (the world recipe: 2,000 steps over 80 videos read each
second ~8 times). `build` decodes each video once (in worker processes; the resize and patchify
are most of the cost) and stores, per whole second, the merged vision tokens the language model
receives (`get_video_features`), under the autocast the trainer uses; training then hands them to
the model as `mm_encoder_outputs`, the input transformers has for precomputed encoder outputs. The
numbers are those the tower would give in the step (a test compares the loss).

On disk (`vision_cache` dir): one safetensors file per video (`embeds`: (seconds, tokens, hidden),
`grid`: (3,) for one second), named by the video's path, size and modification time, and
`features.json` with the fingerprint of the tower, processor, frame rate and dtype they were made
with: another fingerprint deletes the stored files first. Files are written whole (temp + rename), so a
killed build continues where it stopped.
"""

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from ..data.formats import DataError
from ..data.sample import video_pixels

MANIFEST = "features.json"


def fingerprint(visual: torch.nn.Module, processor, fps: int, dtype: torch.dtype | None) -> str:
    """What the stored features depend on: the tower's weights, the processor's settings, the frame
    rate and the autocast dtype (None: none)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(visual.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    digest.update(json.dumps([processor.to_dict(), fps, str(dtype)], sort_keys=True).encode())
    return digest.hexdigest()[:32]


class VisionFeatures:
    """Per-second vision features of the videos under `root` (see the module doc)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def file(self, video: Path) -> Path:
        stat = Path(video).stat()
        key = f"{Path(video).resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        return self.root / f"{hashlib.sha1(key.encode()).hexdigest()[:20]}.safetensors"

    def window(self, video: Path, start: float, seconds: int) -> tuple[torch.Tensor, torch.Tensor]:
        """((seconds, tokens, hidden) features, (3,) grid of one second) from `start` on."""
        if abs(start - round(start)) > 1e-6:
            raise DataError(f"vision features: {video} window starts at {start} s, not a whole second")
        path, first = self.file(video), round(start)
        if not path.is_file():
            raise DataError(f"vision features: none stored for {video} (in {self.root})")
        with safe_open(str(path), framework="pt") as f:
            stored = f.get_slice("embeds")
            if first + seconds > stored.get_shape()[0]:
                raise DataError(
                    f"vision features: {video} has {stored.get_shape()[0]} s, "
                    f"the window asks for {first}-{first + seconds} s"
                )
            return stored[first : first + seconds], f.get_tensor("grid")


def build(
    model,
    processor,
    videos,
    root: Path,
    fps: int,
    dtype: torch.dtype | None,
    progress: bool = True,
    workers: int | None = None,
) -> VisionFeatures:
    """Compute what is missing under `root` for `videos` with the model's tower (frozen, eval mode)
    under autocast to `dtype` (None: none) on the tower's device. `workers` processes decode the
    videos (None: one per core; 0: this process)."""
    visual = model.model.visual
    root = Path(root)
    stamp = fingerprint(visual, processor, fps, dtype)
    manifest = root / MANIFEST
    if root.is_dir() and any(root.iterdir()) and not manifest.is_file():
        raise DataError(f"vision features: {root} is not empty and holds no {MANIFEST}: not ours to fill")
    if manifest.is_file() and json.loads(manifest.read_text()) != {"fingerprint": stamp}:
        for stale in (*root.glob("*.safetensors"), *root.glob("*.tmp")):  # another tower's
            stale.unlink()
    root.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({"fingerprint": stamp}) + "\n")
    features = VisionFeatures(root)
    todo = sorted({Path(v) for v in videos if not features.file(v).is_file()})
    if not todo:
        return features
    workers = min(os.cpu_count() or 1, len(todo)) if workers is None else workers
    decoded = torch.utils.data.DataLoader(
        _Decoded(todo, processor, fps),
        batch_size=None,
        num_workers=workers,
        prefetch_factor=1 if workers else None,
    )
    device = next(visual.parameters()).device
    was_training = visual.training
    visual.eval()
    try:
        for video, pixels, grids in tqdm(
            decoded, desc="vision features", unit="video", total=len(todo), disable=not progress
        ):
            embeds = _tower(model, pixels, grids, dtype, device)
            target = features.file(video)
            tmp = target.with_suffix(".tmp")
            save_file({"embeds": embeds.contiguous(), "grid": grids[0]}, str(tmp))
            tmp.rename(target)
    finally:
        visual.train(was_training)
    return features


class _Decoded(torch.utils.data.Dataset):
    """Per video: (path, (seconds * patches, dim) pixel values, (seconds, 3) grids), every whole second."""

    def __init__(self, videos: list[Path], processor, fps: int):
        self.videos, self.processor, self.fps = videos, processor, fps

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int):
        video = self.videos[index]
        try:
            seconds = [(pixels, grid) for _, pixels, grid in video_pixels(video, self.processor, self.fps)]
        except Exception as exc:
            raise DataError(f"vision features: {video}: {exc}") from exc
        if not seconds:
            raise DataError(f"vision features: {video} has no whole second of video")
        return str(video), torch.cat([p for p, _ in seconds]), torch.stack([g for _, g in seconds])


@torch.no_grad()
def _tower(model, pixels: torch.Tensor, grids: torch.Tensor, dtype, device, batch: int = 32) -> torch.Tensor:
    """(seconds, tokens, hidden): the tower's merged output for each second, `batch` seconds at a time."""
    per_second = int(grids[0].prod())
    out = []
    for first in range(0, len(grids), batch):
        part = grids[first : first + batch]
        rows = pixels[first * per_second : (first + len(part)) * per_second]
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            pooled = model.model.get_video_features(rows.to(device), part.to(device), return_dict=True)
        out.extend(p.cpu() for p in pooled.pooler_output)
    return torch.stack(out)
