"""KServe's REST (and optionally gRPC) server, configured for bidflow in this one place.

What differs from ``kserve.ModelServer`` and why:

* **Bind address.** KServe binds ``0.0.0.0`` (REST) and ``[::]`` (gRPC) with no option; here the
  host is a parameter, ``127.0.0.1`` by default (tests, the local deployment). A pod passes
  ``--host 0.0.0.0``.
* **No per-request logging.** KServe's ``TimingMiddleware`` writes an INFO line per request, its
  models one more (``enable_latency_logging``), uvicorn an access-log line and the gRPC
  ``LoggingInterceptor`` one per call: about 30 % of a small request's CPU. All are off; latency
  goes to the ``bidflow_serving_request_seconds`` histogram instead.
* **No OpenTelemetry or proxy headers.** FastAPI checks on every request whether an OpenTelemetry
  provider is configured, and uvicorn rewrites the client address from ``X-Forwarded-For``;
  nothing here uses either (metrics are Prometheus'), and both are off: 5-8 % of a request's CPU
  (541 -> 516 µs per auction at one connection, on an Intel Xeon).
* **gRPC off unless asked for** (``grpc_port``): nothing here uses it, and an unused listener is an
  open port.
* **Models load in the background.** The server answers at once; a model that is not loaded yet
  (or failed to load, e.g. the registry is unreachable) answers 503 with the reason, and loading is
  retried. KServe instead refuses to start without a ready model.
* **Errors** go through ``bidflow.serving.errors`` (the one status mapping), and request bodies are
  capped (``BodyLimit``).
* **A settled heap.** Once the models are loaded, everything allocated so far is frozen out of the
  cycle collector's full passes (``settle_heap``): one such pass over a loaded server took 170 ms.
* **uvloop.** uvicorn picks its event loop only in its own ``run``; ``serve`` starts the loop
  itself (for gRPC), so it asks uvicorn for the same loop factory.
* **Several processes** (``workers``): see ``bidflow.serving.workers``; ``/metrics`` then sums
  every worker's metrics (``bidflow.serving.metrics.exposition``).

The endpoints themselves are KServe's (``register_v1_endpoints``, ``register_v2_endpoints``,
``DataPlane``), so the v1 and v2 protocols behave exactly as in any KServe predictor. One
shortcut: v1 predict of a served model, the bid filter's hot path, is handed to KServe's own
``V1Endpoints.predict`` by a middleware (``V1Predict``) behind bidflow's limit and timer, in front
of the FastAPI app (``ServerApp``), instead of passing FastAPI's error, telemetry and body-limit
middleware, its exception middleware, router and route, which would resolve the same two
arguments (the model name and the request) through its dependency machinery. Its errors take the
same mapping as every other route's. Measured with a model that does nothing, 30-partner bodies,
8 connections: 127-141 -> 95-106 µs of CPU per request with the shortcut inside FastAPI's
middleware stack (an AMD EPYC); in front of it, an auction through the ASGI app in-process costs
another 3 µs less (135 -> 132 µs).

Two more, inside KServe's own classes: the data plane leaves v1 JSON bodies undecoded for the
model to decode typed in one pass (``RawV1DataPlane``), and the models run KServe's
preprocess -> predict -> postprocess sequence, with its stage histograms, in a ``__call__`` of
their own for synchronous handlers (``StagedModel.__call__``). Together, on an Intel Xeon with the
default-trained model and 30 partners: 502-541 -> 443-472 µs of CPU per auction at 8 connections,
581-600 -> 495-505 µs at one.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import orjson

from bidflow.serving.errors import DEFAULT_MAX_BODY_BYTES, BodyLimit, error_json, install_error_handlers
from bidflow.serving.metrics import BufferedHistogram, exposition, fold_observations, serving_metrics

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import ASGIApp, Receive, Scope, Send

    from bidflow.serving.staged import StagedModel

log = logging.getLogger(__name__)

LOCALHOST: Final = "127.0.0.1"


@dataclass(frozen=True)
class ServerOptions:
    """Where and how the server listens.

    Attributes:
        host: bind address (``127.0.0.1``: only this machine; ``0.0.0.0`` in a pod).
        http_port: REST port.
        grpc_port: gRPC port; None leaves gRPC off.
        max_body_bytes: largest accepted request body.
        load_retry_s: pause between attempts to load a model that failed to load.
        timeout_keep_alive_s: idle keep-alive connections are closed after this.
        workers: server processes sharing the port (``bidflow.serving.workers``).
    """

    host: str = LOCALHOST
    http_port: int = 8080
    grpc_port: int | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    load_retry_s: float = 10.0
    timeout_keep_alive_s: int = 65
    workers: int = 1


class RequestTimer:
    """ASGI middleware: observe the latency of scoring requests in ``bidflow_serving_request_seconds``.

    Only the predict/infer paths of the served models are timed (and their explain paths, in a
    histogram of their own), each with a buffered histogram
    child (``BufferedHistogram``): one dict lookup, two clock reads and a list append per request.
    """

    def __init__(self, app: ASGIApp, models: Sequence[str]) -> None:
        self.app = app
        metrics = serving_metrics()
        self._timed = {}
        for name in models:
            self._timed[f"/v1/models/{name}:predict"] = BufferedHistogram(metrics.latency.labels(name, "v1"))
            self._timed[f"/v2/models/{name}/infer"] = BufferedHistogram(metrics.latency.labels(name, "v2"))
            self._timed[f"/v1/models/{name}:explain"] = BufferedHistogram(metrics.explain_latency.labels(name))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        histogram = self._timed.get(scope.get("path", "")) if scope["type"] == "http" else None
        if histogram is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            now = time.perf_counter()
            histogram.observe(now - started, now)


class V1Predict:
    """ASGI middleware: ``POST /v1/models/<name>:predict`` of a served model straight to KServe's handler.

    Other requests pass through. Exceptions get the status and body of ``error_response``, as
    FastAPI's handlers give them on every other route.

    Args:
        app: the rest of the application.
        endpoints: KServe's ``V1Endpoints`` over the server's data plane.
        models: names of the served models.
        not_ready_reason: model name -> why it is not ready (for 503 bodies).
    """

    def __init__(
        self, app: ASGIApp, endpoints: Any, models: Sequence[str], not_ready_reason: Callable[[str], str | None]
    ) -> None:
        self.app = app
        self.endpoints = endpoints
        self.not_ready_reason = not_ready_reason
        self._paths = {f"/v1/models/{name}:predict": name for name in models}
        from starlette.requests import Request

        self._request = Request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = self._paths.get(scope.get("path", "")) if scope["type"] == "http" else None
        if name is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        request = self._request(scope, receive)
        try:
            response = await self.endpoints.predict(name, request)
        except Exception as exc:  # the one error mapping, as on every route
            response = error_json(exc, self.not_ready_reason)
        await response(scope, receive, send)


class ServerApp:
    """The server's ASGI application: bidflow's body limit, timer and v1 shortcut in front of KServe's app.

    The three run before FastAPI's own middleware stack (its error, telemetry and body-limit
    layers, which a v1 predict request of a served model never needs: ``V1Predict`` maps its
    errors itself); every other request goes on into the FastAPI app.

    Attributes:
        dataplane: KServe's data plane over the served models (the gRPC servicer uses it too).
        extension: KServe's model repository extension.
    """

    def __init__(self, dataplane: Any, extension: Any, entry: ASGIApp) -> None:
        self.dataplane = dataplane
        self.extension = extension
        self._entry = entry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._entry(scope, receive, send)


def build_app(models: Sequence[StagedModel], options: ServerOptions | None = None) -> ServerApp:
    """The ASGI app: KServe's v1/v2 endpoints over ``models``, bidflow's errors, limits and timing.

    Usable in-process (tests with ``starlette.testclient.TestClient``) as well as by ``serve``.
    """
    from fastapi import FastAPI
    from kserve.model_repository import ModelRepository
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension
    from kserve.protocol.rest.v1_endpoints import V1Endpoints, register_v1_endpoints
    from kserve.protocol.rest.v2_endpoints import register_v2_endpoints

    from bidflow.serving.dataplane import RawV1DataPlane

    options = options or ServerOptions()
    # KServe's endpoints answer with FastAPI's ORJSONResponse, which FastAPI now deprecates: a warning
    # on the first request of every server that is KServe's to act on and tells an operator nothing.
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")
    repository = ModelRepository()
    for model in models:
        model.enable_latency_logging = False  # KServe's INFO line per request
        repository.update(model)
    dataplane = RawV1DataPlane(model_registry=repository)
    extension = ModelRepositoryExtension(model_registry=repository)
    app = FastAPI(
        title="bidflow model server",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        # FastAPI's OpenTelemetry hooks ask the global providers on every request whether anyone
        # listens; this server's telemetry is its Prometheus metrics.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.add_api_route("/", dataplane.live, methods=["GET"])
    app.add_route("/metrics", _metrics, methods=["GET"])  # a plain Starlette route: nothing to validate
    register_v1_endpoints(app, dataplane, extension)
    register_v2_endpoints(app, dataplane, extension)
    by_name = {model.name: model for model in models}

    def not_ready_reason(name: str) -> str | None:
        return getattr(by_name.get(name), "not_ready_reason", None)

    install_error_handlers(app, not_ready_reason)
    for model in models:  # a model that takes notices (the bidder's wins and losses) gets their route
        handler = getattr(model, "notices", None)
        if callable(handler):
            route = _notices_route(handler, not_ready_reason)
            app.add_route(f"/v1/models/{model.name}/notices", route, methods=["POST"])
    shortcut = V1Predict(app, V1Endpoints(dataplane, extension), list(by_name), not_ready_reason)
    # Outermost: the limit refuses before anything else reads the body.
    entry = BodyLimit(RequestTimer(shortcut, list(by_name)), max_bytes=options.max_body_bytes)
    return ServerApp(dataplane, extension, entry)


def _notices_route(
    handler: Callable[[bytes], dict[str, Any]], not_ready_reason: Callable[[str], str | None]
) -> Callable[[Request], Awaitable[Response]]:
    """``POST /v1/models/<name>/notices`` of a model with a ``notices`` handler (the bidder's win and loss
    notices): the body as bytes to the handler, its dict back as JSON, its errors through the one mapping.

    A plain Starlette route on the same server, because KServe routes every path of an
    InferenceService to its predictor: the notices reach the replica wherever it runs.
    """
    from starlette.responses import Response

    async def notices(request: Request) -> Response:
        try:
            body = orjson.dumps(handler(await request.body()))
        except Exception as exc:  # the one error mapping, as on every route
            return error_json(exc, not_ready_reason)
        return Response(body, media_type="application/json")

    return notices


async def _metrics(request: Request) -> Response:
    from starlette.responses import Response

    body, content_type = exposition(request.headers.get("accept"))
    return Response(content=body, headers={"content-type": content_type})


def serve(
    models: Sequence[StagedModel], options: ServerOptions | None = None, sockets: list[socket.socket] | None = None
) -> None:
    """Load ``models`` in the background and serve them until SIGINT/SIGTERM.

    Args:
        models: the models (not loaded yet; ``load()`` is called, and retried, in a thread).
        options: bind address, ports, limits.
        sockets: listen on these instead of binding ``host:http_port`` (worker processes).
    """
    import uvicorn

    options = options or ServerOptions()
    app = build_app(models, options)
    for model in models:
        threading.Thread(target=_load_until_ready, args=(model, options.load_retry_s), daemon=True).start()
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.http_port,
        log_config=None,  # keep the process's logging setup (bidflow's, not uvicorn's)
        access_log=False,  # no line per request
        timeout_keep_alive=options.timeout_keep_alive_s,
        loop="auto",  # uvloop and httptools when installed (they are, with kserve)
        http="auto",
        proxy_headers=False,  # nothing reads the client's address; rewriting it cost every request
    )
    server = uvicorn.Server(config)

    async def run() -> None:
        grpc = await _start_grpc(app, options) if options.grpc_port is not None else None
        folding = asyncio.create_task(_fold_forever())
        try:
            await server.serve(sockets=sockets)  # returns on SIGINT/SIGTERM (uvicorn's handlers)
        finally:
            folding.cancel()
            if grpc is not None:
                await grpc.stop(grace=5)

    log.info("listening on http://%s:%d (gRPC: %s)", options.host, options.http_port, options.grpc_port or "off")
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(run())
    for model in models:
        model.stop()


async def _fold_forever(every_s: float = 1.0) -> None:
    """Add the buffered histogram observations at least once a second, traffic or not.

    On the event loop, where they are made (``BufferedHistogram`` is not thread-safe): with
    several workers, a scrape answered by one reads what the others folded into the shared files.
    """
    while True:
        await asyncio.sleep(every_s)
        fold_observations()


def _load_until_ready(model: StagedModel, retry_s: float) -> None:
    while not model.load():
        time.sleep(retry_s)
    settle_heap()


def settle_heap() -> None:
    """Exempt everything loaded so far from the cycle collector's full passes.

    A loaded server holds about 300,000 tracked objects (feast, mlflow, the model), and a full
    collection walks them all: about 170 ms here, every request of that moment waiting, whenever
    enough new objects have outlived two younger collections. Frozen, they are never walked again.
    The cost: cyclic garbage among them (a model replaced by a reload) is never freed.
    """
    gc.collect()
    gc.freeze()


async def _start_grpc(app: ServerApp, options: ServerOptions) -> Any:
    """KServe's gRPC v2 servicer on ``host:grpc_port``, without its per-call logging interceptor."""
    from concurrent import futures

    from grpc import aio  # type: ignore[import-untyped]
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
    from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor
    from kserve.protocol.grpc.servicer import InferenceServicer

    servicer = InferenceServicer(app.dataplane, app.extension)
    server = aio.server(futures.ThreadPoolExecutor(max_workers=1), interceptors=(ExceptionToStatusInterceptor(),))
    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"{options.host}:{options.grpc_port}")
    await server.start()
    return server
