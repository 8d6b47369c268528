"""Images from clients: JPEG / PNG / raw RGB bytes, base64 or data: URLs -> (H, W, 3) uint8 arrays."""

import base64
import binascii
import io

import numpy as np
from PIL import Image

from ..errors import StreamvlmError

#: Largest frame or image decoded (width · height); PIL only reads the header before this check.
MAX_PIXELS = 4096 * 4096
#: Most pixels decoded for one chat request, all its images together (e.g. 16 images of 1920x1080).
MAX_REQUEST_PIXELS = 2 * MAX_PIXELS
JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class MessageError(StreamvlmError):
    """An invalid client message: answered with an error event, the session goes on."""


class TooManyPixels(MessageError):
    """An image over the pixel limit (found from its header, before decoding)."""


def b64decode(text: str) -> bytes:
    """Base64 (standard or URL-safe) or a `data:<mime>;base64,` URL."""
    if not isinstance(text, str):
        raise MessageError("image must be a base64 string or a data: URL")
    if text.startswith("data:"):
        head, sep, text = text.partition(",")
        if not sep or not head.endswith(";base64"):
            raise MessageError("data: URL must be base64-encoded (data:image/jpeg;base64,...)")
    text = text.strip().replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise MessageError("image is not valid base64") from None


def decode_image(
    data: bytes, raw_size: tuple[int, int] | None = None, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """JPEG or PNG bytes (by their magic number), else raw RGB24 of `raw_size` (width, height).
    Images over `max_pixels` are refused from their header, before they are decoded."""
    if data.startswith(JPEG_MAGIC) or data.startswith(PNG_MAGIC):
        try:
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > min(max_pixels, MAX_PIXELS):
                limit = min(max_pixels, MAX_PIXELS)
                raise TooManyPixels(f"image of {width}x{height} is over the {limit}-pixel limit")
            return np.asarray(image.convert("RGB"))
        except MessageError:
            raise
        except Exception as exc:  # truncated or corrupt data
            raise MessageError(f"cannot decode image: {exc}") from None
    if raw_size is None:
        raise MessageError("frame is neither JPEG nor PNG (raw RGB frames need width and height)")
    width, height = raw_size
    if len(data) != width * height * 3:
        need = width * height * 3
        raise MessageError(f"raw RGB frame of {width}x{height} needs {need} bytes, got {len(data)}")
    return np.frombuffer(data, np.uint8).reshape(height, width, 3)


def raw_size_of(width, height) -> tuple[int, int] | None:
    """Validated (width, height) of raw RGB frames; None when neither is given."""
    if width is None and height is None:
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (width, height)):
        raise MessageError("raw frames need positive integer width and height")
    if width * height > MAX_PIXELS:
        raise MessageError(f"raw frames of {width}x{height} are over the {MAX_PIXELS}-pixel limit")
    return width, height
