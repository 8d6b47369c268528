"""Generated clips (moving shapes) and writing frames to a video file with PyAV."""

from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def synthetic_frames(
    seconds: int, fps: int = 2, size: tuple[int, int] = (112, 112), seed: int = 0
) -> Iterator[np.ndarray]:
    """`seconds · fps` RGB frames (H, W, 3) uint8: a ball bouncing over a slowly changing backdrop."""
    height, width = size
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0.2, 0.8, 2) * (height, width)
    vel = rng.uniform(-1, 1, 2) * min(height, width) / (2.5 * fps)
    radius = max(2, min(height, width) // 10)
    yy, xx = np.mgrid[0:height, 0:width]
    color = rng.integers(64, 256, 3)
    for i in range(seconds * fps):
        shade = int(40 + 30 * np.sin(i / (4 * fps)))
        frame = np.empty((height, width, 3), np.uint8)
        frame[:] = (shade, shade // 2, 90 - shade // 2)
        pos += vel
        for axis, limit in enumerate((height, width)):
            if not radius <= pos[axis] <= limit - radius:
                vel[axis] = -vel[axis]
                pos[axis] = np.clip(pos[axis], radius, limit - radius)
        frame[(yy - pos[0]) ** 2 + (xx - pos[1]) ** 2 <= radius**2] = color
        yield frame


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: int = 2, codec: str = "libx264") -> Path:
    """Encode RGB frames to `path` (H.264 in MP4 by default, one keyframe every 2 s)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream(codec, rate=Fraction(fps))
                stream.height, stream.width = frame.shape[0], frame.shape[1]
                stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
                stream.codec_context.gop_size = 2 * fps
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return path
