"""Request-body pieces every server reads the same way: JSON bodies, v2 tensors and parameters, ``ts_ms``."""

from __future__ import annotations

from typing import Any, Final

import msgspec
import numpy as np

from bidflow.serving.errors import RequestError

_ANY_JSON: Final = msgspec.json.Decoder()


def bytes_tensor(tensor: Any, where: str) -> list[Any]:
    if tensor.datatype != "BYTES":
        raise RequestError(f"input '{tensor.name}' must be BYTES", field=f"{where}.datatype", got=str(tensor.datatype))
    data = tensor.data
    if isinstance(data, np.ndarray):
        data = data.ravel().tolist()
    if not isinstance(data, list) or not all(isinstance(v, str | bytes) for v in data):
        raise RequestError(f"input '{tensor.name}' must hold strings", field=f"{where}.data")
    return data


def parameter(value: Any) -> Any:
    # gRPC parameters arrive as InferParameter messages; REST ones as plain JSON values.
    for kind in ("int64_param", "string_param"):
        if hasattr(value, kind) and value.HasField(kind):
            return getattr(value, kind)
    return value


def ts_ms(value: Any, where: str, now_ms: int) -> int:
    if value is None:
        return now_ms
    if type(value) is not int or value < 0:
        raise RequestError(
            "ts_ms is the request time in epoch milliseconds", field=where, expected="a non-negative integer",
            got=repr(value)[:40],
        )  # fmt: skip
    return value


def json_body(body: bytes | bytearray) -> Any:
    """The body as generic JSON values (400 when it is not JSON)."""
    try:
        return _ANY_JSON.decode(body)
    except msgspec.DecodeError as exc:
        raise RequestError("request body is not valid JSON", field="$", got=str(exc)[:200]) from exc
    except RecursionError as exc:
        raise RequestError("request body is nested too deeply to decode", field="$") from exc


def type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__
