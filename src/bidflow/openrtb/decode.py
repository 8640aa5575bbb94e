"""Bytes (or parsed JSON) -> validated ``BidRequest``, and back.

Every failure is an ``OpenRTBError`` whose ``path`` names the offending value
(``$.imp[0].banner.w``), so the model server can answer 400 with the field and the CLI can point
at it. Nothing else escapes ``decode_request``, whatever the input.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from bidflow.errors import OpenRTBError
from bidflow.openrtb.context import ValidationContext
from bidflow.openrtb.model import BidRequest
from bidflow.openrtb.rules import validate_request

# Built once: a Decoder compiles the type tree of BidRequest, which is the expensive part.
_DECODER = msgspec.json.Decoder(BidRequest)
_ENCODER = msgspec.json.Encoder()

# msgspec ends a ValidationError with " - at `$.imp[0].w`" (or " - at `key` in `$.ext`").
_AT = re.compile(r" - at `(?P<key>key` in `)?(?P<path>\$[^`]*)`\Z")
_MISSING = re.compile(r"\AObject missing required field `(?P<field>[^`]+)`")
_EXPECTED = re.compile(r"\AExpected `(?P<expected>[^`]+)`, got `(?P<got>[^`]+)`")
_BYTE = re.compile(r"\(byte (?P<pos>\d+)\)")


def decode_request(data: bytes | str, context: ValidationContext | None = None) -> BidRequest:
    """Decode a JSON bid request and check it against the rules.

    Raises:
        OpenRTBError: the input is not JSON, not a BidRequest, or breaks a rule. ``path`` is the
            JSON path of the offending value (``$`` for JSON syntax errors, with the byte offset
            in the message).
    """
    try:
        req = _DECODER.decode(data)
    except msgspec.ValidationError as e:
        raise error_from_validation(e) from e
    except msgspec.DecodeError as e:
        raise _from_decode_error(e) from e
    except UnicodeError as e:
        # Invalid UTF-8 inside a string, or a str holding a lone surrogate that has no UTF-8 form.
        raise OpenRTBError("bid request is not valid UTF-8 text", path="$", got=str(e)) from e
    except RecursionError as e:
        raise OpenRTBError("bid request is nested too deeply to decode", path="$") from e
    validate_request(req, context)
    return req


def decode_request_obj(obj: Any, context: ValidationContext | None = None) -> BidRequest:
    """Like ``decode_request`` for a request already parsed into Python objects (``dict``...).

    For logs that store the request as a JSON object inside a larger record.
    """
    try:
        req = msgspec.convert(obj, BidRequest)
    except msgspec.ValidationError as e:
        raise error_from_validation(e) from e
    except RecursionError as e:
        raise OpenRTBError("bid request is nested too deeply to decode", path="$") from e
    validate_request(req, context)
    return req


def encode_request(req: BidRequest) -> bytes:
    """Encode a request as compact JSON; absent fields are left out and ``ext`` is kept verbatim."""
    return _ENCODER.encode(req)


def error_from_validation(e: msgspec.ValidationError) -> OpenRTBError:
    message = str(e)
    path = "$"
    at = _AT.search(message)
    if at is not None:
        path = at.group("path")
        message = message[: at.start()]
    missing = _MISSING.match(message)
    if missing is not None:
        # Point at the missing field itself, not at the object that lacks it.
        field = missing.group("field")
        return OpenRTBError(
            f"required field {field!r} is missing", path=f"{path}.{field}", expected=f"a value for {field!r}"
        )
    expected = _EXPECTED.match(message)
    if expected is not None:
        # Optional fields show up as "int | null"; null is just "absent", so say what is wanted.
        want = expected.group("expected").replace(" | null", "")
        return OpenRTBError(f"wrong type at {path}", path=path, expected=want, got=expected.group("got"))
    return OpenRTBError(f"invalid value at {path}: {message}", path=path)


def _from_decode_error(e: msgspec.DecodeError) -> OpenRTBError:
    message = str(e)
    pos = _BYTE.search(message)
    where = f" at byte {pos.group('pos')}" if pos is not None else ""
    if message.startswith("Input data was truncated"):
        return OpenRTBError("bid request is not valid JSON: it ends early (truncated or empty)", path="$")
    return OpenRTBError(f"bid request is not valid JSON{where}", path="$", got=message)
