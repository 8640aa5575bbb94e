"""The drift monitor's HTTP face: payloads and outcomes in, status and Prometheus metrics out.

Endpoints:

* ``POST /v1/payloads``: ``{"records": [{"role", "version", "ts", "request", "response"}, ...]}``,
  the batches the local router sends.
* ``POST /``: KServe's payload logger (CloudEvents in binary mode: ``ce-id``, ``ce-type`` ending in
  ``request`` or ``response``, the body as served). A request and its response are paired by
  ``ce-id``; the role is found from the model version in the response (the body's ``model_version``,
  or the first prediction's for the bid filter) and the deployment's state. The monitor's kind maps
  the pair to rows, as it does the router's batches.
* ``POST /v1/outcomes``: ``{"records": [{"id": <auction id>, "bids": [partner, ...]}]}``.
* ``GET /status`` (JSON), ``GET /metrics`` (Prometheus), ``GET /healthz``.

A body that is not JSON, or a record that cannot be read, is answered 400 or counted as bad; it
never stops the monitor.

The three ``POST`` routes are the trust boundary (they can roll a canary back): with a token
(``bidflow.monitoring.auth``) they answer 401 to any sender without it, and a record's role is never
taken from the record: it is the role the deployment's state gives the version that answered
(champion or canary), and a record from any other version is counted as bad and dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from bidflow.monitoring.watch import Monitor

log = logging.getLogger(__name__)

_PENDING_EVENTS: Final = 10_000
_MAX_BODY_BYTES: Final = 32 * 1024 * 1024  # a full router batch of large auctions fits many times over
_MAX_RECORDS: Final = 10_000  # per request; the router sends monitor.payload_batch at a time
_STATE_TTL_S: Final = 5.0


class MonitorMetrics(Collector):
    """Reads the monitor's state at scrape time (nothing is counted twice)."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Any]:
        status = self.monitor.status(history=False)  # a scrape needs the latest window per role, not all of them
        p_values = GaugeMetricFamily(
            "bidflow_drift_p_value", "p-value of the latest drift test per feature", labels=["role", "feature"]
        )
        flags = GaugeMetricFamily(
            "bidflow_drift_detected", "1 when the latest window drifted on the feature", labels=["role", "feature"]
        )
        fill = GaugeMetricFamily("bidflow_drift_window_fill", "auctions in the open window", labels=["role"])
        size = GaugeMetricFamily("bidflow_drift_window_size", "auctions per detection window", labels=["role"])
        recall = GaugeMetricFamily("bidflow_online_bid_recall", "bids kept on the exploration share", labels=["role"])
        for role, latest in status["latest"].items():
            for feature in latest["report"]["features"]:
                p_values.add_metric([role, feature["name"]], feature["p_value"])
                flags.add_metric([role, feature["name"]], float(feature["drift"]))
        for role, figures in status["roles"].items():
            fill.add_metric([role], figures["window_fill"])
            size.add_metric([role], figures["window_size"])
            if figures["online_recall"] is not None:
                recall.add_metric([role], figures["online_recall"])
        counts = CounterMetricFamily(
            "bidflow_monitor_events", "payloads, auctions, bad records, actions", labels=["kind"]
        )
        for kind, value in status["counts"].items():
            counts.add_metric([kind], value)
        yield from (p_values, flags, fill, size, recall, counts)


def build_app(monitor: Monitor, token: str | None = None) -> Starlette:
    """The monitor's ASGI app over ``monitor``; with ``token``, the intake answers only senders holding it."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from bidflow.monitoring.auth import QUERY_PARAMETER, authorized

    registry = CollectorRegistry()
    registry.register(MonitorMetrics(monitor))
    pending: OrderedDict[str, dict[str, Any]] = OrderedDict()
    versions: dict[str, Any] = {"at": 0.0, "roles": {}}

    def refused(request: Request) -> Response | None:
        if token is None or authorized(
            request.headers.get("authorization"), request.query_params.get(QUERY_PARAMETER), token
        ):
            return None
        monitor.counts["unauthorized"] = monitor.counts.get("unauthorized", 0) + 1
        return JSONResponse({"error": "the monitor's intake needs its bearer token"}, 401)

    async def records(request: Request) -> list[Any] | Response:
        if (refusal := refused(request)) is not None:
            return refusal
        raw = await bounded_body(request)
        if raw is None:
            return JSONResponse({"error": f"the body is larger than {_MAX_BODY_BYTES} bytes"}, 413)
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            return JSONResponse({"error": "the body is not JSON"}, 400)
        found = body.get("records") if isinstance(body, dict) else None
        if not isinstance(found, list):
            return JSONResponse({"error": "the body needs a 'records' list"}, 400)
        if len(found) > _MAX_RECORDS:
            return JSONResponse({"error": f"at most {_MAX_RECORDS} records per request"}, 413)
        return found

    async def bounded_body(request: Request) -> bytes | None:
        """The body, or None once it grows past the limit (read no further: a flood costs no memory)."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > _MAX_BODY_BYTES:
            return None
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > _MAX_BODY_BYTES:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def payloads(request: Request) -> Response:
        found = await records(request)
        if isinstance(found, Response):
            return found
        trusted = await asyncio.to_thread(_with_served_roles, found, monitor, versions)
        read = await asyncio.to_thread(monitor.payloads, trusted)
        return JSONResponse({"received": len(found), "auctions": read})

    async def outcomes(request: Request) -> Response:
        found = await records(request)
        if isinstance(found, Response):
            return found
        matched = await asyncio.to_thread(monitor.outcomes, found)
        return JSONResponse({"received": len(found), "matched": matched})

    async def cloud_event(request: Request) -> Response:
        if (refusal := refused(request)) is not None:
            return refusal
        event_id, kind = request.headers.get("ce-id"), request.headers.get("ce-type", "")
        raw = await bounded_body(request)
        if raw is None:
            monitor.counts["bad"] += 1
            return JSONResponse({"error": f"the event is larger than {_MAX_BODY_BYTES} bytes"}, 413)
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            monitor.counts["bad"] += 1
            return JSONResponse({"error": "the event body is not JSON"}, 400)
        if not event_id or not kind.endswith(("request", "response")):
            monitor.counts["bad"] += 1
            return JSONResponse({"error": "not a KServe inference CloudEvent (ce-id, ce-type)"}, 400)
        half = pending.setdefault(event_id, {})
        half["request" if kind.endswith("request") else "response"] = body
        while len(pending) > _PENDING_EVENTS:
            pending.popitem(last=False)
        if "request" in half and "response" in half:
            del pending[event_id]
            record = await asyncio.to_thread(_as_record, half, monitor, versions)
            if record is None:
                monitor.counts["bad"] += 1
            else:
                await asyncio.to_thread(monitor.payloads, [record])
        return Response(status_code=202)

    async def status(_: Request) -> Response:
        return JSONResponse(monitor.status())

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    async def healthz(_: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/v1/payloads", payloads, methods=["POST"]),
            Route("/v1/outcomes", outcomes, methods=["POST"]),
            Route("/", cloud_event, methods=["POST"]),
            Route("/status", status, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


def _served_role(version: str, monitor: Monitor, versions: dict[str, Any]) -> tuple[str, str] | None:
    """(role, version) the deployment's state gives ``version`` (read at most every few seconds).

    None: the deployment serves no such version. Without a controller (``--watch-only``) nothing can
    be checked and the version counts as the champion's, which can never be rolled back.
    """
    if monitor.controller is None:
        return "champion", version
    if time.monotonic() - versions["at"] > _STATE_TTL_S:
        state = monitor.controller.status()
        roles: dict[str, tuple[str, str]] = {}
        for role, model in (("champion", state.champion), ("canary", state.canary)):
            if model is not None:  # a server loaded from a URI reports the URI as its version
                roles |= {model.version: (role, model.version), model.uri: (role, model.version)}
        versions["roles"] = roles
        versions["at"] = time.monotonic()
    found: tuple[str, str] | None = versions["roles"].get(version)
    return found


def _with_served_roles(records: list[Any], monitor: Monitor, versions: dict[str, Any]) -> list[dict[str, Any]]:
    """The records with the roles the deployment gives their versions; the others counted as bad and dropped."""
    kept = []
    for record in records:
        version = str(record.get("version")) if isinstance(record, dict) else None
        served = _served_role(version, monitor, versions) if version else None
        if served is None:
            monitor.counts["bad"] += 1
            continue
        kept.append(record | {"role": served[0], "version": served[1]})
    return kept


def _as_record(half: dict[str, Any], monitor: Monitor, versions: dict[str, Any]) -> dict[str, Any] | None:
    """A logged request/response pair as a payload record; the role from the answering version."""
    version = _answering_version(half["response"])
    if version is None:
        return None
    served = _served_role(version, monitor, versions)
    if served is None:
        return None
    role, version = served
    return {
        "role": role,
        "version": version,
        "ts": time.time(),
        "request": half["request"],
        "response": half["response"],
    }


def _answering_version(response: Any) -> str | None:
    """The model version a response names: at its top (instance kinds) or in its first prediction (the bid filter)."""
    if not isinstance(response, dict) or not response.get("predictions"):
        return None
    if response.get("model_version") is not None:
        return str(response["model_version"])
    first = response["predictions"][0]
    return str(first.get("model_version")) if isinstance(first, dict) else None
