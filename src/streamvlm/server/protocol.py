"""Client messages of the streaming WebSocket, parsed and checked (the protocol is in `__init__`).

Every problem is a `MessageError` with a one-line message the client gets as an error event.
"""

import json
import math
import struct
from dataclasses import dataclass

import numpy as np

from .frames import MessageError, b64decode, decode_image, raw_size_of

#: Options a client may set in `start`, with the range allowed (or the longest text): every
#: session keeps the server's cache policy, so its cache stays bounded whatever the client asks.
#: A float lower bound of 0.0 is exclusive (temperature and penalty must be > 0).
NUMBER_OPTIONS = {
    "fps": (1, 8),
    "max_new_tokens": (1, 64),
    "vision_window": (1, 64),
    "text_rounds": (1, 64),
    "text_sink": (0, 4096),
    "text_window": (0, 4096),
    "temperature": (0.0, 10.0),
    "repetition_penalty": (0.0, 10.0),
    "top_k": (0, 1000),  # 0: the whole vocabulary
    "top_p": (0.0, 1.0),
    "seed": (0, 2**63 - 1),
}
TEXT_OPTIONS = {"query": 4096, "previous_text": 16384, "system_prompt": 4096}
CLIENT_OPTIONS = (*NUMBER_OPTIONS, *TEXT_OPTIONS, "greedy")
BINARY_HEADER = struct.Struct("<d")  # binary frame: float64 little-endian stream time, then the image
#: Latest stream time accepted (about 317 years: Unix times fit), so that every time the session
#: writes is a number its WebVTT / SRT / JSONL writers represent exactly.
MAX_STREAM_TIME = 1e10


class BadStart(MessageError):
    """A refused `start`: the session then takes no frame or pull until a valid start arrives."""


@dataclass
class Start:
    options: dict
    raw_size: tuple[int, int] | None = None  # (width, height) of raw RGB binary frames


@dataclass
class Frame:
    t: float  # stream time of the frame, seconds
    image: np.ndarray  # (H, W, 3) uint8


@dataclass
class Pull:
    url: str
    start: float = 0.0
    seconds: int | None = None


@dataclass
class Stop:
    pass


@dataclass
class Ping:
    pass


def parse_text(text: str, raw_size: tuple[int, int] | None = None):
    try:
        message = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MessageError(f"message is not JSON: {exc.msg} at character {exc.pos}") from None
    return parse_message(message, raw_size)


def parse_message(message, raw_size: tuple[int, int] | None = None):
    """A decoded JSON message -> Start, Frame, Pull, Stop or Ping."""
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise MessageError('message must be a JSON object with a "type"')
    kind = message["type"]
    if kind == "frame":
        size = raw_size_of(message.get("width"), message.get("height")) or raw_size
        return Frame(stream_time(message.get("t")), decode_image(b64decode(message.get("image")), size))
    if kind == "start":
        options = message.get("options", {})
        raw = message.get("raw") or {}
        try:
            if not isinstance(options, dict) or not isinstance(raw, dict):
                raise MessageError('"options" and "raw" must be JSON objects')
            return Start(client_options(options), raw_size_of(raw.get("width"), raw.get("height")))
        except MessageError as exc:
            raise BadStart(f"start refused: {exc}") from None
    if kind == "pull":
        url, start, seconds = message.get("url"), message.get("start", 0), message.get("seconds")
        if not isinstance(url, str) or not url or len(url) > 4096:
            raise MessageError('pull needs a "url" string')
        if seconds is not None and not (isinstance(seconds, int) and seconds >= 1):
            raise MessageError('"seconds" must be a whole number >= 1')
        return Pull(url, stream_time(start), seconds)
    if kind == "stop":
        return Stop()
    if kind == "ping":
        return Ping()
    raise MessageError(f"unknown message type {kind!r}; expected start, frame, pull, stop or ping")


def parse_binary(data: bytes, raw_size: tuple[int, int] | None = None) -> Frame:
    if len(data) <= BINARY_HEADER.size:
        raise MessageError("binary frame must be 8 bytes of float64 time followed by the image")
    (t,) = BINARY_HEADER.unpack_from(data)
    return Frame(stream_time(t), decode_image(data[BINARY_HEADER.size :], raw_size))


def stream_time(t) -> float:
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
        raise MessageError(f"time must be a number of seconds, got {t!r}")
    if not 0 <= t <= MAX_STREAM_TIME:
        raise MessageError(f"time must be from 0 to {MAX_STREAM_TIME:.0e} seconds, got {t!r}")
    return float(t)


def client_options(options: dict) -> dict:
    """Check a client's `start` options against the allowed names and limits."""
    unknown = sorted(set(options) - set(CLIENT_OPTIONS))
    if unknown:
        raise MessageError(
            f"unknown or server-only options {', '.join(unknown)}; allowed: {', '.join(CLIENT_OPTIONS)}"
        )
    for name, value in options.items():
        if name == "greedy":
            if not isinstance(value, bool):
                raise MessageError("option greedy must be true or false")
        elif name in TEXT_OPTIONS:
            if value is not None and (not isinstance(value, str) or len(value) > TEXT_OPTIONS[name]):
                raise MessageError(f"option {name} must be text of at most {TEXT_OPTIONS[name]} characters")
        else:
            low, high = NUMBER_OPTIONS[name]
            whole = isinstance(high, int)
            if isinstance(value, bool) or not isinstance(value, int if whole else int | float):
                raise MessageError(f"option {name} must be a {'whole ' if whole else ''}number")
            if not (low <= value if whole else low < value) or value > high:
                span = f"from {low} to {high}" if whole else f"over {low:g} and at most {high:g}"
                raise MessageError(f"option {name} must be {span}, got {value}")
    return dict(options)
