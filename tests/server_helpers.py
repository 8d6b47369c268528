"""A real `streamvlm serve` app on a free loopback port, in a thread, and small client helpers."""

import base64
import io
import json
import socket
import struct
import threading
import time
import urllib.error
import urllib.request

import numpy as np
from PIL import Image

from streamvlm.server.app import create_app, make_server
from streamvlm.server.sessions import ServerOptions


class LiveServer:
    """`with LiveServer(loaded, max_sessions=2, out_dir=tmp) as server:` -> server.url, server.ws_url."""

    def __init__(self, loaded, **options):
        self.app = create_app(loaded, ServerOptions(**options))
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = make_server(self.app, "127.0.0.1", self.port, log_level="warning")
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/v1/stream"

    @property
    def manager(self):
        return self.app.state.manager

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """What Ctrl-C does: uvicorn's shutdown, which first finishes every session."""
        self.server.should_exit = True
        self.thread.join(60)

    def __exit__(self, *exc):
        self.stop()


def http(method: str, url: str, body=None, headers: dict | None = None) -> tuple[int, dict, dict]:
    """(status, JSON body, headers) of one request; errors are answers too."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data, {"Content-Type": "application/json", **(headers or {})}, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return (
                response.status,
                json.loads(response.read()),
                {k.lower(): v for k, v in response.headers.items()},
            )
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), {k.lower(): v for k, v in exc.headers.items()}


def encode(frame: np.ndarray, fmt: str = "JPEG") -> bytes:
    out = io.BytesIO()
    Image.fromarray(frame).save(out, fmt)
    return out.getvalue()


def binary_frame(t: float, frame: np.ndarray) -> bytes:
    return struct.pack("<d", t) + encode(frame)


def json_frame(t: float, frame: np.ndarray) -> str:
    data = base64.b64encode(encode(frame, "PNG")).decode()
    return json.dumps({"type": "frame", "t": t, "image": f"data:image/png;base64,{data}"})


def events(ws, until: str = "closed", timeout: float = 60) -> list[dict]:
    """Server events up to and including the first of type `until`."""
    out = []
    deadline = time.monotonic() + timeout
    while True:
        event = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        out.append(event)
        if event["type"] == until:
            return out


def of_type(received: list[dict], kind: str) -> list[dict]:
    return [e for e in received if e["type"] == kind]
