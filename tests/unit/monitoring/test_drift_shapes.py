"""Drift shapes: how each kind's served traffic and held-out rows become monitored rows, and detectors over them.

The bid filter's rows must stay what they were (one per auction: request features and the mean
partner score); a kind served as instances gives one row per instance. Detectors here use the
scipy backend (the main environment); tests/monitor runs the same on alibi-detect.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bidflow.config import CanaryConfig, Config, MonitorConfig
from bidflow.deploy.replay import read_instances, select_rows
from bidflow.errors import ConfigError, InputError, MonitorError
from bidflow.kinds import kind
from bidflow.kinds.base import SCORE, instance_drift
from bidflow.kinds.bid_filter import KIND as BID_FILTER_KIND
from bidflow.monitoring.drift import (
    BID_FILTER,
    SIDECAR,
    Columns,
    drift_frame,
    drift_row,
    fit_detector,
    load_detector,
    save_detector,
)
from bidflow.monitoring.fit import fit_from_reference, read_reference, write_reference
from bidflow.monitoring.service import _answering_version
from bidflow.monitoring.watch import Monitor
from bidflow.openrtb import decode_request_obj
from bidflow.openrtb.features import request_features
from tests.unit.monitoring.conftest import Payloads
from tests.unit.monitoring.test_watch import RecordingController

TOY = instance_drift(categorical=("colour",), numeric=("size",))
TOY_COLUMNS = Columns.of(TOY)
COLOURS = ("red", "green", "blue", "black")


def shoppers(n: int, seed: int, colours: tuple[float, ...] = (0.25, 0.25, 0.25, 0.25)) -> pd.DataFrame:
    """Held-out toy rows with a model's score, ``colours`` the colour mix."""
    rng = np.random.default_rng(seed)
    colour = rng.choice(COLOURS, size=n, p=colours)
    size = rng.uniform(0, 10, size=n).round(2)
    return pd.DataFrame({"colour": colour, "size": size, "score": 1 / (1 + np.exp(2.5 - 0.25 * size))})


def served(frame: pd.DataFrame, per_request: int = 5) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``frame`` as v1 instance calls and the answers a model server gives (predictions = the score column)."""
    calls = []
    for start in range(0, len(frame), per_request):
        part = frame.iloc[start : start + per_request]
        request = {"instances": part[["colour", "size"]].to_dict("records")}
        calls.append((request, {"predictions": part["score"].tolist(), "model_version": "7"}))
    return calls


# -- the bid filter: unchanged rows --


def test_the_bid_filters_rows_are_todays_rows(payloads: Payloads) -> None:
    shape = BID_FILTER_KIND.drift
    assert shape is not None and Columns.of(shape) == BID_FILTER
    for record in payloads("none", "champion")[:200]:
        (row,) = shape.served(record["request"], record["response"], 0)
        instance = record["request"]["instances"][0]
        prediction = record["response"]["predictions"][0]
        scores = [d["score"] for d in prediction["decisions"]]
        features = request_features(decode_request_obj(instance["request"]), instance["ts_ms"])
        assert row.values == drift_row(features, float(np.mean(scores)))
        assert row.score == float(np.mean(scores))
        if prediction["explored"]:
            assert row.exploration is not None and row.exploration.id == instance["request"]["id"]
            assert row.exploration.would_call == {
                d["partner"]: d["score"] >= d["threshold"] for d in prediction["decisions"]
            }
        else:
            assert row.exploration is None


def test_the_bid_filters_reference_is_one_row_per_auction() -> None:
    shape = BID_FILTER_KIND.drift
    assert shape is not None
    base = dict.fromkeys(shape.categorical, "x") | {"bidfloor": 0.5, "tmax": 200}
    calls = pd.DataFrame(
        [
            base | {"auction_id": "a", SCORE: 0.2},
            base | {"auction_id": "a", SCORE: 0.4},
            base | {"auction_id": "b", SCORE: 0.9},
        ]
    )
    reference = shape.reference(calls)
    assert list(reference[SCORE]) == pytest.approx([0.3, 0.9])
    assert set(shape.columns) <= set(reference.columns)


# -- instance kinds --


def test_instance_rows_are_one_per_instance_with_its_prediction() -> None:
    request = {
        "instances": [{"colour": "red", "size": 7.5}, {"colour": 4, "size": "2"}, {"size": 1.0}, {"colour": "x"}]
    }
    response = {"predictions": [0.9, 0.1, 0.5, 0.4]}
    rows = TOY.served(request, response, 0)
    assert [r.values for r in rows] == [
        {"colour": "red", "size": 7.5, SCORE: 0.9},
        {"colour": "4", "size": 2.0, SCORE: 0.1},  # 4 and "4" are one category
        {"colour": "unknown", "size": 1.0, SCORE: 0.5},  # an absent category is its own label
    ]  # the last instance has no size: K-S needs a number, so it is left out
    assert [r.score for r in rows] == [0.9, 0.1, 0.5] and all(r.exploration is None for r in rows)
    with pytest.raises(ValueError):
        TOY.served(request, {"predictions": [0.1]}, 0)  # an answer that does not match its request


def test_an_instance_kinds_reference_labels_rows_as_served_rows_are_labelled() -> None:
    frame = pd.DataFrame(
        {"colour": ["red", "4", None], "size": [1.0, 2.0, 3.0], SCORE: [0.1, 0.2, 0.3], "ts": [1, 2, 3]}
    )
    reference = TOY.reference(frame)
    assert list(reference.columns) == list(TOY.columns)
    via_served = TOY.served({"instances": [{"colour": "red", "size": 1}, {"colour": 4, "size": 2}, {"size": 3}]},
                            {"predictions": [0.1, 0.2, 0.3]}, 0)  # fmt: skip
    assert reference.to_dict("records") == [r.values for r in via_served]


def test_the_built_in_and_test_kinds_have_their_drift_shapes() -> None:
    config = Config.model_validate({"kinds": {"toy": "tests.kinds.toy:KIND"}})
    ctr = kind(config, "ctr").drift
    assert ctr is not None and ctr.categorical == ("adexchange", "region", "slotformat", "slotvisibility")
    assert ctr.numeric == ("slotwidth", "slotheight")
    toy = kind(config, "toy").drift
    assert toy is not None and toy.columns == ("colour", "size", SCORE)


# -- detectors over a kind's columns --


def test_a_detector_over_instance_columns_round_trips_and_flags_a_shifted_window(tmp_path: Path) -> None:
    reference = TOY.reference(shoppers(3_000, seed=1))
    detector = fit_detector(reference, p_value=0.01, backend="scipy", columns=TOY_COLUMNS)
    assert detector.columns == ("colour", "size", SCORE) and detector.monitored == TOY_COLUMNS
    save_detector(detector, tmp_path / "det")
    sidecar = json.loads((tmp_path / "det" / SIDECAR).read_text())
    assert sidecar["categorical"] == ["colour"] and sidecar["numeric"] == ["size", SCORE]
    loaded = load_detector(tmp_path / "det")

    def window(frame: pd.DataFrame) -> pd.DataFrame:
        rows = [r.values for request, response in served(frame) for r in TOY.served(request, response, 0)]
        return drift_frame(rows, TOY_COLUMNS)

    clean, shifted = window(shoppers(400, seed=2)), window(shoppers(400, seed=3, colours=(0.7, 0.1, 0.1, 0.1)))
    for judge in (detector, loaded):
        assert not judge.predict(clean).drift
        report = judge.predict(shifted)
        assert report.drift and report.drifted[0] == "colour"
        assert {f.name: f.kind for f in report.features} == {
            "colour": "categorical",
            "size": "numeric",
            SCORE: "numeric",
        }
    assert loaded.predict(shifted).to_dict() == detector.predict(shifted).to_dict()
    with pytest.raises(MonitorError, match="lacks monitored columns"):
        loaded.predict(drift_frame([], BID_FILTER).head(0))  # another kind's window


def test_a_reference_file_names_its_columns_and_an_old_one_is_the_bid_filters(tmp_path: Path) -> None:
    reference = TOY.reference(shoppers(1_000, seed=1))
    write_reference(reference, tmp_path / "toy.parquet", TOY_COLUMNS)
    frame, columns = read_reference(tmp_path / "toy.parquet")
    assert columns == TOY_COLUMNS and list(frame.columns) == list(TOY.columns)
    detector = fit_from_reference(tmp_path / "toy.parquet", tmp_path / "det", 0.01, backend="scipy")
    assert load_detector(tmp_path / "det").monitored == TOY_COLUMNS and detector.monitored == TOY_COLUMNS

    legacy = pd.DataFrame([_auction_row()] * 50)
    legacy.to_parquet(tmp_path / "old.parquet", index=False)  # written before references named their columns
    assert read_reference(tmp_path / "old.parquet")[1] == BID_FILTER


def test_columns_must_be_distinct_and_leave_the_score_to_the_detector() -> None:
    with pytest.raises(MonitorError):
        Columns(("a",), ("a",))
    with pytest.raises(MonitorError):
        Columns((), (SCORE,))


# -- the monitor per kind --


def toy_config(tmp_path: Path, window: int) -> Config:
    return Config.model_validate(
        {
            "kinds": {"toy": "tests.kinds.toy:KIND"},
            "monitor": MonitorConfig(window_size=window, p_value=0.01).model_dump(),
            "canary": CanaryConfig(kind="toy", state=tmp_path / "deploy", min_requests=100).model_dump(),
        }
    )


def test_the_monitor_watches_an_instance_kind_and_rolls_its_drifted_canary_back(tmp_path: Path) -> None:
    detector = fit_detector(TOY.reference(shoppers(3_000, seed=1)), 0.01, backend="scipy", columns=TOY_COLUMNS)
    controller = RecordingController()
    watch = Monitor(toy_config(tmp_path, 200), controller, detector_loader=lambda version: detector)
    assert watch.kind == "toy" and watch.columns == TOY_COLUMNS

    clean = [
        {"role": "champion", "version": "1", "ts": 0, "request": q, "response": a} for q, a in served(shoppers(400, 2))
    ]
    assert watch.payloads(clean[:40]) == 200 and watch.payloads(clean[40:]) == 200  # a window closes per call
    assert [r.action for r in watch.history] == [None, None]  # two clean champion windows

    drifted = shoppers(400, seed=3, colours=(0.7, 0.1, 0.1, 0.1))
    canary = [{"role": "canary", "version": "2", "ts": 0, "request": q, "response": a} for q, a in served(drifted)]
    assert watch.payloads(canary[:40]) == 200
    assert watch.counts["rollbacks"] == 1 and "colour" in controller.rollbacks[0][1][0]
    status = watch.status()
    assert status["kind"] == "toy" and status["roles"]["champion"]["online_recall"] is None  # no partners, no recall
    assert status["counts"]["bad"] == 0

    # A bid-filter payload is not a toy call: counted as bad, the monitor goes on.
    assert watch.payloads([{"role": "champion", "version": "1", "request": {"instances": [{}]},
                            "response": {"predictions": [{"decisions": []}]}}]) == 0  # fmt: skip
    assert watch.counts["bad"] == 1


def test_a_kind_without_a_drift_shape_cannot_be_watched(tmp_path: Path) -> None:
    config = Config.model_validate(
        {"kinds": {"toy": "tests.kinds.toy:UNWATCHED"}, "canary": {"kind": "toy", "state": str(tmp_path)}}
    )
    with pytest.raises(ConfigError, match="no drift shape"):
        Monitor(config, None)


def test_the_answering_version_is_read_from_either_response_shape() -> None:
    assert _answering_version({"predictions": [0.1], "model_version": "3"}) == "3"
    assert _answering_version({"predictions": [{"model_version": "7", "decisions": []}]}) == "7"
    assert _answering_version({"predictions": []}) is None and _answering_version([1]) is None


# -- replaying an instance kind --


def test_instance_batches_are_distinct_bodies_of_the_models_fields() -> None:
    rows = pd.DataFrame({"colour": ["red", "blue", "red"], "size": [1.0, math.nan, 3.0], "bought": [1, 0, 1]})
    batches = list(read_instances(rows, ("colour", "size"), per_request=2))
    assert [json.loads(b.body) for b in batches] == [
        {"id": "replay-0", "instances": [{"colour": "red", "size": 1.0}, {"colour": "blue", "size": None}]},
        {"id": "replay-1", "instances": [{"colour": "red", "size": 3.0}]},
    ]
    assert not any(b.outcomes for b in batches) and len(list(read_instances(rows, ("colour",), limit=1))) == 1
    assert list(select_rows(rows, ["colour=red"])["size"]) == [1.0, 3.0]
    with pytest.raises(InputError):
        select_rows(rows, ["colour=green"])
    with pytest.raises(InputError):
        list(read_instances(rows, ("weight",)))


def test_deploying_another_kind_than_the_deployment_serves_is_refused() -> None:
    from bidflow.deploy.steps import deploy_step

    with pytest.raises(ConfigError, match="cannot be deployed into it"):
        deploy_step(Config(), "1", kind="ctr")  # the default deployment serves the bid filter


def _auction_row() -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(BID_FILTER.categorical, "x") | {"bidfloor": 0.5, "tmax": 200, SCORE: 0.5}
    return row
