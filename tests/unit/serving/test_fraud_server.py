"""The fraud server: clicks in by v2 named inputs, the training path's probabilities out, features from the store."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from bidflow.config import Config, FeaturesConfig, FraudConfig
from bidflow.features import store as feature_store
from bidflow.features.online_writer import FeastPushSink
from bidflow.features.velocity import KEYS, offline_tables
from bidflow.modeling.fraud import compare, feature_frame
from bidflow.modeling.train import TrainedModel, save_model
from tests.unit.features.support import features_config
from tests.unit.kinds.test_fraud_kind import synthetic_clicks

FIELDS = ("ip", "app", "device", "os", "channel")


@pytest.fixture(scope="module")
def clicks() -> pd.DataFrame:
    return synthetic_clicks(3_000, seed=4)


@pytest.fixture(scope="module")
def model(clicks: pd.DataFrame) -> TrainedModel:
    return compare(clicks, FraudConfig(holdout_day="2017-11-08", bootstrap=100))[1]


@pytest.fixture(scope="module")
def client(clicks: pd.DataFrame, model: TrainedModel, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A fraud server on a local store whose online rows are each key's latest, pushed through Feast."""
    from starlette.testclient import TestClient

    from bidflow.serving.base import ModelSource
    from bidflow.serving.fraud import FraudModel
    from bidflow.serving.server import build_app

    root = tmp_path_factory.mktemp("fraud-store")
    cfg: FeaturesConfig = features_config(root, project="bidflow_fraud_server")
    store = feature_store.open_store(cfg)
    feature_store.apply(store, cfg)
    rows = {}
    for view, table in offline_tables(clicks).items():
        last = table.drop_duplicates(list(KEYS[view]), keep="last")
        features = [c for c in table.columns if c not in KEYS[view] and c != "event_timestamp"]
        rows[view] = {
            tuple(int(v) for v in key): (int(stamp.timestamp()), tuple(float(x) for x in values))
            for key, stamp, values in zip(
                last[list(KEYS[view])].to_numpy(), last["event_timestamp"], last[features].to_numpy(), strict=True
            )
        }
    FeastPushSink(store).write(rows)
    folder = save_model(model, tmp_path_factory.mktemp("fraud-model"))
    served = FraudModel("fraud", Config(features=cfg), ModelSource.parse("fraud_talkingdata", str(folder)))
    assert served.load(), served.not_ready_reason
    with TestClient(build_app([served])) as test_client:
        yield test_client


def v2_body(frame: pd.DataFrame) -> dict[str, Any]:
    inputs = [{"name": n, "shape": [len(frame)], "datatype": "INT64", "data": frame[n].tolist()} for n in FIELDS]
    inputs.append({"name": "click_time", "shape": [len(frame)], "datatype": "INT64", "data": frame["ts"].tolist()})
    return {"inputs": inputs}


def test_v2_scores_equal_the_training_path(client: Any, clicks: pd.DataFrame, model: TrainedModel) -> None:
    """Each IP's latest click: what the online store holds for its keys is that click's own features."""
    frame = feature_frame(clicks)
    latest = frame.drop_duplicates("ip", keep="last").tail(40)
    response = client.post("/v2/models/fraud/infer", json=v2_body(latest))
    assert response.status_code == 200, response.text
    body = response.json()
    (output,) = body["outputs"]
    assert output["name"] == "p_genuine" and body["parameters"]["fail_open"] is False
    np.testing.assert_allclose(output["data"], model.predict(latest), atol=1e-5, rtol=0)


def test_a_click_without_a_click_time_is_400(client: Any, clicks: pd.DataFrame) -> None:
    body = v2_body(clicks.head(2))
    body["inputs"] = body["inputs"][:-1]
    response = client.post("/v2/models/fraud/infer", json=body)
    assert response.status_code == 400 and "click_time" in response.text


def test_the_server_reads_fresh_rows() -> None:
    """No online cache: a key's row changes with every click of the stream."""
    from bidflow.serving.base import ModelSource, ServeOptions
    from bidflow.serving.fraud import FraudModel

    served = FraudModel("fraud", Config(), ModelSource.parse("fraud_talkingdata", "champion"), ServeOptions())
    assert served.options.feature_cache_s == 0
