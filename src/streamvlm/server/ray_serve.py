"""`streamvlm serve --ray`: today's server on Ray Serve, one model per replica (docs/serving.md).

Two deployments and a registry:

- `Replica` (N, or autoscaled; G GPUs each) loads the model once and runs today's app
  (`create_app`) on a port of its own node; its sessions' caches live in its memory, and every
  session id starts with its tag (`r1a2b3c4-...`), so an id names its replica.
- `Front` (Serve's HTTP ingress, CPU only) answers the clients with the same routes. A new
  session (a WebSocket, or `POST /v1/sessions`) first takes a `hold` on a replica through Serve's
  router, which picks the replica with the fewest ongoing holds (the least loaded; autoscaling and
  draining count them too), then is relayed to that replica for its whole life.
  `/v1/sessions/ID` goes to the replica the id's tag names; `/health` and `GET /v1/sessions` sum
  over the replicas; other routes go to the least-loaded replica.
- `Registry`, a named actor: each replica reports its address and sessions every half second.

A replica that dies mid-session cannot say goodbye: the Front sends its clients the `closed` event
itself ("replica failed: ..."); their commentary so far is in the replica's files (flushed per
line), Serve starts a new replica, and new sessions go to the live ones.
"""

import asyncio
import json
import os
import socket
import threading
import time
from contextlib import suppress

import aiohttp
import ray
import websockets
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from ray import serve

from . import openai_api

APP, REGISTRY, NAMESPACE = "streamvlm", "streamvlm-registry", "streamvlm"
REPORT_S, STALE_S = 0.5, 3.0  # a replica reports this often; an entry older than STALE_S is gone
HOLD_TIMEOUT_S = 10.0  # a new session waits this long for a replica (all busy, or none up yet)
DRAIN_TIMEOUT_S = 300.0  # a replica being stopped waits this long for its sessions to end


@ray.remote(num_cpus=0)
class Registry:
    """tag -> (when, what a replica last reported: url, sessions, max_sessions, model, ...)."""

    def __init__(self):
        self.replicas: dict[str, tuple[float, dict]] = {}
        self.stopping, self.told = False, set()  # told: replicas that answered the stop

    def report(self, tag: str, info: dict) -> bool:
        """Note a replica's state; True: finish every session (the app is being stopped)."""
        if self.stopping and tag in self.told and not info["sessions"]:
            info = {**info, "finished": True}  # reported after it began finishing: all done
        self.replicas[tag] = (time.monotonic(), info)
        if self.stopping:
            self.told.add(tag)
        return self.stopping

    def stop(self) -> None:
        self.stopping = True

    def finished(self) -> bool:
        """Every live replica has finished its sessions since `stop`."""
        return all(info.get("finished") for info in self.live().values())

    def drop(self, tag: str) -> None:
        self.replicas.pop(tag, None)

    def live(self) -> dict[str, dict]:
        now = time.monotonic()
        return {tag: info for tag, (at, info) in self.replicas.items() if now - at < STALE_S}


def registry():
    return Registry.options(
        name=REGISTRY, namespace=NAMESPACE, get_if_exists=True, lifetime="detached"
    ).remote()


class Replica:
    """One model, today's app on its own port, its sessions; Serve restarts it if it dies."""

    def __init__(self, model, device, dtype, options: dict, host: str | None, log_level: str = "warning"):
        from ..runner import load_for_run
        from .app import create_app, make_server
        from .sessions import ServerOptions

        self.tag = "r" + serve.get_replica_context().replica_id.unique_id[:8]
        host = host or ray.util.get_node_ip_address()  # None: reachable from the other nodes
        loaded = load_for_run(model, device, dtype, quiet=True)
        defaults = loaded.defaults.get("stream", {})
        options = ServerOptions(**options, stream_defaults=defaults, id_prefix=self.tag + "-")
        app = create_app(loaded, options)
        self.manager = app.state.manager
        sock = socket.create_server((host, 0))
        self.url = f"{host}:{sock.getsockname()[1]}"
        self.server = make_server(app, host, sock.getsockname()[1], log_level)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"replica {self.tag}: its server did not start")
            time.sleep(0.02)
        self.info = {
            "url": self.url,
            "max_sessions": options.max_sessions,
            "model": loaded.path.name,
            "token_required": options.token is not None,
            "actor": ray.get_runtime_context().get_actor_name(),
        }
        self.registry, self.stopping = registry(), threading.Event()
        threading.Thread(target=self._report, daemon=True).start()

    def _report(self) -> None:
        while not self.stopping.wait(REPORT_S):
            info = {**self.info, "sessions": len(self.manager.sessions)}
            try:
                if ray.get(self.registry.report.remote(self.tag, info), timeout=5):
                    self.server.should_exit = True  # finish every session, as Ctrl-C does
            except Exception:  # noqa: BLE001 - the registry restarts: look it up again
                self.registry = registry()

    async def hold(self):
        """A session's slot: yields where to connect, then lasts until the Front cancels it (or,
        should the Front be gone, until this replica has no session left)."""
        yield {"tag": self.tag, "url": self.url}
        since = time.monotonic()
        while self.manager.sessions or time.monotonic() - since < 30:
            await asyncio.sleep(1)

    def check_health(self) -> None:
        if not self.thread.is_alive():
            raise RuntimeError(f"replica {self.tag}: its server stopped")

    def __del__(self) -> None:
        """Stopped (scaled down, redeployed, shut down): Serve has waited for the holds to end
        (up to the drain timeout); whatever is left is finished like a Ctrl-C: buffered seconds
        stepped, sent and written, then `closed`."""
        self.stopping.set()
        with suppress(Exception):
            self.registry.drop.remote(self.tag)
        self.server.should_exit = True
        self.thread.join(60)


class Busy(Exception):
    pass


class Front:
    """The client-facing routes; relays each session to the replica that holds it."""

    def __init__(self, replicas, max_message_bytes: int):
        self.routes = front_app(replicas, max_message_bytes)

    def __serve_build_asgi_app__(self):
        return self.routes


def front_app(replicas, max_message_bytes: int) -> FastAPI:
    app = FastAPI(title="streamvlm", docs_url=None, redoc_url=None, openapi_url=None)
    reg = registry()
    client: list[aiohttp.ClientSession] = []  # made on the serving loop
    watchers: set[asyncio.Task] = set()

    def http() -> aiohttp.ClientSession:
        if not client:
            client.append(aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)))
        return client[0]

    def refuse(status: int, message: str, kind: str = "invalid_request_error", headers=None):
        return JSONResponse(openai_api.error(message, kind), status_code=status, headers=headers)

    async def live() -> dict[str, dict]:
        return await reg.live.remote()

    async def least_loaded() -> str | None:
        replicas_now = await live()
        best = min(replicas_now.values(), key=lambda r: r["sessions"] / r["max_sessions"], default=None)
        return best and best["url"]

    async def take_hold():
        """(where, release): a slot on the least-loaded replica, chosen by Serve's router."""
        deadline = time.monotonic() + HOLD_TIMEOUT_S
        while (left := deadline - time.monotonic()) > 0:
            gen = replicas.options(stream=True).hold.remote()
            try:
                return await asyncio.wait_for(gen.__anext__(), left), gen.cancel
            except Exception:  # noqa: BLE001 - none in time (all busy, none up), or a dead one: again
                gen.cancel()
                await asyncio.sleep(0.2)
        raise Busy

    def passed(headers) -> dict:
        return {k: v for k in ("authorization", "content-type") if (v := headers.get(k))}

    async def forward(request: Request, url: str | None, body: bytes | None = None) -> Response:
        if url is None:
            return refuse(503, "no replica is up yet; try again later", "server_error", {"Retry-After": "5"})
        if body is None:
            body = await request.body()
        target = f"http://{url}{request.url.path}" + (f"?{request.url.query}" if request.url.query else "")
        try:
            async with http().request(
                request.method, target, data=body, headers=passed(request.headers)
            ) as answer:
                content = await answer.read()
                keep = {k: v for k in ("content-type", "retry-after") if (v := answer.headers.get(k))}
                return Response(content, answer.status, headers=keep)
        except aiohttp.ClientError as exc:
            return refuse(502, f"replica failed: {type(exc).__name__}", "server_error")

    async def read_body(request: Request) -> bytes | None:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_message_bytes:
                return None
        return body

    @app.get("/health")
    async def health():
        by_tag = await live()
        replicas_now = list(by_tag.values())
        return {
            "status": "ok" if replicas_now else "starting",
            "model": replicas_now[0]["model"] if replicas_now else None,
            "sessions": sum(r["sessions"] for r in replicas_now),
            "max_sessions": sum(r["max_sessions"] for r in replicas_now),
            "token_required": any(r["token_required"] for r in replicas_now),
            "replicas": [
                {"tag": tag, "sessions": r["sessions"], "max_sessions": r["max_sessions"]}
                for tag, r in sorted(by_tag.items())
            ],
        }

    @app.get("/v1/sessions")
    async def list_sessions(request: Request):
        out = {"max_sessions": 0, "sessions": [], "finished": []}
        for r in (await live()).values():
            answer = await forward(request, r["url"], b"")
            if answer.status_code != 200:
                return answer  # 401: the same token guards every replica
            part = json.loads(answer.body)
            out["max_sessions"] += part["max_sessions"]
            out["sessions"] += part["sessions"]
            out["finished"] += part["finished"]
        return out

    @app.post("/v1/sessions")
    async def pull_session(request: Request):
        body = await read_body(request)
        if body is None:
            return refuse(413, f"request body is over the {max_message_bytes}-byte limit")
        try:
            where, release = await take_hold()
        except Busy:
            busy = "server busy: no replica has a free session; try again later"
            return refuse(429, busy, "rate_limit_error", headers={"Retry-After": "10"})
        answer = await forward(request, where["url"], body)
        if answer.status_code != 201:
            release()
            return answer
        task = asyncio.create_task(watch(where["url"], json.loads(answer.body)["id"], request, release))
        watchers.add(task)
        task.add_done_callback(watchers.discard)
        return answer

    async def watch(url: str, sid: str, request: Request, release) -> None:
        """Keep a pulled session's hold until it is closed (or its replica is gone)."""
        headers = passed(request.headers)
        try:
            while True:
                await asyncio.sleep(1)
                async with http().get(f"http://{url}/v1/sessions/{sid}", headers=headers) as r:
                    if r.status != 200 or (await r.json()).get("state") == "closed":
                        return
        except Exception:  # noqa: BLE001 - the replica is gone
            return
        finally:
            release()

    @app.api_route("/v1/sessions/{sid}", methods=["GET", "DELETE"])
    async def one_session(sid: str, request: Request):
        owner = (await live()).get(sid.split("-")[0])
        if owner is None:
            return refuse(404, f"no session {sid} (no live replica holds it)")
        return await forward(request, owner["url"])

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE"])
    async def elsewhere(request: Request):
        body = await read_body(request)
        if body is None:
            return refuse(413, f"request body is over the {max_message_bytes}-byte limit")
        return await forward(request, await least_loaded(), body)

    @app.websocket("/v1/stream")
    async def stream(ws: WebSocket):
        await ws.accept()
        try:
            where, release = await take_hold()
        except Busy:
            await ws.close(1013, "server busy: no replica has a free session; try again later")
            return
        try:
            await relay(ws, where)
        finally:
            release()

    return app


async def relay(ws: WebSocket, where: dict) -> None:
    """Client <-> replica, message for message; a replica that vanishes gets its `closed` sent here."""
    query = ws.url.query
    url = f"ws://{where['url']}/v1/stream" + (f"?{query}" if query else "")
    auth = {"authorization": ws.headers["authorization"]} if "authorization" in ws.headers else {}
    try:
        upstream = await websockets.connect(
            url, additional_headers=auth, max_size=None, compression=None, open_timeout=10
        )
    except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
        await ws.close(1011, f"replica unreachable: {type(exc).__name__}")
        return
    seen = {"ready": False, "closed": False, "seconds": 0, "files": {}}

    async def up():  # until the client leaves (or the replica is gone); then the replica finishes
        try:
            while (message := await ws.receive())["type"] != "websocket.disconnect":
                await upstream.send(message["bytes"] if message.get("bytes") is not None else message["text"])
        finally:
            await upstream.close()

    pump = asyncio.create_task(up())
    with suppress(websockets.ConnectionClosed):
        async for message in upstream:
            if isinstance(message, str):
                note(seen, message)
                await ws.send_text(message)
            else:
                await ws.send_bytes(message)
    if not pump.done():  # the replica ended it: its close goes to the client, or `closed` from here
        with suppress(Exception):  # the client may be gone too
            said = upstream.protocol.close_rcvd  # the replica's close frame; None: it vanished
            if said is not None and (seen["closed"] or not seen["ready"]):
                await ws.close(said.code, said.reason)
            else:
                if seen["ready"] and not seen["closed"]:
                    reason = f"replica failed: {where['tag']} is gone (its commentary so far is in its files)"
                    event = {"type": "closed", "reason": reason, "seconds": seen["seconds"]}
                    await ws.send_text(json.dumps({**event, "files": seen["files"]}))
                await ws.close(1011, "replica failed")
    pump.cancel()
    await asyncio.gather(pump, return_exceptions=True)


def note(seen: dict, message: str) -> None:
    with suppress(ValueError, AttributeError, TypeError):
        event = json.loads(message)
        kind = event.get("type")
        if kind in ("ready", "closed"):
            seen[kind] = True
        elif kind == "started":
            seen["files"] = event.get("files", {})
        elif kind == "commentary":
            seen["seconds"] += 1


def application(
    model: str | None = None,
    options: dict | None = None,
    replicas: int = 1,
    autoscale: tuple[int, int] | None = None,
    gpus: float = 0,
    device: str = "cpu",
    dtype: str | None = None,
    replica_host: str | None = None,
    log_level: str = "warning",
    drain_timeout: float = DRAIN_TIMEOUT_S,
):
    """The bound Serve application: a Front over `replicas` (or MIN..MAX autoscaled) Replicas.
    `options` are `ServerOptions` fields; `replica_host` None: each replica's node address."""
    options = dict(options or {})
    max_sessions = options.get("max_sessions", 4)
    scaling = (
        {"num_replicas": replicas}
        if autoscale is None
        else {
            "autoscaling_config": {
                "min_replicas": autoscale[0],
                "max_replicas": autoscale[1],
                "initial_replicas": autoscale[0],
                "target_ongoing_requests": max(1, 3 * max_sessions // 4),  # holds = sessions
            }
        }
    )
    replica = serve.deployment(
        Replica,
        name="Replica",
        max_ongoing_requests=max_sessions + 4,  # holds: its sessions, and a few on top to refuse
        graceful_shutdown_timeout_s=drain_timeout,
        graceful_shutdown_wait_loop_s=1.0,
        ray_actor_options={"num_gpus": gpus, "num_cpus": 1},
        **scaling,
    )
    front = serve.deployment(
        serve.ingress()(Front), name="Front", max_ongoing_requests=10_000, ray_actor_options={"num_cpus": 0}
    )
    replica_app = replica.bind(model, device, dtype, options, replica_host, log_level)
    return front.bind(replica_app, options.get("max_message_bytes", 4 * 2**20))


def build(args: dict):
    """For `serve run streamvlm.server.ray_serve:build model=DIR replicas=2 max_sessions=8` and a
    KubeRay RayService's `import_path`: `application`'s arguments (autoscale as "MIN:MAX"), the
    rest `ServerOptions` fields, given as strings or YAML values."""
    from dataclasses import fields

    from .sessions import ServerOptions

    args, kinds = dict(args), {f.name: f.type for f in fields(ServerOptions)}
    top_level = {"model", "device", "dtype", "log_level", "replica_host"}
    if unknown := set(args) - set(kinds) - top_level - {"autoscale", "replicas", "gpus"}:
        raise ValueError(f"unknown streamvlm serve options: {', '.join(sorted(unknown))}")
    autoscale = args.pop("autoscale", None)
    top = {k: args.pop(k) for k in top_level & set(args)}
    return application(
        replicas=int(args.pop("replicas", 1)),
        autoscale=tuple(int(n) for n in str(autoscale).split(":")) if autoscale else None,
        gpus=float(args.pop("gpus", 0)),
        options={k: cast(kinds[k], v) for k, v in args.items()},
        **top,
    )


def cast(kind, value):
    if isinstance(value, str) and kind in ("int", "float", "bool", int, float, bool):
        kind = {"int": int, "float": float, "bool": bool}.get(kind, kind)
        return value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return value


def deploy(model: str | None, options: dict, host: str = "127.0.0.1", port: int = 8000, **kwargs) -> str:
    """Start Serve on host:port (on the Ray cluster `ray.init` finds, or a local one) and deploy
    `application(model, options, **kwargs)`; returns the URL once every replica has reported in."""
    loopback = host in ("127.0.0.1", "localhost", "::1")
    if not ray.is_initialized():
        connect(loopback)
    serve.start(http_options={"host": host, "port": port})
    serve.run(application(model, options, replica_host="127.0.0.1" if loopback else None, **kwargs), name=APP)
    autoscale = kwargs.get("autoscale")
    want = autoscale[0] if autoscale else kwargs.get("replicas", 1)
    deadline = time.monotonic() + 120
    while (up := len(ray.get(registry().live.remote()))) < want:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {up} of {want} replicas reported in 120 s")
        time.sleep(0.2)
    return f"http://{host}:{port}"


def connect(loopback: bool) -> None:
    """Join the cluster `ray start` made on this machine (or $RAY_ADDRESS names); else start a local
    Ray, on 127.0.0.1 when serving on loopback (Ray's own ports too)."""
    address = os.environ.get("RAY_ADDRESS")
    if address != "local":
        try:
            ray.init(address=address or "auto", namespace=NAMESPACE, log_to_driver=False)
            return
        except ConnectionError:
            if address:
                raise
    local = {"_node_ip_address": "127.0.0.1"} if loopback else {}
    ray.init(namespace=NAMESPACE, log_to_driver=False, **local)


def shutdown(keep_serve: bool = False, timeout: float = 60) -> None:
    """Stop the app, its registry and, unless `keep_serve`, Serve itself; Ray is left to the
    caller. Every replica first finishes its sessions, as Ctrl-C does to the single server
    (buffered seconds stepped, sent and written, then `closed`), for at most `timeout` s."""
    with suppress(Exception):
        reg = ray.get_actor(REGISTRY, namespace=NAMESPACE)
        ray.get(reg.stop.remote(), timeout=5)
        deadline = time.monotonic() + timeout
        while not ray.get(reg.finished.remote(), timeout=5):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
    with suppress(Exception):
        serve.delete(APP) if keep_serve else serve.shutdown()
    with suppress(Exception):
        ray.kill(ray.get_actor(REGISTRY, namespace=NAMESPACE))
