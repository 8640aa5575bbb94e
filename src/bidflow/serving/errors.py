"""Every error of the model server mapped to its HTTP status, in this one place.

=======================================================  ======  =====================================
raised                                                   status  body
=======================================================  ======  =====================================
``RequestError`` (bad envelope, bad OpenRTB, too large)  400     error, field (JSON path in the body)
KServe's ``InvalidInput`` (body is not JSON, v1)         400     error, field ``$``
FastAPI ``RequestValidationError`` (v2 body schema)      400     error, field from its location
KServe's ``ModelNotReady`` (not loaded, or failed to)    503     error, reason (why it is not ready)
``Unavailable`` (a store the answer needs is down)       503     error, reason (what failed)
KServe's ``ModelNotFound``                               404     error (KServe's own handler)
Starlette's ``HTTPException`` (unknown path, method)     4xx     error (its detail)
any other exception (a bug)                              500     error (logged with its traceback)
=======================================================  ======  =====================================

The online feature store never appears here: when it is down or slow the bid filter *fails open*
(calls every partner) and counts it (``bidflow.serving.online``), so a store outage is never a 5xx.

Every answer of 500 or more is counted here, in ``bidflow_serving_server_errors_total{status}`` (the
alerts' 5xx share), and nowhere on the success path.

``field`` is a JSON path into the posted body. A bid request inside a v2 ``BYTES`` tensor is a JSON
document within a string; its paths are appended to the tensor element's path as if it were
inline (``$.inputs[0].data[0].imp[0].banner.w``), so one rule names a field in both protocols.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final

import orjson

from bidflow.errors import BidflowError, OpenRTBError
from bidflow.serving.metrics import serving_metrics

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from starlette.responses import Response
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES: Final = 256 * 1024  # Prebid requests with many imps reach tens of KiB
_NOT_IN_BODY: Final = frozenset({"body", "InferenceRequest"})  # FastAPI/pydantic location parts


class RequestError(BidflowError):
    """The client sent something the server cannot score (HTTP 400); ``field`` names the value."""

    def __init__(self, what: str, *, field: str = "$", expected: str | None = None, got: str | None = None) -> None:
        self.field = field
        super().__init__(what, where=field, expected=expected, got=got)

    @classmethod
    def from_openrtb(cls, error: OpenRTBError, prefix: str) -> RequestError:
        """An OpenRTB decoding error, its path moved under ``prefix`` (where the request sits)."""
        return cls(error.what, field=prefix + error.path[1:], expected=error.expected, got=error.got)


class BodyTooLarge(RequestError):
    """The body exceeds the server's limit (read no further than the limit)."""


class Unavailable(BidflowError):
    """A store the answer depends on is down or slow (HTTP 503): the client may retry the same request.

    Only for requests that cannot be answered safely without it (the bidder's notices); scoring
    requests degrade instead (fail open, or a bid of 0) and never raise it.
    """


def error_response(exc: BaseException, not_ready_reason: Callable[[str], str | None]) -> tuple[int, dict[str, Any]]:
    """The status and JSON body for ``exc`` (the one mapping; see the module docstring).

    Args:
        exc: what was raised while serving a request.
        not_ready_reason: model name -> why it is not ready (None when unknown).
    """
    from fastapi.exceptions import RequestValidationError
    from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady
    from starlette.exceptions import HTTPException

    if isinstance(exc, RequestError):
        body: dict[str, Any] = {"error": exc.what, "field": exc.field}
        if exc.expected is not None:
            body["expected"] = exc.expected
        if exc.got is not None:
            body["got"] = exc.got
        return HTTPStatus.BAD_REQUEST, body
    if isinstance(exc, Unavailable):
        return HTTPStatus.SERVICE_UNAVAILABLE, {"error": exc.what, "reason": exc.got or "unavailable"}
    if isinstance(exc, InvalidInput):
        return HTTPStatus.BAD_REQUEST, {"error": f"request body is not valid: {exc.reason}", "field": "$"}
    if isinstance(exc, RequestValidationError):
        return HTTPStatus.BAD_REQUEST, _validation_body(exc.errors())
    if isinstance(exc, ModelNotReady):
        name = str(exc.model_name)
        reason = not_ready_reason(name) or "the model is loading"
        return HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"model '{name}' is not ready", "reason": reason}
    if isinstance(exc, ModelNotFound):
        return HTTPStatus.NOT_FOUND, {"error": str(exc)}
    if isinstance(exc, HTTPException) and exc.status_code < 500:  # routing: an unknown path, a wrong method
        return exc.status_code, {"error": str(exc.detail)}
    log.error("unexpected error while serving a request", exc_info=exc)
    return HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"internal error: {type(exc).__name__}"}


def error_json(exc: BaseException, not_ready_reason: Callable[[str], str | None]) -> Response:
    """``error_response`` as a JSON response."""
    from starlette.responses import Response

    status, body = error_response(exc, not_ready_reason)
    if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
        serving_metrics().server_errors.labels(str(int(status))).inc()
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def install_error_handlers(app: FastAPI, not_ready_reason: Callable[[str], str | None]) -> None:
    """Route every exception of ``app`` through ``error_response`` (replacing KServe's handlers)."""
    from fastapi.exceptions import RequestValidationError
    from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady

    async def handle(_: Request, exc: Exception) -> Response:
        return error_json(exc, not_ready_reason)

    from starlette.exceptions import HTTPException

    for kind in (
        RequestError,
        Unavailable,
        InvalidInput,
        RequestValidationError,
        ModelNotReady,
        ModelNotFound,
        HTTPException,
        Exception,
    ):
        app.add_exception_handler(kind, handle)


def _validation_body(errors: Sequence[Any]) -> dict[str, Any]:
    """FastAPI's first validation error as ``error`` + ``field`` (its location as a JSON path).

    KServe declares the v2 body as ``InferenceRequest | bytes``: pydantic reports a failure for each
    member of the union, and puts the member's name in the location. The ``InferenceRequest`` one is
    what the client meant; the member names are not part of the body's path.
    """
    relevant = [e for e in errors if "bytes" not in e.get("loc", ())] or list(errors)
    if not relevant:
        return {"error": "request body is not valid", "field": "$"}
    first = relevant[0]
    if first.get("type") == "json_invalid":
        return {"error": "request body is not valid JSON", "field": "$", "got": str(first.get("msg"))}
    location = [part for part in first.get("loc", ()) if part not in _NOT_IN_BODY]
    field = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in location)
    body = {"error": str(first.get("msg", "invalid value")), "field": field}
    if len(relevant) > 1:
        body["more"] = f"{len(relevant) - 1} more problem(s)"
    return body


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with a 400 before reading them whole.

    A declared ``content-length`` over the limit is refused at once; a chunked body is counted as
    it streams and refused as soon as it passes the limit. (400 rather than 413: the API answers
    every client mistake with 400 and a field, and the field here is the whole body.)
    """

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT"):
            await self.app(scope, receive, send)
            return
        for key, value in scope["headers"]:
            if key == b"content-length":
                if not value.isdigit() or int(value) > self.max_bytes:
                    await self._refuse(send, value.decode("latin-1"))
                    return
                await self.app(scope, receive, send)  # the server enforces the declared length
                return
        await self.app(scope, self._counting(receive), send)

    def _counting(self, receive: Receive) -> Receive:
        seen = 0
        limit = self.max_bytes

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(
                        "request body is too large", field="$", expected=f"at most {limit} bytes", got=f"{seen}+"
                    )
            return message

        return counted

    async def _refuse(self, send: Send, length: str) -> None:
        body = orjson.dumps(
            {
                "error": "request body is too large",
                "field": "$",
                "expected": f"at most {self.max_bytes} bytes",
                "got": f"content-length {length}",
            }
        )
        await send(
            {
                "type": "http.response.start",
                "status": HTTPStatus.BAD_REQUEST,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
