"""The FastAPI app of `streamvlm serve`: thin routes over a `SessionManager` (protocol in `__init__`)."""

import asyncio
import hmac
import json
import logging
import re
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from ..config import StreamConfig
from ..engine.chat import chat, prepare_chat
from . import openai_api, protocol
from .connections import GuardedH11Protocol
from .frames import MessageError
from .protocol import BadStart
from .sessions import (
    CLOSE_POLICY,
    CLOSE_TRY_LATER,
    ServerOptions,
    SessionLimit,
    SessionManager,
    check_pull_url,
    log,
)

STATIC = Path(__file__).parent / "static"


class BodyTooLarge(Exception):
    pass


def create_app(loaded, options: ServerOptions | None = None) -> FastAPI:
    """The app over one loaded model; `app.state.manager` holds its sessions."""
    options = options or ServerOptions()
    manager = SessionManager(loaded, options)
    model_name = loaded.path.name
    defaults = asdict(StreamConfig.from_dict(options.stream_defaults))  # before a client's start options

    @asynccontextmanager
    async def lifespan(app):
        yield
        await manager.shutdown()

    app = FastAPI(title="streamvlm", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.manager = manager
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def authorized(headers, query) -> bool:
        if options.token is None:
            return True
        header = headers.get("authorization", "")
        given = header[7:].strip() if header.lower().startswith("bearer ") else query.get("token", "")
        return hmac.compare_digest(given.encode(), options.token.encode())

    def refuse(status: int, message: str, kind: str = "invalid_request_error", headers=None):
        return JSONResponse(openai_api.error(message, kind), status_code=status, headers=headers)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if request.url.path.startswith("/v1/"):
            if not authorized(request.headers, request.query_params):
                return refuse(401, "missing or wrong bearer token", "authentication_error")
            if int(request.headers.get("content-length") or 0) > options.max_message_bytes:
                return refuse(413, f"request body is over the {options.max_message_bytes}-byte limit")
        try:
            return await call_next(request)
        except BodyTooLarge:
            return refuse(413, f"request body is over the {options.max_message_bytes}-byte limit")
        except Exception as exc:  # noqa: BLE001 - an OpenAI-style body, never a plain-text 500
            log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
            return refuse(500, f"internal error: {type(exc).__name__}", "server_error")

    async def read_json(request: Request):
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > options.max_message_bytes:
                raise BodyTooLarge
        try:
            return json.loads(body)
        except ValueError:
            raise MessageError("request body is not JSON") from None

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon():
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    @app.get("/health")
    async def health():
        return {
            "status": "closing" if manager.closing else "ok",
            "model": model_name,
            "sessions": len(manager.sessions),
            "max_sessions": options.max_sessions,
            "token_required": options.token is not None,
        }

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "streamvlm"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:  # images decoded and the prompt tokenized off the event loop and off the model worker
            turns, kwargs = await manager.run_decode(openai_api.parse_request, await read_json(request))
            prompt = await manager.run_decode(prepare_chat, loaded, turns)
            if prompt.tokens > options.max_prompt_tokens:
                raise MessageError(
                    f"the prompt has {prompt.tokens} tokens, over this server's limit of "
                    f"{options.max_prompt_tokens} (--max-prompt-tokens)"
                )
            reply = await manager.run_model(lambda: chat(loaded, prompt, **kwargs))
        except MessageError as exc:
            return refuse(400, str(exc))
        except RuntimeError:
            if not manager.closing:
                raise  # a model failure (e.g. out of memory): a 500 from the guard
            return refuse(503, "the server is shutting down", "server_error")
        return openai_api.completion(reply, model_name)

    @app.get("/v1/sessions")
    async def list_sessions():
        live = [s.info() for s in manager.sessions.values()]
        finished = list(manager.finished.values())
        return {"max_sessions": options.max_sessions, "sessions": live, "finished": finished}

    @app.post("/v1/sessions", status_code=201)
    async def pull_session(request: Request):
        """A session pulling a URL into its files, no WebSocket: {"url", "options", "start", "seconds"}."""
        try:
            body = await read_json(request)
            if not isinstance(body, dict):
                raise MessageError("request body must be a JSON object")
            start = protocol.parse_message({"type": "start", "options": body.get("options", {})})
            pull = protocol.parse_message({**body, "type": "pull"})
            spec = await asyncio.to_thread(
                check_pull_url, pull.url, options.allow_dir, options.allow_private_urls
            )
            session = manager.open("pull")
        except MessageError as exc:
            return refuse(400, str(exc))
        except SessionLimit as exc:
            return refuse(429, str(exc), "rate_limit_error", headers={"Retry-After": "10"})
        try:
            session.start(start.options)
            await session.pull(pull, spec)
        except MessageError as exc:
            await session.finish(f"refused: {exc}")
            return refuse(400, str(exc))
        return session.info()

    @app.get("/v1/sessions/{sid}")
    async def get_session(sid: str):
        found = manager.get(sid)
        if found is None:
            return refuse(404, f"no session {sid}")
        return found if isinstance(found, dict) else found.info()

    @app.delete("/v1/sessions/{sid}")
    async def stop_session(sid: str):
        session = manager.sessions.get(sid)
        if session is None:
            return refuse(404, f"no open session {sid}")
        await session.finish("stopped")
        return manager.finished.get(sid, session.info())

    @app.websocket("/v1/stream")
    async def stream(ws: WebSocket):
        await ws.accept()
        if not authorized(ws.headers, ws.query_params):
            await ws.close(CLOSE_POLICY, "unauthorized: missing or wrong bearer token")
            return
        try:
            session = manager.open("websocket", send=ws.send_json, close=ws.close)
        except SessionLimit as exc:
            await ws.close(CLOSE_TRY_LATER, str(exc))
            return
        await session.send(
            {
                "type": "ready",
                "session": session.id,
                "model": model_name,
                "defaults": defaults,
                "limits": {
                    "max_message_bytes": options.max_message_bytes,
                    "idle_timeout": options.idle_timeout,
                    "max_queued_seconds": options.max_queued_seconds,
                },
            }
        )
        while session.state in ("open", "streaming"):
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            data = message.get("bytes") if message.get("bytes") is not None else message.get("text") or ""
            size = len(data) if isinstance(data, bytes) else len(data.encode())
            limit = options.max_message_bytes
            try:
                if size > limit:
                    raise MessageError(f"message of {size} bytes is over the {limit}-byte limit; ignored")
                parse = protocol.parse_binary if isinstance(data, bytes) else protocol.parse_text
                parsed = await manager.run_decode(parse, data, session.raw_size)  # images: off the loop
                await session.handle(parsed)
            except BadStart as exc:
                session.refused(str(exc))
                await session.error(str(exc))
            except MessageError as exc:
                await session.error(str(exc))
        await session.finish("disconnected")

    return app


class GracefulServer(uvicorn.Server):
    """uvicorn's server, finishing every session (its last seconds stepped, sent and written)
    before uvicorn closes the connections."""

    async def shutdown(self, sockets=None):
        await self.config.app.state.manager.shutdown()
        await super().shutdown(sockets)


class RedactTokens(logging.Filter):
    """Hide `?token=` (the browser's way to pass the bearer token) in uvicorn's log lines."""

    PATTERN = re.compile(r"([?&]token=)[^&\s\"]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = self.PATTERN.sub(r"\1***", record.msg)
        if isinstance(record.args, tuple):  # uvicorn's formatters unpack the arguments: keep their shape
            record.args = tuple(
                self.PATTERN.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args
            )
        return True


def make_server(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info"):
    options: ServerOptions = app.state.manager.options
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        lifespan="on",
        # over the limit an error event; over twice the limit the connection closes (1009)
        ws_max_size=2 * options.max_message_bytes + 1024,
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=30,
        http=GuardedH11Protocol.with_timeout(options.header_timeout),
        limit_concurrency=options.max_connections,
    )
    for name in ("uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).addFilter(RedactTokens())
    return GracefulServer(config)
