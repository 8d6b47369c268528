"""A folder of images, read in name order as consecutive frames sampled at the stream rate."""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import SourceError
from .base import ArraySource, Chunk

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


class ImageFolderSource:
    def __init__(self, folder: str | Path, fps: int = 2, start: float = 0.0, seconds: int | None = None):
        self.folder = Path(folder)
        self.fps, self.start, self.seconds = fps, start, seconds
        self.files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise SourceError(f"{self.folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        skip = int(round(start * fps))
        self.files = self.files[skip:]
        if seconds is not None and len(self.files) < seconds * fps:
            available = len(self.files) // fps
            raise SourceError(
                f"{self.folder} holds {available} s of frames from {start:.1f} s at {fps} fps, "
                f"fewer than the requested {seconds} s"
            )
        if seconds is not None:
            self.files = self.files[: seconds * fps]

    def _frames(self) -> Iterator[np.ndarray]:
        for path in self.files:
            try:
                with Image.open(path) as image:
                    yield np.asarray(image.convert("RGB"))
            except (UnidentifiedImageError, OSError) as exc:
                raise SourceError(f"cannot read image {path} ({exc})") from exc

    def __iter__(self) -> Iterator[Chunk]:
        return iter(ArraySource(self._frames(), self.fps, self.start))
