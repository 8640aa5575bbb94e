"""The model servers' HTTP surface under generated input: no client input gets a 5xx.

Bodies are generated JSON (mutations of a valid auction and free-form values), raw bytes, and
headers (content types, CloudEvent headers). Every answer is a 2xx, or a 4xx in the project's
error shape (``{"error": ..., ...}``); after each example the server still scores a good request.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

V1 = "/v1/models/bid_filter:predict"
V2 = "/v2/models/bid_filter/infer"
PATHS = (V1, V2, "/v1/models/bid_filter", "/v2/models/bid_filter", "/v2/models/bid_filter/ready")

scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
headers = st.fixed_dictionaries(
    {},
    optional={
        "content-type": st.sampled_from(
            ["application/json", "application/cloudevents+json", "text/plain", "application/x-www-form-urlencoded"]
        )
        | header_values,
        "ce-specversion": st.sampled_from(["1.0", "0.3"]) | header_values,
        "ce-id": header_values,
        "ce-source": header_values,
        "ce-type": header_values,
        "inference-header-content-length": header_values,
    },
)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _mutated(record: dict[str, Any], path: str, draw: st.DrawFn) -> Any:
    """A valid body for ``path`` with one part replaced by a generated value."""
    request = json.loads(json.dumps(record["request"]))
    if path == V2:
        body: dict[str, Any] = {
            "inputs": [{"name": "request", "shape": [1], "datatype": "BYTES", "data": [json.dumps(request)]}]
        }
        target = draw(st.sampled_from(["inputs", "name", "shape", "datatype", "data", "parameters"]))
        if target == "inputs":
            body["inputs"] = draw(json_values)
        elif target == "parameters":
            body["parameters"] = draw(json_values)
        else:
            body["inputs"][0][target] = draw(json_values)
        return body
    where = draw(st.sampled_from(["request", "partners", "ts_ms", "imp", "site", "device", "id", "tmax"]))
    instance: dict[str, Any] = {"request": request, "ts_ms": record["ts_ms"]}
    if where in ("request", "partners", "ts_ms"):
        instance[where] = draw(json_values)
    else:
        request[where] = draw(json_values)
    return {"instances": [instance]}


@st.composite
def requests(draw: st.DrawFn, record: dict[str, Any]) -> tuple[str, bytes, dict[str, str]]:
    path = draw(st.sampled_from(PATHS))
    shape = draw(st.sampled_from(["mutated", "json", "bytes"]))
    if shape == "bytes":
        content = draw(st.binary(max_size=200))
    elif shape == "json":
        content = json.dumps(draw(json_values)).encode()
    else:
        content = json.dumps(_mutated(record, path, draw)).encode()
    return path, content, draw(headers)


def test_no_generated_request_gets_a_5xx(client: Any, bid_logs: list[dict[str, Any]]) -> None:
    record = bid_logs[0]
    good = {"instances": [{"request": record["request"], "ts_ms": record["ts_ms"]}]}

    @SETTINGS
    @given(requests(record))
    def check(sent: tuple[str, bytes, dict[str, str]]) -> None:
        path, content, sent_headers = sent
        response = client.post(path, content=content, headers=sent_headers)
        assert response.status_code < 500, (path, content[:300], sent_headers, response.text[:300])
        if response.status_code >= 400:
            assert isinstance(response.json().get("error"), str), response.text[:300]
        assert client.post(V1, json=good).status_code == 200, "the server still answers"

    check()
