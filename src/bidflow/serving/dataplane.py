"""KServe's data plane, leaving v1 JSON bodies to the model as the bytes that arrived.

KServe's ``DataPlane.decode`` parses a v1 JSON body into Python dicts and lists (orjson), and the
model then converts them into its own typed objects: two passes, and one Python object per JSON
value. bidflow's models decode the bytes themselves, straight into typed structs (msgspec), so
this data plane hands plain JSON bodies over undecoded. CloudEvents still go through KServe's
decoding, binary ones (``ce-*`` headers) and structured ones (``application/cloudevents+json``, or
a JSON body that mentions ``specversion``, which KServe also reads as one), as do v2 requests.

v2's binary form (a JSON part, then raw tensor bytes, split at ``inference-header-content-length``)
is checked before KServe reads it: KServe turns a header that is not a length, or a body shorter than
it says, into exceptions the server would answer with a 500; here they are client mistakes (400).
"""

from __future__ import annotations

from typing import Any

from cloudevents.sdk.converters.util import has_binary_headers
from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER, PredictorProtocol
from kserve.errors import InvalidInput
from kserve.protocol.dataplane import DataPlane

from bidflow.serving.errors import RequestError

_STRUCTURED_CLOUDEVENT = "application/cloudevents+json"
_SPECVERSION = b'"specversion"'  # every structured CloudEvent has it; a byte search, not a parse


class RawV1DataPlane(DataPlane):  # type: ignore[misc]  # kserve ships no type information
    """``DataPlane`` whose ``decode`` passes plain v1 JSON bodies through as bytes."""

    def decode(
        self,
        body: Any,
        headers: dict[str, str] | None,
        protocol_version: str = PredictorProtocol.REST_V1.value,
        model_name: str | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        if (
            type(body) is bytes
            and protocol_version == PredictorProtocol.REST_V1.value
            and not (headers and (has_binary_headers(headers) or headers.get("content-type") == _STRUCTURED_CLOUDEVENT))
            and _SPECVERSION not in body
        ):
            return body, {}
        try:
            decoded: tuple[Any, dict[str, Any]] = super().decode(body, headers, protocol_version, model_name)
        except (InvalidInput, RequestError):
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as exc:  # e.g. a binary CloudEvent with no data
            raise RequestError(
                "the CloudEvent cannot be read", field="$", got=f"{type(exc).__name__}: {exc}"[:200]
            ) from exc
        return decoded

    def decode_inference_request(self, body: Any, headers: dict[str, Any], model_name: str) -> Any:
        """KServe's v2 decoding, with the binary form's length header and layout checked first."""
        if not isinstance(body, bytes):
            return super().decode_inference_request(body, headers, model_name)
        raw = headers.get(INFERENCE_CONTENT_LENGTH_HEADER)
        if raw is not None:
            text = str(raw).strip()
            if not text.isdigit() or int(text) > len(body):
                raise RequestError(
                    f"'{INFERENCE_CONTENT_LENGTH_HEADER}' must be the length of the body's JSON part in bytes",
                    field="$",
                    expected=f"an integer from 0 to {len(body)}",
                    got=text[:40],
                )
        try:
            return super().decode_inference_request(body, headers, model_name)
        except (InvalidInput, RequestError):
            raise
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:  # orjson's errors are ValueErrors
            raise RequestError(
                "the binary v2 body cannot be read", field="$", got=f"{type(exc).__name__}: {exc}"[:200]
            ) from exc
