"""Training sets of the velocity views through Feast equal the processor's rows (``point_in_time``).

The offline tables are the push sources' batch sources; Feast's point-in-time join over them, at each
click's own time, must find the row the stream processor wrote for that click's keys; a day and a
second after the last click (past the 24 h ttl) every view gives its defaults, then the exact values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bidflow.config import FeaturesConfig
from bidflow.features import store as feature_store
from bidflow.features.build import write_tables
from bidflow.features.talkingdata import read_clicks
from bidflow.features.velocity import VIEWS, offline_tables, point_in_time
from tests.conftest import SHARED_DATA

CLICKS = SHARED_DATA / "talkingdata_adtracking_sample" / "train_sample_2017-11-06_to_08.csv.gz"
KEYS = ["ip", "app", "device", "os"]


def test_feast_training_set_equals_the_processor_rows(cfg: FeaturesConfig, applied: Any) -> None:
    clicks = read_clicks(CLICKS)
    part = clicks[clicks["day"] == "2017-11-07"].iloc[:600]
    tables = offline_tables(part)
    write_tables(tables, cfg.offline)
    stamps = pd.to_datetime(part["ts"], unit="s", utc=True)
    entities = part[KEYS].assign(event_timestamp=stamps)
    through_feast = feature_store.training_set(applied, entities, "fraud")
    expected = point_in_time(part, tables)
    columns = [c for c in through_feast.columns if c.split("__")[0] in VIEWS]
    assert len(columns) == 8
    np.testing.assert_array_equal(through_feast[columns].to_numpy(float), expected[columns].to_numpy(float))
    past_ttl = stamps.max() + pd.Timedelta("1D1s")  # a day and a second after the last click
    later = feature_store.training_set(applied, entities.assign(event_timestamp=past_ttl), "fraud")
    counts = [c for c in columns if not c.endswith("seconds_since_previous")]
    assert (later[counts] == 0).all().all() and later[columns[-1]].isna().all()
