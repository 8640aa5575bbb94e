"""Request-body pieces every server reads the same way: JSON bodies, v2 tensors and parameters, ``ts_ms``."""

from __future__ import annotations

from typing import Any, Final

import msgspec
import numpy as np

from bidflow.serving.errors import RequestError

_ANY_JSON: Final = msgspec.json.Decoder()
# The latest request time accepted: the last millisecond of year 9999. Later values are client mistakes, and far
# larger ones (Python ints are unbounded) would overflow where the time becomes a float or a datetime.
MAX_TS_MS: Final = 253_402_300_799_999


def bytes_tensor(tensor: Any, where: str) -> list[Any]:
    """A v2 BYTES input's elements, checked against its declared shape."""
    if tensor.datatype != "BYTES":
        raise RequestError(f"input '{tensor.name}' must be BYTES", field=f"{where}.datatype", got=str(tensor.datatype))
    data = tensor.data
    if isinstance(data, np.ndarray):
        data = data.ravel().tolist()
    if not isinstance(data, list) or not all(isinstance(v, str | bytes) for v in data):
        raise RequestError(f"input '{tensor.name}' must hold strings", field=f"{where}.data")
    check_shape(tensor, len(data), where)
    return data


def check_shape(tensor: Any, elements: int, where: str) -> None:
    """Refuse a v2 input whose declared shape does not hold exactly its data (KServe does not check)."""
    shape = tensor.shape
    if not isinstance(shape, list | tuple) or not all(type(d) is int and d >= 0 for d in shape):
        raise RequestError(f"input '{tensor.name}' has no valid shape", field=f"{where}.shape", got=repr(shape)[:60])
    declared = 1
    for dimension in shape:
        declared *= dimension
    if declared != elements:
        raise RequestError(
            f"input '{tensor.name}' declares shape {list(shape)} but holds {elements} elements",
            field=f"{where}.shape",
            expected=str(elements),
            got=str(declared),
        )


def unique_inputs(inputs: Any) -> dict[str, tuple[int, Any]]:
    """A v2 request's inputs by name (position, tensor); a name given twice is a client mistake."""
    found: dict[str, tuple[int, Any]] = {}
    for i, tensor in enumerate(inputs):
        if tensor.name in found:
            raise RequestError(f"input {tensor.name!r} is given twice", field=f"$.inputs[{i}].name")
        found[tensor.name] = (i, tensor)
    return found


def parameter(value: Any) -> Any:
    # gRPC parameters arrive as InferParameter messages; REST ones as plain JSON values.
    for kind in ("int64_param", "string_param"):
        if hasattr(value, kind) and value.HasField(kind):
            return getattr(value, kind)
    return value


def ts_ms(value: Any, where: str, now_ms: int) -> int:
    if value is None:
        return now_ms
    if type(value) is not int or not 0 <= value <= MAX_TS_MS:
        raise RequestError(
            "ts_ms is the request time in epoch milliseconds", field=where,
            expected=f"an integer from 0 to {MAX_TS_MS}", got=repr(value)[:40],
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
    except UnicodeDecodeError as exc:
        raise RequestError("request body is not valid UTF-8", field="$", got=str(exc)[:200]) from exc


def type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__
