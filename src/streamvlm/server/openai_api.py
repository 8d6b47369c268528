"""OpenAI chat-completions shapes: request JSON -> chat turns, reply -> response JSON.

Supported: `messages` (system/developer, user, assistant; content as a string or a list of
`text` and `image_url` parts, images as base64 `data:` URLs: the server fetches nothing),
`max_tokens` / `max_completion_tokens` (at most 512), `temperature` (0 = greedy), `top_p`, `seed`, `stop`,
`n` = 1. `stream: true` and tools are refused with a 400, and so are images over
`MAX_REQUEST_PIXELS` in all (checked from their headers, before decoding).
"""

import secrets
import time

from ..engine.chat import ChatReply, ChatTurn
from .frames import MAX_REQUEST_PIXELS, MessageError, TooManyPixels, b64decode, decode_image

MAX_TOKENS = 512
MAX_SEED = 2**63 - 1
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def parse_request(body, max_pixels: int = MAX_REQUEST_PIXELS) -> tuple[list[ChatTurn], dict]:
    """Chat turns and `chat()` keyword arguments; `MessageError` for anything unsupported.
    Decodes the images (at most `max_pixels` in all): call it off the event loop."""
    if not isinstance(body, dict):
        raise MessageError("request body must be a JSON object")
    if body.get("stream"):
        raise MessageError("stream=true is not supported; ask for the whole reply")
    if body.get("n", 1) != 1:
        raise MessageError("only n=1 is supported")
    if body.get("tools") or body.get("functions"):
        raise MessageError("tools are not supported")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise MessageError('"messages" must be a non-empty list')
    budget = [max_pixels]
    turns = [parse_message(m, i, budget) for i, m in enumerate(messages)]
    max_tokens = given(body, "max_completion_tokens", given(body, "max_tokens", 128))
    temperature = given(body, "temperature", 1.0)
    top_p = given(body, "top_p", 1.0)
    seed = given(body, "seed", 0)
    stop = given(body, "stop", [])
    stop = [stop] if isinstance(stop, str) else stop
    if not whole(max_tokens) or not 1 <= max_tokens <= MAX_TOKENS:
        raise MessageError(f"max_tokens must be a whole number from 1 to {MAX_TOKENS}, got {max_tokens!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
        raise MessageError("temperature must be a number from 0 to 2")
    if isinstance(top_p, bool) or not isinstance(top_p, int | float) or not 0 < top_p <= 1:
        raise MessageError(f"top_p must be a number over 0 and at most 1, got {top_p!r}")
    if not whole(seed) or not 0 <= seed <= MAX_SEED:
        raise MessageError(f"seed must be a whole number from 0 to 2**63 - 1, got {seed!r}")
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop):
        raise MessageError("stop must be a string or a list of at most 4 strings")
    kwargs = {
        "max_tokens": max_tokens,
        "temperature": float(temperature),
        "top_p": float(top_p),
        "seed": seed,
    }
    return turns, {**kwargs, "stop": stop}


def given(body: dict, name: str, default):
    """`body[name]`, or `default` when it is absent or null (0 and "" are values, not absent)."""
    value = body.get(name)
    return default if value is None else value


def whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_message(message, index: int, budget: list[int]) -> ChatTurn:
    if not isinstance(message, dict) or message.get("role") not in ROLES:
        raise MessageError(f"messages[{index}] needs a role: one of {', '.join(ROLES)}")
    content = message.get("content")
    if isinstance(content, str):
        return ChatTurn(ROLES[message["role"]], [content])
    if not isinstance(content, list):
        raise MessageError(f"messages[{index}].content must be a string or a list of parts")
    parts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append(part["text"])
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str) or not url.startswith("data:"):
                raise MessageError("images must be base64 data: URLs (data:image/jpeg;base64,...)")
            try:
                image = decode_image(b64decode(url), max_pixels=budget[0])
            except TooManyPixels:
                raise MessageError(
                    f"the images of one request may have at most {MAX_REQUEST_PIXELS} pixels in all"
                ) from None
            budget[0] -= image.shape[0] * image.shape[1]
            parts.append(image)
        else:
            raise MessageError(f"messages[{index}]: unsupported content part {kind!r} (text and image_url)")
    return ChatTurn(ROLES[message["role"]], parts)


def completion(reply: ChatReply, model: str) -> dict:
    return {
        "id": f"chatcmpl-{secrets.token_hex(12)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.text},
                "finish_reason": reply.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        },
    }


def error(message: str, kind: str = "invalid_request_error", code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
