"""The local router's HTTP surface under generated input: no client input gets a 5xx from the router.

The router is the real one in-process (``build_router`` over a ``ProcessBackend`` and a journal), with a
champion and a canary at 50 % served by stand-in model servers (``stub_server.py``). Requests are generated
methods, paths (scoring, explain, admin, metrics and arbitrary ones), headers (the role header, bearer
tokens, content types, CloudEvent headers) and bodies (JSON values and raw bytes). Every answer is below 500,
the router's own refusals are in the project's error shape, and after each example a good auction is
still scored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

from bidflow.config import load_config
from bidflow.deploy.backend import ModelVersion
from bidflow.deploy.canary import Controller
from bidflow.deploy.journal import FileLog
from bidflow.deploy.local import ProcessBackend
from bidflow.deploy.router import ROLE_HEADER, RouterState, build_router
from tests.conftest import free_port
from tests.integration.deploy.router_runner import stub_command

pytestmark = pytest.mark.integration

TOKEN = "fuzz-token"
V1, V2 = (ModelVersion("bid_filter", v, f"stub://bid_filter/{v}") for v in ("1", "2"))
GOOD = b'{"instances": [{"request": {"id": "auction-ok", "imp": []}}]}'
PATHS = (
    "/v1/models/bid_filter:predict", "/v2/models/bid_filter/infer", "/v1/models/bid_filter:explain",
    "/v1/models/bid_filter", "/v2/models/bid_filter/ready", "/admin/state", "/admin/transitions", "/admin/metrics",
    "/admin/deploy", "/admin/promote", "/admin/rollback", "/metrics", "/", "/v1/models/other:predict",
)  # fmt: skip

scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=16,
)
printable = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
# Transition bodies that are well-formed enough to reach the controller, with generated values in them.
transition_bodies = st.fixed_dictionaries(
    {"actor": printable},
    optional={
        "reasons": json_values, "metrics": json_values, "expect": json_values, "expect_canary": json_values,
        "percent": json_values,
        "model": st.fixed_dictionaries({"name": printable, "version": printable}) | json_values,
    },
)  # fmt: skip


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes]:
    path = draw(
        st.sampled_from(PATHS) | st.text(alphabet="/abcxyz:%.-_0123456789", min_size=1, max_size=30).map("/{}".format)
    )
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]))
    headers = draw(
        st.fixed_dictionaries(
            {},
            optional={
                ROLE_HEADER: st.sampled_from(["champion", "canary"]) | printable,
                "authorization": st.sampled_from([f"Bearer {TOKEN}", "Bearer wrong", "Basic abc"]) | printable,
                "content-type": st.sampled_from(["application/json", "application/cloudevents+json"]) | printable,
                "ce-specversion": printable,
                "ce-id": printable,
            },
        )
    )
    if path.startswith("/admin/") and method == "POST" and draw(st.booleans()):
        body = json.dumps(draw(transition_bodies)).encode()
    else:
        body = draw(st.binary(max_size=64) | json_values.map(lambda v: json.dumps(v).encode()))
    return method, path, headers, body


@pytest.fixture
def router(tmp_path: Path) -> Iterator[Any]:
    from starlette.testclient import TestClient

    settings_ = {
        "canary": {
            "state": str(tmp_path / "deploy"),
            "router_port": free_port(),
            "champion_port": free_port(),
            "canary_port": free_port(),
            "monitor_url": None,
        },
    }
    (tmp_path / "bidflow.yaml").write_text(yaml.safe_dump(settings_), encoding="utf-8")
    config = load_config(tmp_path / "bidflow.yaml", environ={})
    backend = ProcessBackend(config.canary, "bid_filter", ready_timeout_s=20)
    backend.server_command = lambda model, port: stub_command(backend, model, port)  # type: ignore[method-assign]
    controller = Controller(backend, FileLog(tmp_path / "deploy" / "transitions.jsonl"))
    try:
        controller.deploy(V1, 0, actor="test")
        controller.deploy(V2, 50, actor="test")
        with TestClient(build_router(RouterState(controller, backend, None, token=TOKEN))) as client:
            yield client
    finally:
        backend.shutdown()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=requests())
@example(request=("GET", "/v1/models/bid_filter:predict", {"ce-specversion": " "}, b""))  # was a 502: see the proxy
@example(request=("GET", "/%00", {}, b""))  # was a 500: the decoded path was forwarded
def test_no_generated_request_gets_a_5xx_from_the_router(
    router: Any, request: tuple[str, str, dict[str, str], bytes]
) -> None:
    method, path, headers, body = request
    try:
        router.base_url.join(path)
    except httpx.InvalidURL:
        assume(False)  # a path no HTTP client sends (``//::``): nothing reaches the router
    response = router.request(method, path, headers=headers, content=body)
    event(f"{path if path in PATHS else 'other'} {method} {response.status_code}")
    assert response.status_code < 500, (method, path, headers, body, response.status_code, response.text[:300])
    if response.status_code >= 400 and response.headers.get("content-type", "").startswith("application/json"):
        answer = response.json()
        assert not isinstance(answer, dict) or "error" in answer or "detail" in answer, answer
    good = router.post("/v1/models/bid_filter:predict", content=GOOD, headers={"content-type": "application/json"})
    assert good.status_code == 200, good.text
