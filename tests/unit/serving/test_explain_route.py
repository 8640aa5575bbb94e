"""The ``:explain`` route of the model servers, in-process: the same rows, scores and 400s as predict."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from bidflow.modeling.explain import contributions
from bidflow.modeling.train import TrainedModel
from tests.unit.serving.test_ctr import _instances, ctr_client, ctr_model, ipinyou_rows
from tests.unit.serving.test_http import V1, v1_body

__all__ = ["ctr_client", "ctr_model", "ipinyou_rows"]

EXPLAIN = "/v1/models/bid_filter:explain"
CTR_EXPLAIN = "/v1/models/ctr:explain"


def _metric(client: Any, name: str) -> float:
    total = 0.0
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name) and 'model="' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_bid_filter_explains_every_partner_of_every_auction(
    client: Any, bid_logs: list[dict[str, Any]], trained: TrainedModel
) -> None:
    for record in bid_logs[:20]:
        partners = [o["partner"] for o in record["outcomes"]]
        body = v1_body(record, partners=partners)
        predicted = client.post(V1, json=body).json()["predictions"][0]
        response = client.post(EXPLAIN, json=body, headers={"x-bidflow-explain-top": "0"})
        assert response.status_code == 200, response.text
        (explained,) = response.json()["explanations"]
        assert explained["id"] == predicted["id"]
        assert explained["explored"] == predicted["explored"]
        assert [p["partner"] for p in explained["partners"]] == partners
        for decision, answer in zip(predicted["decisions"], explained["partners"], strict=True):
            assert answer["score"] == pytest.approx(decision["score"], abs=1e-6)
            assert answer["decision"] == decision["decision"]
            assert answer["threshold"] == decision["threshold"]
            total = sum(c["contribution"] for c in answer["contributions"]) + answer["base_value"]
            assert total == pytest.approx(answer["margin"], abs=1e-4)
            assert 1 / (1 + np.exp(-answer["margin"])) == pytest.approx(answer["score"], abs=1e-5)
            assert len(answer["contributions"]) == len(trained.spec.names)
            named = {c["feature"]: c["value"] for c in answer["contributions"]}
            assert named["partner"] == answer["partner"]  # the partner's code decoded back to its name


def test_bid_filter_explain_shows_the_top_contributions_largest_first(
    client: Any, bid_logs: list[dict[str, Any]]
) -> None:
    record = bid_logs[0]
    default = client.post(EXPLAIN, json=v1_body(record)).json()["explanations"][0]["partners"][0]
    assert len(default["contributions"]) == 8
    sizes = [abs(c["contribution"]) for c in default["contributions"]]
    assert sizes == sorted(sizes, reverse=True)
    two = client.post(EXPLAIN, json=v1_body(record), headers={"x-bidflow-explain-top": "2"}).json()
    assert [len(p["contributions"]) for p in two["explanations"][0]["partners"]] == [2] * len(
        two["explanations"][0]["partners"]
    )


@pytest.mark.parametrize(
    ("body", "headers", "field"),
    [
        ({"instances": []}, {}, "$.instances"),
        ({"instances": [{"request": {"id": "a"}}]}, {}, "$.instances[0].request"),
        ({"instances": [{"request": None, "extra": 1}]}, {}, "$.instances[0].extra"),
        (None, {"x-bidflow-explain-top": "lots"}, "headers.x-bidflow-explain-top"),
    ],
)
def test_bad_explain_requests_get_the_400s_of_predict(
    client: Any, bid_logs: list[dict[str, Any]], body: Any, headers: dict[str, str], field: str
) -> None:
    body = body if body is not None else v1_body(bid_logs[0])
    response = client.post(EXPLAIN, json=body, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["field"].startswith(field)
    if not headers:
        predicted = client.post(V1, json=body)
        assert predicted.status_code == 400
        assert predicted.json()["field"] == response.json()["field"]


def test_explaining_is_timed_and_counted_apart_from_predict(client: Any, bid_logs: list[dict[str, Any]]) -> None:
    record = bid_logs[1]
    partners = [o["partner"] for o in record["outcomes"]]
    decisions_before = _metric(client, "bidflow_serving_decisions_total")
    explained_before = _metric(client, "bidflow_serving_explained_total")
    explain_before = _metric(client, "bidflow_serving_explain_seconds_count")
    assert client.post(EXPLAIN, json=v1_body(record, partners=partners)).status_code == 200
    client.post(V1, json=v1_body(record, partners=partners))  # a request that folds the buffered histograms
    assert _metric(client, "bidflow_serving_explained_total") == explained_before + len(partners)
    assert _metric(client, "bidflow_serving_decisions_total") == decisions_before + len(partners)  # predict's only
    assert _metric(client, "bidflow_serving_explain_seconds_count") >= explain_before + 1


def test_ctr_explains_instances_with_the_scores_predict_gives(
    ctr_client: Any, ctr_model: TrainedModel, ipinyou_rows: pd.DataFrame
) -> None:
    frame = ipinyou_rows.tail(50)
    instances = _instances(frame, ctr_model.spec.names)
    predicted = ctr_client.post("/v1/models/ctr:predict", json={"instances": instances}).json()["predictions"]
    response = ctr_client.post(CTR_EXPLAIN, json={"instances": instances}, headers={"x-bidflow-explain-top": "0"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["fail_open"] is False and body["model_version"]
    expected = contributions(ctr_model, ctr_model.matrix(frame))
    for i, (score, answer) in enumerate(zip(predicted, body["explanations"], strict=True)):
        assert answer["score"] == pytest.approx(score, abs=1e-6)
        assert answer["base_value"] == pytest.approx(expected.base, abs=1e-6)
        by_name = {c["feature"]: c["contribution"] for c in answer["contributions"]}
        assert [by_name[f] for f in expected.features] == pytest.approx(expected.values[i].tolist(), abs=1e-6)
        assert sum(by_name.values()) + answer["base_value"] == pytest.approx(answer["margin"], abs=1e-4)


def test_ctr_explain_refuses_what_predict_refuses(ctr_client: Any) -> None:
    response = ctr_client.post(CTR_EXPLAIN, json={"instances": [{"no_such_field": 1}]})
    assert response.status_code == 400
    assert response.json()["field"] == "$.instances[0].no_such_field"
