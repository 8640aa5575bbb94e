"""The local deployment's front door: traffic split, payload logging and the admin API.

Clients call the router exactly as they would call a model server (KServe v1/v2 paths). For each
scoring request it reads the request id (``instances[0].request.id`` in v1, the infer request's
``id`` in v2), picks champion or canary with ``bidflow.deploy.split.route`` and forwards the body
unchanged. Everything else (health, model metadata) goes to the champion.

Served payloads (request and response bodies, which model answered) are queued for the drift
monitor and sent in batches by a background task: the request path never waits on the monitor,
and when the queue is full new payloads are dropped and counted, never the request.

``GET /metrics`` is the router's own Prometheus metrics (``bidflow.deploy.router_metrics``), not
the champion's: each model server is scraped on its own port.

Admin API (used by ``bidflow canary ...`` and the monitor, on the same loopback address):
``GET /admin/state``, ``GET /admin/transitions``, ``GET /admin/metrics``,
``POST /admin/deploy | /admin/promote | /admin/rollback`` (JSON: ``actor``, ``reasons``,
``metrics``; deploy also ``model`` and ``percent``).

Explain requests (``POST /v1/models/<name>:explain``) are not split: they go to the champion, or to
the role their ``x-bidflow-role`` header names (the drift monitor explains a drifted canary's
traffic on the canary's own server). They are not scoring: no statistics, nothing sent to the monitor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import msgspec

from bidflow.deploy.backend import ModelVersion, Role
from bidflow.deploy.split import route
from bidflow.errors import BidflowError, ConflictError, StateUnavailable
from bidflow.kinds import registered_name
from bidflow.monitoring.auth import authorized

if TYPE_CHECKING:
    from pathlib import Path

    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from bidflow.config import Config
    from bidflow.deploy.canary import Controller
    from bidflow.deploy.local import ProcessBackend, Server

log = logging.getLogger(__name__)

ROLE_HEADER: Final = "x-bidflow-role"  # an explain request names the role whose model explains it
_HOP_HEADERS: Final = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host"})
_LATENCY_SAMPLES: Final = 50_000
_FLUSH_S: Final = 0.5


class _Req(msgspec.Struct):
    id: str = ""


class _Instance(msgspec.Struct):
    request: _Req = msgspec.field(default_factory=_Req)


class _V1(msgspec.Struct):
    instances: list[_Instance] = msgspec.field(default_factory=list)


class _V2(msgspec.Struct):
    id: str = ""


_V1_DECODER: Final = msgspec.json.Decoder(_V1)
_V2_DECODER: Final = msgspec.json.Decoder(_V2)


def request_id(path: str, body: bytes) -> str:
    """The id the split hashes: the (first) auction's id; the body itself when it has none."""
    try:
        if path.startswith("/v2/"):
            found = _V2_DECODER.decode(body).id
        else:
            instances = _V1_DECODER.decode(body).instances
            found = instances[0].request.id if instances else ""
    except (msgspec.DecodeError, msgspec.ValidationError):
        found = ""
    return found or body.decode("utf-8", "replace")


@dataclass
class RoleStats:
    """Requests, errors and latencies one side served since the last transition."""

    requests: int = 0
    errors: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=_LATENCY_SAMPLES))

    def to_dict(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms)

        def pct(q: float) -> float | None:
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3) if ordered else None

        return {
            "requests": self.requests,
            "errors": self.errors,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
        }


class PayloadLogger:
    """Batches served payloads to the monitor's ``POST /v1/payloads`` off the request path."""

    def __init__(self, url: str, batch: int, queue: int, token: str | None = None) -> None:
        self.url = url.rstrip("/") + "/v1/payloads"
        self.headers = {"content-type": "application/json"} | ({"authorization": f"Bearer {token}"} if token else {})
        self.batch = batch
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=queue)
        self.dropped = 0
        self.sent = 0
        self.failed_batches = 0

    def offer(self, role: Role, model: ModelVersion, request: bytes, response: bytes) -> None:
        record = b"".join(
            (
                b'{"role":"', role.encode(), b'","version":', msgspec.json.encode(model.version),
                b',"ts":', str(time.time()).encode(), b',"request":', request, b',"response":', response, b"}",
            )
        )  # fmt: skip
        try:
            self.queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped += 1

    async def run(self, client: httpx.AsyncClient) -> None:
        while True:
            records = [await self.queue.get()]
            deadline = time.monotonic() + _FLUSH_S
            while len(records) < self.batch and (left := deadline - time.monotonic()) > 0:
                try:
                    records.append(await asyncio.wait_for(self.queue.get(), timeout=left))
                except TimeoutError:
                    break
            body = b'{"records":[' + b",".join(records) + b"]}"
            try:
                response = await client.post(self.url, content=body, headers=self.headers)
                response.raise_for_status()
                self.sent += len(records)
            except Exception as exc:  # the monitor being down must never reach the request path
                self.failed_batches += 1
                self.dropped += len(records)
                log.debug("payload batch not delivered: %s", exc)


@dataclass
class RouterState:
    """What the ASGI handlers share."""

    controller: Controller
    backend: ProcessBackend
    payloads: PayloadLogger | None
    token: str | None = None  # what a transition request must carry (bidflow.monitoring.auth); None: no check
    stats: dict[Role, RoleStats] = field(default_factory=lambda: {"champion": RoleStats(), "canary": RoleStats()})
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Requests and errors of the stretches before the last transition (the metrics' counters never go back).
    served: dict[Role, list[int]] = field(default_factory=lambda: {"champion": [0, 0], "canary": [0, 0]})
    transitions: dict[str, int] = field(default_factory=dict)  # per action, since the router started

    def reset_stats(self) -> None:
        for role, stats in self.stats.items():
            self.served[role][0] += stats.requests
            self.served[role][1] += stats.errors
        self.stats = {"champion": RoleStats(), "canary": RoleStats()}


def _other_route(state: RouterState, failed: Role) -> tuple[Role, Server] | None:
    """The other role's server, counted in flight (under the routes' lock), or None when there is none."""
    with state.backend.routes_lock:
        routes = state.backend.routes
        other: Role = "champion" if failed == "canary" else "canary"
        server = routes.champion if other == "champion" else routes.canary
        if server is None:
            return None
        server.inflight += 1
        return other, server


def build_router(state: RouterState) -> Starlette:
    """The router's ASGI app over ``state`` (in-process tests use it directly)."""
    import httpx
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from bidflow.deploy.router_metrics import RouterMetrics

    client = httpx.AsyncClient(timeout=httpx.Timeout(30.0), limits=httpx.Limits(max_keepalive_connections=64))
    background: list[asyncio.Task[None]] = []

    async def proxy(request: Request) -> Response:
        # The body first: nothing may be awaited between picking a server and counting the request on it.
        body = await request.body()
        path = request.url.path
        scoring = request.method == "POST" and (path.endswith(":predict") or path.endswith("/infer"))
        asked = request.headers.get(ROLE_HEADER, "champion")
        explain = request.method == "POST" and path.endswith(":explain")
        if explain and asked not in ("champion", "canary"):
            return JSONResponse({"error": f"'{ROLE_HEADER}' names a role: champion or canary", "got": asked}, 400)
        # Picking a server and counting the request in flight on it is one step under the lock a transition holds
        # to replace the routes: a server that left the routes has every request that picked it counted, so it is
        # not stopped under them (no await in here).
        with state.backend.routes_lock:
            routes = state.backend.routes
            if routes.champion is None:
                return JSONResponse({"error": "no model deployed yet: `bidflow canary deploy --version N`"}, 503)
            role: Role = route(request_id(path, body), routes.percent) if scoring and routes.canary else "champion"
            if explain:
                if asked == "canary" and routes.canary is None:
                    return JSONResponse({"error": "no canary is deployed to explain"}, 409)
                role = "canary" if asked == "canary" else "champion"
            server: Server = routes.canary if role == "canary" and routes.canary is not None else routes.champion
            server.inflight += 1
        # Surrounding white space is not part of a header's value (RFC 9110), and the client refuses to send it.
        headers = {k: v.strip() for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        # Forwarded as it arrived (still percent-encoded): the decoded path may hold what no URL can (a NUL).
        raw_path = request.scope.get("raw_path") or path.encode()
        target = raw_path.decode("latin-1") + ("?" + request.url.query if request.url.query else "")

        async def forward(to: Server) -> httpx.Response:
            try:
                return await client.request(
                    request.method, f"http://{state.backend.cfg.host}:{to.port}{target}", content=body, headers=headers
                )
            finally:
                to.inflight -= 1

        started = time.perf_counter()
        try:
            upstream = await forward(server)
        except (httpx.LocalProtocolError, httpx.InvalidURL) as exc:  # the client's request cannot be forwarded
            return JSONResponse({"error": f"the request cannot be forwarded: {exc}"}, 400)
        except httpx.HTTPError as exc:
            state.stats[role].requests += 1
            state.stats[role].errors += 1  # counted against the role that failed: the analysis sees a dead canary
            other = _other_route(state, role) if scoring and isinstance(exc, httpx.ConnectError) else None
            if other is None:
                return JSONResponse({"error": f"{role} model server unreachable: {exc}"}, 502)
            # The connection was refused, so nothing reached the dead server: the auction is scored by the other
            # role's server instead, and a killed model server costs no auction while it is replaced.
            role, server = other
            try:
                upstream = await forward(server)
            except httpx.HTTPError as again:
                state.stats[role].requests += 1
                state.stats[role].errors += 1
                return JSONResponse({"error": f"no model server reachable: {exc}; then {again}"}, 502)
        stats = state.stats[role]
        if scoring:
            stats.requests += 1
            stats.latencies_ms.append((time.perf_counter() - started) * 1000)
            if upstream.status_code >= 500:
                stats.errors += 1
            elif upstream.status_code == 200 and state.payloads is not None:
                state.payloads.offer(role, server.model, body, upstream.content)
        out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS}
        out_headers["x-bidflow-role"] = role
        out_headers["x-bidflow-model-version"] = server.model.version
        return Response(upstream.content, upstream.status_code, out_headers)

    registry = CollectorRegistry()
    registry.register(RouterMetrics(state))

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def admin_state(_: Request) -> Response:
        return JSONResponse(state.controller.status().to_dict())

    async def admin_transitions(_: Request) -> Response:
        return JSONResponse([t.to_dict() for t in state.controller.transitions()])

    async def admin_metrics(_: Request) -> Response:
        payloads = state.payloads
        return JSONResponse(
            {role: s.to_dict() for role, s in state.stats.items()}
            | {
                "payloads": {
                    "sent": payloads.sent,
                    "dropped": payloads.dropped,
                    "failed_batches": payloads.failed_batches,
                }
                if payloads
                else None
            }
        )

    def transition(act: Callable[[dict[str, Any]], Any]) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            if state.token is not None and not authorized(request.headers.get("authorization"), None, state.token):
                return JSONResponse({"error": "moving traffic needs the deployment's bearer token"}, 401)
            try:
                body = await request.json()
            except ValueError:
                return JSONResponse({"error": "the body must be JSON"}, 400)
            if not isinstance(body, dict):
                return JSONResponse({"error": "the body must be a JSON object"}, 400)
            async with state.lock:  # one transition at a time
                try:
                    done = await asyncio.to_thread(act, body)
                except ConflictError as exc:
                    return JSONResponse({"error": exc.render()}, 409)
                except StateUnavailable as exc:  # the router's own disk, not the request: a server-side 503
                    return JSONResponse({"error": exc.render()}, 503)
                except BidflowError as exc:
                    return JSONResponse({"error": exc.render()}, 400)
                except (KeyError, TypeError, ValueError) as exc:
                    return JSONResponse({"error": f"bad admin request: {exc!r}"}, 400)
                state.reset_stats()
                state.transitions[done.action] = state.transitions.get(done.action, 0) + 1
            return JSONResponse(done.to_dict())

        return handler

    def why(body: dict[str, Any]) -> dict[str, Any]:
        return {
            "actor": str(body.get("actor", "unknown")),
            "reasons": [str(r) for r in body.get("reasons", [])],
            "metrics": body.get("metrics") or {},
            "expect": None if body.get("expect") is None else str(body["expect"]),
        }

    def expect_canary(body: dict[str, Any]) -> str | None:
        return None if body.get("expect_canary") is None else str(body["expect_canary"])

    def deploy(body: dict[str, Any]) -> Any:
        model = ModelVersion.from_dict(body["model"])
        return state.controller.deploy(model, int(body["percent"]), **why(body))

    def promote(body: dict[str, Any]) -> Any:
        return state.controller.promote(**why(body), expect_canary=expect_canary(body))

    def rollback(body: dict[str, Any]) -> Any:
        return state.controller.rollback(**why(body), expect_canary=expect_canary(body))

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        monitor = httpx.AsyncClient(timeout=httpx.Timeout(5.0))
        if state.payloads is not None:
            background.append(asyncio.create_task(state.payloads.run(monitor)))
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            await client.aclose()
            await monitor.aclose()
            # Here and not after the server returns: uvicorn re-raises the SIGTERM it caught once it
            # has shut down, and the default handler ends the process before any code after it runs,
            # which left the model servers running (and holding their ports) after every stop.
            await asyncio.to_thread(state.backend.shutdown)

    routes = [
        Route("/admin/state", admin_state, methods=["GET"]),
        Route("/admin/transitions", admin_transitions, methods=["GET"]),
        Route("/admin/metrics", admin_metrics, methods=["GET"]),
        Route("/admin/deploy", transition(deploy), methods=["POST"]),
        Route("/admin/promote", transition(promote), methods=["POST"]),
        Route("/admin/rollback", transition(rollback), methods=["POST"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/{path:path}", proxy, methods=["GET", "POST"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def serve_router(config: Config, config_path: Path | None = None) -> None:
    """Run the local deployment (router + model servers) until SIGINT/SIGTERM.

    The state the journal commits to is restored first (``bidflow.deploy.local.recover``: a transition
    interrupted by a crash is completed, servers a killed router left running are adopted or stopped),
    so a restarted router serves what was recorded.
    """
    import uvicorn

    from bidflow.deploy.canary import Controller, registry_mirror
    from bidflow.deploy.journal import FileLog
    from bidflow.deploy.local import ProcessBackend, recover

    cfg = config.canary
    backend = ProcessBackend(cfg, registered_name(config, config.canary.kind), config_path)
    journal = FileLog(cfg.state / "transitions.jsonl")
    restored = recover(backend, journal)
    if restored is not None:
        log.info("restored the recorded deployment: champion v%s, canary %s",
                 restored.champion.version if restored.champion else "-",
                 f"v{restored.canary.version}" if restored.canary else "-")  # fmt: skip
    controller = Controller(backend, journal, registry_mirror(config))
    payloads = None
    if cfg.monitor_url:
        from bidflow.monitoring.auth import monitor_token

        token = monitor_token(config)  # the monitor's intake refuses payloads without it
        payloads = PayloadLogger(cfg.monitor_url, config.monitor.payload_batch, config.monitor.payload_queue, token)
    from bidflow.monitoring.auth import monitor_token

    # The same token as the monitor's intake: only the deployment's own processes (the CLI, the monitor) hold it.
    app = build_router(RouterState(controller, backend, payloads, monitor_token(config)))
    server = uvicorn.Server(
        uvicorn.Config(app, host=cfg.host, port=cfg.router_port, log_config=None, access_log=False, lifespan="on")
    )
    log.info("router on http://%s:%d (state in %s)", cfg.host, cfg.router_port, cfg.state)
    try:
        server.run()
    finally:
        backend.shutdown()  # after an error or Ctrl-C; a second call finds nothing left to stop
