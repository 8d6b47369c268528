"""Sessions of `streamvlm serve`: one bounded streaming cache per client, limits, idle timeout, flush.

The event loop never runs the model: every step (and every chat completion) goes to one worker
thread, so the sessions share the loaded model and take turns a second at a time. A session
collects its client's frames into seconds (`SecondBuffer`), queues complete seconds (at most
`max_queued_seconds`: a live client that outruns the model loses its oldest seconds, with a
`dropped` event; a pulled source waits instead), and writes every second to its files as it is
produced. `finish` steps what is still buffered or queued, writes it, sends `closed` and frees
the cache: on stop, disconnect, idle timeout, end of a pulled source and server shutdown alike.

Across sessions, a live client's second that has waited `max_queued_seconds` for the model (the
worker serves every session in turn) is dropped when its turn comes, so its latency stays bounded
however many sessions share the model. Any failure inside a session (the model, a writer, a full
disk) ends that session alone: a fatal `error` event, `closed`, its slot freed, one log line.
"""

import asyncio
import contextlib
import ipaddress
import logging
import math
import secrets
import socket
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
from PIL import Image

from ..config import StreamConfig
from ..engine import StreamingSession
from ..engine.writers import CommentaryWriter, JsonlWriter
from ..errors import StreamvlmError
from ..sources import Chunk
from .frames import MessageError
from .protocol import Frame, Ping, Pull, Start, Stop

CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_POLICY, CLOSE_ERROR, CLOSE_TRY_LATER = 1000, 1001, 1008, 1011, 1013
#: URL schemes a session may pull; anything else is a local path, read only inside --allow-dir.
REMOTE_SCHEMES = ("http", "https", "rtsp", "rtsps", "rtmp", "rtmps", "srt")
SEND_TIMEOUT_S = 10.0  # a client that reads nothing for this long is treated as gone
SHUTDOWN_TIMEOUT_S = 60.0  # shutdown gives up on sessions still finishing after this
DECODE_THREADS = 2
_STOP = object()
log = logging.getLogger("streamvlm.server")


class SessionLimit(StreamvlmError):
    """No session can be opened now (all in use, or the server is shutting down)."""


@dataclass
class ServerOptions:
    max_sessions: int = 4
    idle_timeout: float = 60.0  # seconds without a message (or a pulled second) before a session ends
    token: str | None = None  # bearer token required by every route but the page, when set
    max_message_bytes: int = 4 * 2**20  # WebSocket messages and HTTP bodies
    allow_dir: Path | None = None  # local files a session may pull; None: none
    out_dir: Path | None = Path("out/sessions")  # <id>.jsonl, <id>.vtt, <id>.stats.jsonl per session
    max_queued_seconds: int = 8  # live seconds waiting for the model, in one session and in time
    max_prompt_tokens: int = 4096  # a chat request's prompt, text and images (over it: 400)
    allow_private_urls: bool = False  # pulled URLs may name loopback / private / link-local hosts
    header_timeout: float = 10.0  # a connection must send its request headers within this
    max_connections: int = 64  # open HTTP + WebSocket connections (over it: 503)
    pull_reconnect: int = 10  # a pulled live source's reconnect attempts in a row before it fails
    stream_defaults: dict = field(default_factory=dict)  # StreamConfig values before client options
    id_prefix: str = ""  # before every session id (a Ray replica's tag: the id names its replica)


def check_pull_url(url: str, allow_dir: Path | None, allow_private: bool = False, resolve=None) -> str:
    """The source spec to open for a pulled URL. A remote host must resolve to public addresses
    only (unless `allow_private`); a local file must lie inside `allow_dir`, and so must every file
    a local HLS playlist lists. Blocks on DNS: call it off the event loop."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in REMOTE_SCHEMES:
        if not allow_private:
            check_public_host(url, resolve or socket.getaddrinfo)
        return url
    if scheme not in ("", "file"):
        raise MessageError(f"cannot pull {scheme}: URLs; use one of {', '.join(REMOTE_SCHEMES)}")
    if allow_dir is None:
        raise MessageError("this server does not read its local files (start it with --allow-dir DIR)")
    root = Path(allow_dir).resolve()
    path = inside(root, root / unquote(parts.path if scheme else url), url)
    check_playlist(path, root, url)
    return str(path)


def inside(root: Path, path: Path, url: str) -> Path:
    path = path.resolve()
    if not path.is_relative_to(root):
        raise MessageError(f"{url} is outside the directory the server may read")
    if path.exists() and not path.is_file():
        raise MessageError(f"{url} is not a regular file")
    return path


def check_public_host(url: str, resolve) -> None:
    """Refuse a URL whose host is, or resolves to, a loopback, private, link-local, multicast or
    reserved address (the server must not become a way into its own network)."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise MessageError(f"{url} has no host")
    try:
        addresses = [ipaddress.ip_address(host)]  # a literal address
    except ValueError:
        try:
            infos = resolve(host, parts.port or 0, type=socket.SOCK_STREAM)
        except (OSError, ValueError, UnicodeError) as exc:
            raise MessageError(f"cannot resolve the host of {url}: {exc}") from None
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    for address in addresses:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if not address.is_global or address.is_multicast:
            raise MessageError(
                f"{host} is a private or local address ({address}); this server pulls public URLs "
                "only (start it with --allow-private-urls for a camera network)"
            )


#: Local files FFmpeg would read as lists of other inputs: only HLS playlists are followed here.
PLAYLIST_MAGIC, CONCAT_MAGIC = b"#EXTM3U", b"ffconcat"


def check_playlist(path: Path, root: Path, url: str, depth: int = 0) -> None:
    """If `path` is an HLS playlist (by its content, whatever its name), every media file, key and
    variant playlist it names must be a local file inside `root` (checked the same way, 4 deep)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 20)
    except OSError:
        return  # missing or unreadable: opening it reports that
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(CONCAT_MAGIC):
        raise MessageError(f"{url} is an FFmpeg concat list; pull the media files themselves")
    if not text.startswith(PLAYLIST_MAGIC):
        return
    if depth >= 4:
        raise MessageError(f"{url}: playlists nested too deep")
    for entry in playlist_entries(head.decode("utf-8", errors="replace")):
        where = urlsplit(entry)
        if len(where.scheme) > 1:  # a URL (a one-letter scheme is a Windows drive)
            raise MessageError(
                f"{url} lists {where.scheme}: URLs; a local playlist may list local files only"
            )
        target = inside(root, path.parent / unquote(where.path), url)
        check_playlist(target, root, url, depth + 1)


def playlist_entries(text: str) -> list[str]:
    """The URIs an HLS playlist names: its non-tag lines and the URI="..." of its tags."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#"):
            out += [m.split('"')[0] for m in line.split('URI="')[1:]]
        elif line:
            out.append(line)
    return out


class SecondBuffer:
    """Frames with stream times -> one chunk of `fps` frames per second.

    Second k samples k + j/fps (j < fps): a frame fills the slot it falls in (the first to arrive
    wins, later ones are skipped). A second is complete when its last slot is filled or a frame of
    a later second arrives; an empty slot repeats the nearest earlier frame. Frames of a second
    already handed on are skipped. Every frame is resized to the size of the first.
    """

    def __init__(self, fps: int):
        self.fps = fps
        self.second: int | None = None
        self.slots: list[np.ndarray | None] = [None] * fps
        self.size: tuple[int, int] | None = None
        self.next_second = 0
        self.skipped = 0

    def add(self, t: float, image: np.ndarray) -> list[Chunk]:
        k = math.floor(t)
        if k < self.next_second:
            self.skipped += 1
            return []
        out = self.flush() if self.second is not None and k != self.second else []
        self.second = k
        j = min(int((t - k) * self.fps), self.fps - 1)
        if self.slots[j] is None:
            self.slots[j] = self._fit(image)
        else:
            self.skipped += 1
        if self.slots[-1] is not None:
            out += self.flush()
        return out

    def flush(self) -> list[Chunk]:
        """The second being collected, however few frames it has."""
        if self.second is None:
            return []
        filled = [j for j, frame in enumerate(self.slots) if frame is not None]
        pick = [max((i for i in filled if i <= j), default=filled[0]) for j in range(self.fps)]
        chunk = Chunk(float(self.second), float(self.second + 1), np.stack([self.slots[i] for i in pick]))
        self.next_second, self.second, self.slots = self.second + 1, None, [None] * self.fps
        return [chunk]

    def _fit(self, image: np.ndarray) -> np.ndarray:
        if self.size is None:
            self.size = image.shape[:2]
        if image.shape[:2] != self.size:
            height, width = self.size
            image = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))
        return image


class Session:
    """One client's stream: its own `StreamingSession`, frame buffer, queue, stepper and files."""

    def __init__(self, manager: "SessionManager", sid: str, kind: str, send=None, close=None):
        self.manager, self.id, self.kind = manager, sid, kind
        self._send, self._close = send, close  # async callables of the transport (None over HTTP)
        self.send_lock = asyncio.Lock()
        self.created = time.time()
        self.last_active = time.monotonic()
        self.state, self.reason = "open", None  # open -> streaming -> closing -> closed
        self.done = asyncio.Event()
        self.engine: StreamingSession | None = None
        self.config: StreamConfig | None = None
        self.buffer: SecondBuffer | None = None
        self.raw_size: tuple[int, int] | None = None
        self.queue: asyncio.Queue = asyncio.Queue(manager.options.max_queued_seconds)
        self.stepper: asyncio.Task | None = None
        self.puller: asyncio.Task | None = None
        self.stepping = self.failed = False
        self.refused_start: str | None = None  # why the client's start was refused (no defaults then)
        self.pull_spec: tuple[str, str] | None = None  # (what is opened, what the client asked for)
        self.writers: list[CommentaryWriter] = []
        self.stats_writer: JsonlWriter | None = None
        self.files: dict[str, str] = {}
        self.seconds = self.dropped = self.queued = 0  # queued: complete seconds waiting for the model
        self.recent: deque[dict] = deque(maxlen=20)
        self.last_stats: dict | None = None
        self.last_error: str | None = None

    # -- messages ---------------------------------------------------------------------------
    async def handle(self, message) -> None:
        if self.state not in ("open", "streaming"):
            raise MessageError("the session is closing")
        if isinstance(message, Ping):  # a ping keeps the socket alive, not the session: no touch
            await self.send({"type": "pong"})
            return
        if isinstance(message, Start):
            self.start(message.options, message.raw_size)
            await self.send({"type": "started", "config": asdict(self.config), "files": self.files})
        elif isinstance(message, Frame):
            await self.add_frame(message)
        elif isinstance(message, Pull):
            await self.pull(message)
        elif isinstance(message, Stop):
            await self.finish("stopped")
        self.touch()  # only a message that did something counts as activity

    def start(self, options: dict | None = None, raw_size: tuple[int, int] | None = None) -> None:
        if self.engine is not None:
            raise MessageError("the session has started already (start comes before any frame or pull)")
        options = dict(options or {})
        if {"temperature", "top_k", "top_p"} & set(options) and "greedy" not in options:
            options["greedy"] = False  # a sampling option samples, even on a greedy default
        try:
            config = StreamConfig.from_dict({**self.manager.options.stream_defaults, **options})
            self.engine = StreamingSession(self.manager.loaded, config)
        except StreamvlmError as exc:
            raise self.refused(f"start refused: {exc}") from None
        self.refused_start = None
        self.config, self.raw_size, self.buffer = config, raw_size, SecondBuffer(config.fps)
        self._open_files()
        self.stepper = asyncio.create_task(self._step_loop())
        self.state = "streaming"

    async def add_frame(self, frame: Frame) -> None:
        if self.puller is not None:
            raise MessageError("this session is pulling a URL: it takes no frames")
        if self.engine is None:
            self.start_default()
        for chunk in self.buffer.add(frame.t, frame.image):
            if self.queue.full():  # the model is behind a live client: drop the oldest second
                old, _ = self.queue.get_nowait()
                self.dropped, self.queued = self.dropped + 1, self.queued - 1
                await self.send({"type": "dropped", "start": old.start, "end": old.end})
            self.queue.put_nowait((chunk, time.perf_counter()))
            self.queued += 1

    async def pull(self, message: Pull, spec: str | None = None) -> None:
        """Start reading `message.url`; `spec`: what `check_pull_url` made of it, when the caller
        has checked it already (resolving a host or reading a playlist once is enough)."""
        from ..sources import open_source

        if self.puller is not None or (self.buffer and (self.buffer.second is not None or self.seconds)):
            raise MessageError("pull comes once, before any frame")
        if self.engine is None and self.refused_start is not None:
            self.start_default()  # raises: the client's own start was refused
        options = self.manager.options
        if spec is None:
            spec = await asyncio.to_thread(
                check_pull_url, message.url, options.allow_dir, options.allow_private_urls
            )
        if self.engine is None:
            self.start_default()
        try:
            source = await asyncio.to_thread(
                open_source,
                spec,
                fps=self.config.fps,
                start=message.start,
                seconds=message.seconds,
                reconnect=options.pull_reconnect,
            )
        except Exception as exc:
            raise MessageError(
                f"cannot open {message.url}: {self.redact(str(exc), spec, message.url)}"
            ) from None
        self.pull_spec = (spec, message.url)
        self.puller = asyncio.create_task(self._pull_loop(source))

    def refused(self, message: str) -> MessageError:
        """Remember a refused start (no frame or pull until a valid one); the error to send."""
        if self.engine is None:
            self.refused_start = message
        return MessageError(message)

    def start_default(self) -> None:
        """Start with the server's defaults (a frame or pull with no start), unless the client's
        own start was refused: then it must send a valid one first."""
        if self.refused_start is not None:
            raise MessageError(f"send a valid start first (the last one was refused: {self.refused_start})")
        self.start()

    def redact(self, text: str, spec: str, url: str) -> str:
        """`text` without the server's own paths: the resolved file as the client named it."""
        text = text.replace(spec, url) if spec else text
        if self.manager.options.allow_dir is not None:
            text = text.replace(str(Path(self.manager.options.allow_dir).resolve()), "<allow-dir>")
        return text

    # -- the loops --------------------------------------------------------------------------
    async def _pull_loop(self, source) -> None:
        chunks, reason, code = iter(source), "source ended", CLOSE_NORMAL
        try:
            while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
                self.touch()
                await self.queue.put((chunk, time.perf_counter()))
                self.queued += 1
        except Exception as exc:
            reason, code = f"source failed: {self.redact(str(exc), *self.pull_spec)}", CLOSE_ERROR
            log.warning("session %s: %s", self.id, reason)
            await self.error(reason, fatal=True)
        finally:
            if callable(getattr(source, "close", None)):  # live sources stop their reader
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(source.close)
        asyncio.create_task(self.finish(reason, code))

    async def _step_loop(self) -> None:
        """Step queued seconds until `_STOP`. A failure ends the session, never this loop: it goes
        on draining the queue so that `finish` can always hand it `_STOP`."""
        while (item := await self.queue.get()) is not _STOP:
            chunk, ready = item
            self.queued -= 1
            if self.failed:
                continue
            self.stepping = True
            try:
                line = await self.manager.run_model(self._step_if_fresh, chunk, ready)
            except Exception as exc:
                await self.fail(f"the model failed at {chunk.start:.1f} s: {exc}", "model error")
                continue
            finally:
                self.stepping = False
            try:
                if line is None:  # waited too long for its turn on the model
                    self.dropped += 1
                    await self.send({"type": "dropped", "start": chunk.start, "end": chunk.end})
                else:
                    await self._emit(line, ready)
            except Exception as exc:
                await self.fail(f"writing second {chunk.start:.1f} s failed: {exc}", "write error")

    def _step_if_fresh(self, chunk: Chunk, ready: float):
        """On the model worker: step `chunk`, or None for a live client's second that has waited
        longer than `max_queued_seconds` since it was complete (other sessions had the model)."""
        if self.puller is None and time.perf_counter() - ready > self.manager.options.max_queued_seconds:
            return None
        return self.engine.step(chunk.frames, chunk.start, chunk.end)

    async def fail(self, message: str, reason: str) -> None:
        """End the session for a failure inside it: one log line, a fatal error, then `closed`."""
        if self.failed:
            return
        self.failed = True
        log.error("session %s: %s", self.id, message)
        await self.error(message, fatal=True)
        asyncio.create_task(self.finish(reason, CLOSE_ERROR))

    async def _emit(self, line, ready: float) -> None:
        self.seconds += 1
        self.touch()
        stats = {
            **line.stats.to_dict(),
            "latency_ms": 1000 * (time.perf_counter() - ready),  # second complete -> commentary out
            "queued": self.queued,
            "dropped": self.dropped,
            "skipped_frames": self.buffer.skipped,
            "sessions": len(self.manager.sessions),
        }
        for writer in self.writers:
            writer.write(line.start, line.end, line.text)
        if self.stats_writer:
            self.stats_writer.write(stats)
        self.recent.append(line.to_dict())
        self.last_stats = stats
        await self.send({"type": "commentary", **line.to_dict()})
        await self.send({"type": "stats", **stats})

    # -- ending -----------------------------------------------------------------------------
    async def finish(self, reason: str, code: int = CLOSE_NORMAL) -> None:
        """Step what is buffered and queued, write it, free the cache and the slot, then send
        `closed` and close (a client that reconnects on `closed` finds the slot free). Whatever
        fails on the way, the files are closed, the slot is freed and `done` is set."""
        if self.state in ("closing", "closed"):
            await self.done.wait()
            return
        self.state, self.reason = "closing", reason
        try:
            if self.puller is not None and not self.puller.done():
                self.puller.cancel()
                await asyncio.wait([self.puller])
            if self.stepper is not None and not self.stepper.done():
                for chunk in [] if self.failed else self.buffer.flush():
                    await self.queue.put((chunk, time.perf_counter()))
                    self.queued += 1
                await self.queue.put(_STOP)
                await self.stepper
        except Exception as exc:  # noqa: BLE001 - never leave a session half closed
            log.error("session %s: finishing failed: %s", self.id, exc)
        finally:
            for writer in [*self.writers, *([self.stats_writer] if self.stats_writer else [])]:
                with contextlib.suppress(Exception):
                    writer.close()
            self.engine, self.state = None, "closed"
            self.manager.closed(self)
        try:
            await self.send(
                {"type": "closed", "reason": reason, "seconds": self.seconds, "files": self.files}
            )
            if self._close is not None:
                with contextlib.suppress(Exception):  # the client is gone already
                    await asyncio.wait_for(
                        self._close(code, reason.encode()[:120].decode(errors="ignore")), 5
                    )
        finally:
            self.done.set()

    # -- helpers ----------------------------------------------------------------------------
    async def send(self, event: dict) -> None:
        if self._send is None:
            return
        async with self.send_lock:
            if self._send is None:
                return
            try:
                await asyncio.wait_for(self._send(event), SEND_TIMEOUT_S)
            except Exception:  # disconnected, or reads nothing: keep stepping and writing, stop sending
                self._send = None

    async def error(self, message: str, fatal: bool = False) -> None:
        self.last_error = message
        await self.send({"type": "error", "message": message, "fatal": fatal})

    def touch(self) -> None:
        self.last_active = time.monotonic()

    def idle_for(self) -> float:
        """Seconds since the client last sent a frame, start, pull or stop (pings do not count);
        0 while the model works for it or its pulled source is still running (connecting too)."""
        busy = self.stepping or self.queued > 0 or (self.puller is not None and not self.puller.done())
        return 0.0 if busy else time.monotonic() - self.last_active

    def _open_files(self) -> None:
        out = self.manager.options.out_dir
        if out is None:
            return
        self.files = {kind: str(Path(out) / f"{self.id}.{kind}") for kind in ("jsonl", "vtt", "stats.jsonl")}
        self.writers = [CommentaryWriter(self.files["jsonl"]), CommentaryWriter(self.files["vtt"])]
        self.stats_writer = JsonlWriter(self.files["stats.jsonl"])

    def info(self) -> dict:
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "reason": self.reason,
            "created": self.created,
            "seconds": self.seconds,
            "dropped": self.dropped,
            "queued": self.queued,
            "files": self.files,
            "config": asdict(self.config) if self.config else None,
            "recent": list(self.recent),
            "stats": self.last_stats,
            "error": self.last_error,
        }


class SessionManager:
    """The open sessions, their limit, the idle reaper, the model worker and shutdown."""

    def __init__(self, loaded, options: ServerOptions):
        self.loaded, self.options = loaded, options
        self.sessions: dict[str, Session] = {}
        self.finished: OrderedDict[str, dict] = OrderedDict()  # the last 64 closed sessions
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="streamvlm-model")
        #: image decoding and chat prompt preparation: off the event loop and off the model worker,
        #: on few threads (each thread's allocator keeps freed image memory for reuse: few threads,
        #: bounded memory however many clients send large images)
        self.decoder = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="streamvlm-decode")
        self.closing = False
        self._reaper: asyncio.Task | None = None
        self._shutdown: asyncio.Future | None = None

    def open(self, kind: str, send=None, close=None) -> Session:
        if self.closing:
            raise SessionLimit("the server is shutting down")
        n = self.options.max_sessions
        if len(self.sessions) >= n:
            raise SessionLimit(f"server busy: {n} of {n} sessions in use; try again later")
        sid = self.options.id_prefix + time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
        session = self.sessions[sid] = Session(self, sid, kind, send, close)
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap())
        return session

    def closed(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        self.finished[session.id] = session.info()
        while len(self.finished) > 64:
            self.finished.popitem(last=False)

    def get(self, sid: str) -> Session | dict | None:
        return self.sessions.get(sid) or self.finished.get(sid)

    async def run_model(self, fn, *args):
        """Run `fn(*args)` on the model worker thread (one at a time, in order of arrival)."""
        return await asyncio.get_running_loop().run_in_executor(self.worker, fn, *args)

    async def run_decode(self, fn, *args):
        """Run `fn(*args)` on a decoding thread (images, chat prompts)."""
        return await asyncio.get_running_loop().run_in_executor(self.decoder, fn, *args)

    async def _reap(self) -> None:
        timeout = self.options.idle_timeout
        while True:
            await asyncio.sleep(max(0.05, min(1.0, timeout / 4)))
            for session in list(self.sessions.values()):
                if session.state in ("open", "streaming") and session.idle_for() > timeout:
                    asyncio.create_task(session.finish(f"idle for {timeout:g} s", CLOSE_GOING_AWAY))

    async def shutdown(self) -> None:
        """Finish every session (each one's buffered seconds stepped and written); refuse new ones."""
        if self._shutdown is None:
            self._shutdown = asyncio.ensure_future(self._shutdown_all())
        await self._shutdown

    async def _shutdown_all(self) -> None:
        self.closing = True
        if self._reaper is not None:
            self._reaper.cancel()
        sessions = list(self.sessions.values())
        finishing = asyncio.gather(
            *(s.finish("server shutting down", CLOSE_GOING_AWAY) for s in sessions), return_exceptions=True
        )
        try:
            await asyncio.wait_for(finishing, SHUTDOWN_TIMEOUT_S)
        except TimeoutError:
            log.error("shutdown: %d sessions did not finish in %g s", len(self.sessions), SHUTDOWN_TIMEOUT_S)
        self.worker.shutdown(wait=False)
        self.decoder.shutdown(wait=False)
