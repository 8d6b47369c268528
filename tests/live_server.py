"""A live MPEG-TS stream over HTTP on loopback, encoded with PyAV in real time, for the live tests.

Frame i of the server's clock is encoded and sent at wall time i / rate after the server started
(H.264, ultrafast, zero latency, a keyframe every second); a client joining late gets live frames,
with timestamps starting at 0 on every connection (as an `ffmpeg -listen 1` server gives). Each
frame is flat grey, its level encoding i mod 12 (`frame_index`), or frame i mod n of `frames`.
Faults on request: the first connection is closed after `drop_after` seconds (or, `stall=True`,
goes silent but stays open until the server closes), and for `down_for` seconds after that every
request is answered 503. `FileServer` serves a folder's files as a plain web server does (with
their length), for recordings fetched over HTTP.

    python tests/live_server.py VIDEO [--rate 10] [--port 8090]   serve a video file live, looped
"""

import contextlib
import functools
import threading
import time
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer

import av
import numpy as np


def frame_index(frame: np.ndarray) -> int:
    return int(round((float(frame.mean()) - 10) / 20)) % 12


class LiveTsServer:
    def __init__(
        self,
        rate: int = 10,
        size=(48, 64),
        drop_after: float | None = None,
        down_for: float = 0.0,
        frames: list[np.ndarray] | None = None,
        port: int = 0,
        stall: bool = False,
    ):
        self.rate, self.drop_after, self.down_for, self.frames = rate, drop_after, down_for, frames
        self.stall = stall
        self.size = frames[0].shape[:2] if frames else size
        self.started = time.monotonic()
        self.connections = 0  # requests answered with a stream
        self.refused = 0  # requests answered 503
        self.down_until = 0.0
        self.stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.serve(self)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/live.ts"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def serve(self, handler) -> None:
        if time.monotonic() < self.down_until:
            self.refused += 1
            handler.send_error(503)
            return
        self.connections += 1
        first = self.connections == 1
        handler.send_response(200)
        handler.send_header("Content-Type", "video/mp2t")
        handler.end_headers()
        joined = time.monotonic()
        out = av.open(handler.wfile, "w", format="mpegts", options={"flush_packets": "1"}, buffer_size=1316)
        stream = out.add_stream(
            "libx264", rate=self.rate, options={"preset": "ultrafast", "tune": "zerolatency"}
        )
        stream.height, stream.width = self.size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = self.rate
        level = np.empty((*self.size, 3), np.uint8)
        i = int((joined - self.started) * self.rate) + 1  # the next frame of the server's clock
        pts = 0
        try:
            while not self.stop.is_set():
                due = self.started + i / self.rate
                if first and self.drop_after is not None and due - joined > self.drop_after:
                    self.down_until = time.monotonic() + self.down_for
                    if self.stall:
                        self.stop.wait()  # silent, open until the server closes
                    break  # the connection drops: no clean end of the stream
                time.sleep(max(0.0, due - time.monotonic()))
                if self.frames:
                    image = self.frames[i % len(self.frames)]
                else:
                    image = level
                    level[:] = 20 * (i % 12) + 10
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts, frame.time_base = pts, Fraction(1, self.rate)
                for packet in stream.encode(frame):
                    out.mux(packet)
                i, pts = i + 1, pts + 1
        except (BrokenPipeError, ConnectionResetError, av.error.FFmpegError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):  # the client may be gone
                out.close()

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class FileServer:
    """The files of `folder` over HTTP on loopback (Content-Length, no range requests). `cut`: send
    only that fraction of each file, then close (a transfer broken off)."""

    def __init__(self, folder, cut: float | None = None):
        class Handler(SimpleHTTPRequestHandler):
            def copyfile(self, source, outputfile):
                if cut is None:
                    return super().copyfile(source, outputfile)
                data = source.read()
                outputfile.write(data[: int(len(data) * cut)])

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="serve a video file as a live MPEG-TS stream on loopback")
    parser.add_argument("video")
    parser.add_argument("--rate", type=int, default=10, help="frames per second sent (default 10)")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    with av.open(args.video) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    server = LiveTsServer(rate=args.rate, frames=frames, port=args.port)
    print(server.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.close()
