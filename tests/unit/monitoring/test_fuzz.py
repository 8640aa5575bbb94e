"""The drift monitor's HTTP surface under generated input: no sender's input gets a 5xx.

Bodies are generated JSON (free-form, and records shaped like the router's with generated fields)
and raw bytes, with generated headers (token or none, CloudEvent headers). Every answer is below 500
with a JSON error on a 4xx, and the monitor still answers afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from bidflow.config import CanaryConfig, Config, MonitorConfig
from bidflow.monitoring.service import build_app
from bidflow.monitoring.watch import Monitor
from tests.unit.monitoring.test_watch import RecordingController

TOKEN = "the-deployments-intake-token"
big_ints = st.integers(min_value=-(2**70), max_value=2**70)
scalars = st.none() | st.booleans() | big_ints | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
records = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "role": json_values,
            "version": st.sampled_from(["1", "2", "../x", "/etc"]) | json_values,
            "ts": json_values,
            "request": json_values,
            "response": json_values,
            "id": json_values,
            "bids": json_values,
        },
    ),
    max_size=5,
)
text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
headers = st.fixed_dictionaries(
    {},
    optional={
        "authorization": st.sampled_from([f"Bearer {TOKEN}", "Bearer nope", TOKEN]) | text,
        "content-type": st.sampled_from(["application/json", "text/plain"]) | text,
        "ce-id": text,
        "ce-type": st.sampled_from(["org.kubeflow.serving.inference.request", "x.response"]) | text,
    },
)


@st.composite
def sent(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    path = draw(st.sampled_from(["/v1/payloads", "/v1/outcomes", "/", f"/?token={TOKEN}", "/status", "/nope"]))
    shape = draw(st.sampled_from(["records", "json", "bytes"]))
    if shape == "bytes":
        content = draw(st.binary(max_size=200))
    elif shape == "json":
        content = json.dumps(draw(json_values)).encode()
    else:
        content = json.dumps({"records": draw(records)}).encode()
    return path, content, draw(headers)


def test_no_generated_request_gets_a_5xx(tmp_path: Path) -> None:
    config = Config(monitor=MonitorConfig(window_size=50), canary=CanaryConfig(state=tmp_path / "deploy"))
    controller = RecordingController()
    monitor = Monitor(config, controller)
    with TestClient(build_app(monitor, TOKEN), raise_server_exceptions=False) as http:

        @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(sent())
        def check(request: tuple[str, bytes, dict[str, str]]) -> None:
            path, content, sent_headers = request
            response = http.post(path, content=content, headers=sent_headers)
            assert response.status_code < 500, (path, content[:300], sent_headers, response.text[:300])
            if response.status_code >= 400 and response.status_code not in (404, 405):
                body: Any = response.json()
                assert isinstance(body.get("error"), str), response.text[:300]
            assert http.get("/healthz").status_code == 200, "the monitor still answers"

        check()
    assert controller.rollbacks == [], "generated input never moved traffic"
