"""The bid filter through KServe's v1/v2 endpoints, in-process: decisions, errors, 503, fail-open, metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bidflow.config import Config
from bidflow.errors import FeatureStoreError
from bidflow.modeling.economics import is_exploration
from bidflow.modeling.train import TrainedModel

V1 = "/v1/models/bid_filter:predict"
V2 = "/v2/models/bid_filter/infer"


def v1_body(record: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"instances": [{"request": record["request"], "ts_ms": record["ts_ms"], **extra}]}


def v2_body(record: dict[str, Any], partners: list[str] | None = None) -> dict[str, Any]:
    inputs = [{"name": "request", "shape": [1], "datatype": "BYTES", "data": [json.dumps(record["request"])]}]
    if partners is not None:
        inputs.append({"name": "partners", "shape": [len(partners)], "datatype": "BYTES", "data": partners})
    return {"id": "r1", "inputs": inputs, "parameters": {"ts_ms": record["ts_ms"]}}


def check_prediction(prediction: dict[str, Any], partners: list[str], trained: TrainedModel) -> None:
    """A well-formed decision: every partner once, in order, consistent with threshold and exploration."""
    assert trained.policy is not None
    explored = is_exploration(prediction["id"], trained.policy.exploration_share)
    assert prediction["explored"] is explored
    assert prediction["fail_open"] is False
    assert [d["partner"] for d in prediction["decisions"]] == partners
    for d in prediction["decisions"]:
        assert 0.0 <= d["score"] <= 1.0
        assert d["threshold"] == trained.policy.threshold(d["partner"])
        assert d["decision"] == ("call" if explored or d["score"] >= d["threshold"] else "skip")


def test_v1_round_trip_on_generated_auctions(
    client: Any, bid_logs: list[dict[str, Any]], trained: TrainedModel
) -> None:
    decisions: dict[str, int] = {"call": 0, "skip": 0}
    explored = 0
    for record in bid_logs[:400]:
        partners = [o["partner"] for o in record["outcomes"]]
        response = client.post(V1, json=v1_body(record, partners=partners))
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        (prediction,) = response.json()["predictions"]
        check_prediction(prediction, partners, trained)
        assert prediction["model_version"]
        explored += prediction["explored"]
        for d in prediction["decisions"]:
            decisions[d["decision"]] += 1
    assert decisions["skip"] > 0 and decisions["call"] > 0  # the filter filters, and calls
    assert 0 < explored < 60  # 5 % exploration of 400 auctions


def test_partners_default_to_the_bidders_named_in_the_request(client: Any, bid_logs: list[dict[str, Any]]) -> None:
    record = bid_logs[0]
    named = list(record["request"]["imp"][0]["ext"]["prebid"]["bidder"])
    response = client.post(V1, json=v1_body(record))
    assert [d["partner"] for d in response.json()["predictions"][0]["decisions"]] == named


def test_v2_gives_the_v1_decisions(client: Any, bid_logs: list[dict[str, Any]]) -> None:
    for record in bid_logs[400:450]:
        partners = [o["partner"] for o in record["outcomes"]] + ["brand-new"]
        one = client.post(V1, json=v1_body(record, partners=partners)).json()["predictions"][0]
        response = client.post(V2, json=v2_body(record, partners))
        assert response.status_code == 200, response.text
        body = response.json()
        outputs = {o["name"]: o for o in body["outputs"]}
        assert outputs["partner"]["data"] == partners
        assert outputs["score"]["data"] == [d["score"] for d in one["decisions"]]
        assert outputs["threshold"]["data"] == [d["threshold"] for d in one["decisions"]]
        assert outputs["decision"]["data"] == [d["decision"] for d in one["decisions"]]
        assert outputs["explored"]["data"] == [one["explored"]]
        assert outputs["fail_open"]["data"] == [False]
        assert body["parameters"]["auction_id"] == record["request"]["id"]
        assert body["model_name"] == "bid_filter" and body["id"] == "r1"


def test_several_auctions_in_one_v1_request(client: Any, bid_logs: list[dict[str, Any]]) -> None:
    records = bid_logs[:5]
    body = {"instances": [{"request": r["request"], "ts_ms": r["ts_ms"]} for r in records]}
    predictions = client.post(V1, json=body).json()["predictions"]
    assert [p["id"] for p in predictions] == [r["request"]["id"] for r in records]


def test_a_binary_cloudevent_request_gets_a_cloudevent_answer(client: Any, bid_logs: list[dict[str, Any]]) -> None:
    record = bid_logs[0]
    plain = client.post(V1, json=v1_body(record)).json()
    event = {"specversion": "1.0", "source": "exchange", "type": "bid.request", "id": "e1"}
    headers = {f"ce-{name}": value for name, value in event.items()} | {"content-type": "application/json"}
    binary = client.post(V1, content=json.dumps(v1_body(record)), headers=headers)
    assert binary.status_code == 200, binary.text
    assert binary.headers["ce-source"].endswith("bid_filter") and binary.json() == plain


def test_a_structured_cloudevent_in_a_json_body_is_still_unwrapped(client: Any, bid_logs: list[dict[str, Any]]) -> None:
    # v1 bodies reach the model undecoded, except CloudEvents: KServe unwraps those as before.
    record = bid_logs[0]
    plain = client.post(V1, json=v1_body(record)).json()
    event = {"specversion": "1.0", "source": "exchange", "type": "bid.request", "id": "e2", "time": "2026-11-25T00:00Z"}
    response = client.post(V1, json=event | {"data": v1_body(record)})
    assert response.status_code == 200, response.text
    assert response.json() == plain  # KServe answers a plain JSON body plainly


def test_typed_and_generic_decoding_give_the_same_auctions(bid_filter: Any, bid_logs: list[dict[str, Any]]) -> None:
    # Bytes take the typed decoder; a dict (or a body it cannot type) the generic path.
    for record in bid_logs[:200]:
        partners = [o["partner"] for o in record["outcomes"]] or None
        body = {"instances": [{"request": record["request"], "ts_ms": record["ts_ms"], "partners": partners}]}
        typed = bid_filter.preprocess(json.dumps(body).encode())
        assert typed == bid_filter.preprocess(body)
        assert typed.auctions[0].request.id == record["request"]["id"]


def test_kserve_stage_histograms_are_observed(client: Any, bid_logs: list[dict[str, Any]]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    def count(stage: str) -> float:
        """The stage's observation count as a scrape of /metrics sees it."""
        families = text_string_to_metric_families(client.get("/metrics").text)
        name = f"request_{stage}_seconds_count"
        samples = [s for f in families for s in f.samples if s.name == name and s.labels["model_name"] == "bid_filter"]
        return samples[0].value if samples else 0.0

    before = {stage: count(stage) for stage in ("preprocess", "predict", "postprocess")}
    assert client.post(V1, json=v1_body(bid_logs[0])).status_code == 200
    assert client.post(V2, json=v2_body(bid_logs[1])).status_code == 200
    assert {stage: count(stage) - seen for stage, seen in before.items()} == {
        "preprocess": 2, "predict": 2, "postprocess": 2
    }  # fmt: skip


# --- client mistakes: 400 naming the field --------------------------------------------------------


def _bad(client: Any, path: str, **kwargs: Any) -> dict[str, Any]:
    response = client.post(path, **kwargs)
    assert response.status_code == 400, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] and body["field"].startswith("$")
    return body


def test_malformed_json_is_400(client: Any) -> None:
    headers = {"content-type": "application/json"}
    assert _bad(client, V1, content=b'{"instances": [', headers=headers)["field"] == "$"
    assert _bad(client, V2, content=b'{"inputs": [', headers=headers)["field"] == "$"
    deep = b'{"instances": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    assert _bad(client, V1, content=deep, headers=headers)["error"] == "request body is nested too deeply to decode"


def test_a_body_sent_without_a_json_content_type_is_read_as_json(
    client: Any, bid_logs: list[dict[str, Any]], trained: TrainedModel
) -> None:
    # curl -d sends application/x-www-form-urlencoded; KServe then hands the body on as bytes.
    record = bid_logs[0]
    partners = [o["partner"] for o in record["outcomes"]]
    form = {"content-type": "application/x-www-form-urlencoded"}
    response = client.post(V1, content=json.dumps(v1_body(record, partners=partners)).encode(), headers=form)
    assert response.status_code == 200, response.text
    check_prediction(response.json()["predictions"][0], partners, trained)
    bad = _bad(client, V1, content=b"instances=1", headers=form)
    assert bad["error"] == "request body is not valid JSON" and bad["field"] == "$"


def test_an_unknown_model_is_404_on_both_protocols(client: Any) -> None:
    v2 = {"inputs": [{"name": "request", "shape": [1], "datatype": "BYTES", "data": ["{}"]}]}
    for path, body in (("/v1/models/nope:predict", {"instances": []}), ("/v2/models/nope/infer", v2)):
        response = client.post(path, json=body)
        assert response.status_code == 404, response.text
        assert "nope" in response.json()["error"]


def test_envelope_mistakes_name_the_field(client: Any, bid_logs: list[dict[str, Any]]) -> None:
    request = bid_logs[0]["request"]
    cases = [
        ({"instances": []}, "$.instances"),
        ({"instance": [{"request": request}]}, "$.instances"),
        ({"instances": [{"request": request, "partner": ["a"]}]}, "$.instances[0].partner"),
        ({"instances": [{}]}, "$.instances[0].request"),
        ({"instances": [{"request": None}]}, "$.instances[0].request"),
        ({"instances": [{"request": request, "partners": "atlas"}]}, "$.instances[0].partners"),
        ({"instances": [{"request": request, "partners": ["atlas", 3]}]}, "$.instances[0].partners[1]"),
        ({"instances": [{"request": request, "partners": ["atlas", "atlas"]}]}, "$.instances[0].partners[1]"),
        ({"instances": [{"request": request, "ts_ms": "now"}]}, "$.instances[0].ts_ms"),
        ({"instances": [{"request": request}] * 65}, "$.instances"),
    ]
    for body, field in cases:
        assert _bad(client, V1, json=body)["field"] == field, body


def test_openrtb_mistakes_name_the_field_inside_the_request(client: Any, bid_logs: list[dict[str, Any]]) -> None:
    request = json.loads(json.dumps(bid_logs[0]["request"]))
    request["imp"][0]["secure"] = "yes"
    body = _bad(client, V1, json={"instances": [{"request": request}]})
    assert body["field"] == "$.instances[0].request.imp[0].secure"
    assert body["expected"] == "int" and body["got"] == "str"
    request["imp"][0]["secure"] = 1
    del request["id"]
    assert _bad(client, V1, json={"instances": [{"request": request}]})["field"] == "$.instances[0].request.id"
    v2 = v2_body({"request": request, "ts_ms": 0})
    assert _bad(client, V2, json=v2)["field"] == "$.inputs[0].data[0].id"


def test_v2_mistakes_are_400_not_422(client: Any, bid_logs: list[dict[str, Any]]) -> None:
    good = v2_body(bid_logs[0])
    assert _bad(client, V2, json={"inputs": "x"})["field"] == "$.inputs"
    assert _bad(client, V2, json={"inputs": [{"name": "request"}]})["field"].startswith("$.inputs[0]")
    wrong_type = json.loads(json.dumps(good))
    wrong_type["inputs"][0]["datatype"] = "FP32"
    assert _bad(client, V2, json=wrong_type)["field"] == "$.inputs[0].datatype"
    unknown = json.loads(json.dumps(good))
    unknown["inputs"][0]["name"] = "req"
    assert _bad(client, V2, json=unknown)["field"] == "$.inputs[0].name"
    no_bidders = {"request": {"id": "x", "imp": [{"id": "1", "banner": {"w": 1, "h": 1}}]}, "ts_ms": 0}
    assert _bad(client, V2, json=v2_body(no_bidders))["field"] == "$.inputs"


def test_client_mistakes_that_once_were_500_or_200_are_400(client: Any, bid_logs: list[dict[str, Any]]) -> None:
    request = bid_logs[0]["request"]
    invalid_utf8 = b'{"instances": [{"request": "\xff\xfe"}]}'
    assert _bad(client, V1, content=invalid_utf8, headers={"content-type": "application/json"})["field"] == "$"
    for far in (10**400, 253_402_300_800_000, -1):
        bad = _bad(client, V1, content=json.dumps({"instances": [{"request": request, "ts_ms": far}]}).encode())
        assert bad["field"] == "$.instances[0].ts_ms", far
    good = v2_body(bid_logs[0])
    misshapen = json.loads(json.dumps(good))
    misshapen["inputs"][0]["shape"] = [2]
    assert _bad(client, V2, json=misshapen)["field"] == "$.inputs[0].shape"
    twice = json.loads(json.dumps(good))
    twice["inputs"].append(twice["inputs"][0])
    assert _bad(client, V2, json=twice)["field"] == f"$.inputs[{len(twice['inputs']) - 1}].name"
    assert client.post(V1, json=v1_body(bid_logs[0])).status_code == 200, "and the server still answers"


def test_oversized_bodies_are_400_before_being_read(client: Any, bid_logs: list[dict[str, Any]]) -> None:
    huge = v1_body(bid_logs[0])
    huge["instances"][0]["request"]["ext"] = {"padding": "x" * 70_000}
    body = _bad(client, V1, json=huge)
    assert body["field"] == "$" and "too large" in body["error"]

    def chunks() -> Any:  # no content-length: counted while streaming
        yield b'{"instances": [{"request": {"id": "'
        for _ in range(80):
            yield b"x" * 1024
        yield b'"}}]}'

    chunked = _bad(client, V1, content=chunks(), headers={"content-type": "application/json"})
    assert "too large" in chunked["error"]


# --- model not loaded: 503 with the reason ---------------------------------------------------------


def test_a_model_that_failed_to_load_answers_503_with_the_reason(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from bidflow.serving.base import ModelSource
    from bidflow.serving.bid_filter import BidFilterModel
    from bidflow.serving.server import build_app

    model = BidFilterModel("bid_filter", Config(), ModelSource.parse("bid_filter", str(tmp_path / "nothing-here")))
    assert not model.load()
    with TestClient(build_app([model])) as test_client:
        for path, body in ((V1, {"instances": []}), (V2, {"inputs": []})):
            response = test_client.post(path, json=body)
            assert response.status_code == 503, response.text
            body = response.json()
            assert "not ready" in body["error"] and "nothing-here" in body["reason"]
        assert test_client.get("/v2/models/bid_filter/ready").status_code == 503


# --- fail open --------------------------------------------------------------------------------------


class _DownReader:
    """An online reader whose store is down (what Redis being stopped looks like to the model)."""

    feature_names = ("partner_stats__bid_rate_1h",)
    backend = "redis"
    calls = 0

    def features(self, *args: Any, **kwargs: Any) -> np.ndarray:
        type(self).calls += 1
        raise FeatureStoreError("Redis online read failed") from ConnectionRefusedError(111, "Connection refused")

    def set_shape(self, shape: Any) -> None:
        pass

    def close(self) -> None:
        pass


def test_online_store_down_fails_open_and_is_counted(
    trained: TrainedModel, tmp_path: Path, bid_logs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    from prometheus_client import REGISTRY
    from starlette.testclient import TestClient

    from bidflow.kinds.bid_filter import spec as bid_filter_spec
    from bidflow.serving import base as served
    from bidflow.serving.bid_filter import BidFilterModel
    from bidflow.serving.online import GuardedReader
    from bidflow.serving.predictor import TreePredictor
    from bidflow.serving.server import build_app

    # A model reading one FeatureService column: every auction needs the (dead) store. It never gets
    # as far as predicting, so the quick model's predictor stands in for its own.
    online_model = replace(trained, spec=bid_filter_spec(_DownReader.feature_names, "bid_filter"))
    monkeypatch.setattr(served, "open_reader", lambda *a, **k: GuardedReader(_DownReader(), cooldown_s=60))  # type: ignore[arg-type]
    monkeypatch.setattr(
        served, "compile_predictor", lambda model: TreePredictor(trained.booster, len(trained.spec.names))
    )
    monkeypatch.setattr(served, "load_trained", lambda config, source: (online_model, "fail-open-test"))
    model = BidFilterModel("bid_filter_fo", Config(), served.ModelSource("bid_filter_fo", uri=str(tmp_path)))
    assert model.load(), model.not_ready_reason

    def failed_open() -> float:
        return sum(
            REGISTRY.get_sample_value("bidflow_serving_fail_open_total", {"model": "bid_filter_fo", "reason": r}) or 0.0
            for r in ("unreachable", "breaker_open")
        )

    before = failed_open()
    with TestClient(build_app([model])) as test_client:
        for record in bid_logs[:20]:
            partners = [o["partner"] for o in record["outcomes"]]
            response = test_client.post("/v1/models/bid_filter_fo:predict", json=v1_body(record, partners=partners))
            assert response.status_code == 200
            prediction = response.json()["predictions"][0]
            assert prediction["fail_open"] is True
            assert prediction["fail_open_reason"] in ("unreachable", "breaker_open")
            assert {d["decision"] for d in prediction["decisions"]} == {"call"}
            assert all(d["score"] is None for d in prediction["decisions"])
        v2 = test_client.post("/v2/models/bid_filter_fo/infer", json=v2_body(bid_logs[0])).json()
        outputs = {o["name"]: o["data"] for o in v2["outputs"]}
        assert outputs["fail_open"] == [True] and set(outputs["decision"]) == {"call"}
    assert _DownReader.calls == 1  # the breaker spared the store the other 20 requests
    assert failed_open() - before == 21


def test_metrics_count_decisions(client: Any, bid_logs: list[dict[str, Any]]) -> None:
    client.post(V1, json=v1_body(bid_logs[0]))
    text = client.get("/metrics").text
    for name in (
        "bidflow_serving_request_seconds_bucket",
        'bidflow_serving_decisions_total{decision="call",model="bid_filter",partner="atlas"}',
        "bidflow_serving_auctions_total",
        'bidflow_serving_filtered_share{model="bid_filter"}',
        'bidflow_serving_exploration_share{model="bid_filter"}',
        "bidflow_serving_model_info",
    ):
        assert name in text, name


def test_a_settled_heap_is_left_out_of_full_collections() -> None:
    import gc
    import weakref

    from bidflow.serving.server import settle_heap

    class Node:
        pass

    cycle = Node()
    cycle.me = cycle  # type: ignore[attr-defined]  # garbage only the cycle collector frees
    gone = weakref.ref(cycle)
    del cycle
    tracked = len(gc.get_objects())
    settle_heap()
    try:
        assert gone() is None  # collected before freezing, not frozen for good
        assert gc.get_freeze_count() >= tracked // 2
        assert len(gc.get_objects()) < tracked // 10  # what a full collection still walks
    finally:
        gc.unfreeze()
