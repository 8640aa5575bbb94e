"""KServe's data plane, leaving v1 JSON bodies to the model as the bytes that arrived.

KServe's ``DataPlane.decode`` parses a v1 JSON body into Python dicts and lists (orjson), and the
model then converts them into its own typed objects: two passes, and one Python object per JSON
value. bidflow's models decode the bytes themselves, straight into typed structs (msgspec), so
this data plane hands plain JSON bodies over undecoded. CloudEvents still go through KServe's
decoding, binary ones (``ce-*`` headers) and structured ones (``application/cloudevents+json``, or
a JSON body that mentions ``specversion``, which KServe also reads as one), as do v2 requests.
"""

from __future__ import annotations

from typing import Any

from cloudevents.sdk.converters.util import has_binary_headers
from kserve.constants.constants import PredictorProtocol
from kserve.protocol.dataplane import DataPlane

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
        decoded: tuple[Any, dict[str, Any]] = super().decode(body, headers, protocol_version, model_name)
        return decoded
