"""The CTR model server: iPinYou impressions in, the training path's probabilities out (v1 and v2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bidflow.config import Config
from bidflow.modeling import ctr, inputs, train
from bidflow.modeling.train import TrainedModel, save_model
from tests.unit.modeling.conftest import QUICK


@pytest.fixture(scope="module")
def ipinyou_rows(shared_data: Path) -> pd.DataFrame:
    return ctr.read_ipinyou_impressions(shared_data / "ipinyou_2997_sample" / "train.csv.gz", Config().features.ctr_day)


@pytest.fixture(scope="module")
def ctr_model(ipinyou_rows: pd.DataFrame) -> TrainedModel:
    rows, _ = inputs.split_holdout(ipinyou_rows, 1)
    return train.fit(rows, ctr.ipinyou_spec(), QUICK.model_copy(update={"min_category_count": 10}))


@pytest.fixture(scope="module")
def ctr_client(ctr_model: TrainedModel, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from starlette.testclient import TestClient

    from bidflow.serving.base import ModelSource
    from bidflow.serving.ctr import CTRModel
    from bidflow.serving.server import build_app

    folder = save_model(ctr_model, tmp_path_factory.mktemp("ctr-model"))
    model = CTRModel("ctr", Config(), ModelSource.parse("ctr_ipinyou", str(folder)))
    assert model.load(), model.not_ready_reason
    with TestClient(build_app([model])) as client:
        yield client


def _instances(frame: pd.DataFrame, spec_names: tuple[str, ...]) -> list[dict[str, Any]]:
    records = frame[list(spec_names)].to_dict("records")
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in records]


def test_v1_scores_equal_the_training_path(
    ctr_client: Any, ctr_model: TrainedModel, ipinyou_rows: pd.DataFrame
) -> None:
    frame = ipinyou_rows.tail(200)  # the held-out hour
    response = ctr_client.post("/v1/models/ctr:predict", json={"instances": _instances(frame, ctr_model.spec.names)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["fail_open"] is False and body["model_version"]
    np.testing.assert_allclose(body["predictions"], ctr_model.predict(frame), atol=1e-5, rtol=0)


def test_v2_scores_equal_v1(ctr_client: Any, ctr_model: TrainedModel, ipinyou_rows: pd.DataFrame) -> None:
    frame = ipinyou_rows.tail(20)
    rows = _instances(frame, ctr_model.spec.names)
    inputs_ = []
    for name in ctr_model.spec.names:
        numeric = name not in ctr_model.spec.categorical
        data = [row[name] for row in rows]
        inputs_.append({"name": name, "shape": [len(rows)], "datatype": "FP64" if numeric else "BYTES", "data": data})
    response = ctr_client.post("/v2/models/ctr/infer", json={"inputs": inputs_})
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    v1 = ctr_client.post("/v1/models/ctr:predict", json={"instances": rows}).json()["predictions"]
    assert output["name"] == "ctr" and output["data"] == v1


def test_unknown_fields_are_400(ctr_client: Any) -> None:
    response = ctr_client.post("/v1/models/ctr:predict", json={"instances": [{"domian": "x"}]})
    assert response.status_code == 400 and response.json()["field"] == "$.instances[0].domian"
