"""alibi-detect over a kind served as instances (the CTR kind's columns): fitted from its reference file,
saved, loaded, and deciding as the scipy backend does; the CTR kind's drift shape imports here too.

The iPinYou sample has columns that never change (one ad exchange, one slot size): constant
columns must not break either backend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bidflow.kinds.base import SCORE
from bidflow.kinds.ctr import KIND as CTR
from bidflow.monitoring.drift import Columns, drift_frame, load_detector
from bidflow.monitoring.fit import fit_from_reference, write_reference

REGIONS = tuple(str(r) for r in (216, 94, 201, 124, 80, 276, 1, 2))


def impressions(n: int, seed: int, regions: tuple[float, ...] | None = None) -> pd.DataFrame:
    """CTR-like held-out rows with a score: region mix ``regions`` (default uniform), constant exchange and size."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "adexchange": "null",
            "region": rng.choice(REGIONS, size=n, p=regions),
            "slotformat": "Na",
            "slotvisibility": rng.choice(("FirstView", "OtherView"), size=n, p=(0.94, 0.06)),
            "slotwidth": 320,
            "slotheight": 50,
            SCORE: rng.beta(1, 300, size=n),
        }
    )


def window(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` as the monitor sees it served: v1 instances and their predictions through the kind's shape."""
    shape = CTR.drift
    assert shape is not None
    request = {"instances": frame.drop(columns=[SCORE]).to_dict("records")}
    rows = shape.served(request, {"predictions": frame[SCORE].tolist()}, 0)
    return drift_frame([r.values for r in rows], Columns.of(shape))


@pytest.mark.parametrize("backend", ["alibi", "scipy"])
def test_ctr_columns_round_trip_and_flag_a_region_shift(tmp_path: Path, backend: str) -> None:
    shape = CTR.drift
    assert shape is not None
    write_reference(shape.reference(impressions(3_000, seed=1)), tmp_path / "ref.parquet", Columns.of(shape))
    fitted = fit_from_reference(tmp_path / "ref.parquet", tmp_path / "det", 0.01, backend=backend)  # type: ignore[arg-type]
    loaded = load_detector(tmp_path / "det")
    assert loaded.backend == backend and loaded.columns == shape.columns == fitted.columns

    clean = loaded.predict(window(impressions(400, seed=2)))
    assert not clean.drift, clean.to_dict()
    one_region = loaded.predict(window(impressions(400, seed=3, regions=(1.0, 0, 0, 0, 0, 0, 0, 0))))
    assert one_region.drift and one_region.drifted[0] == "region"
    assert one_region.to_dict() == fitted.predict(window(impressions(400, seed=3, regions=(1.0,) + (0,) * 7))).to_dict()


def test_both_backends_decide_alike_on_instance_columns(tmp_path: Path) -> None:
    shape = CTR.drift
    assert shape is not None
    write_reference(shape.reference(impressions(3_000, seed=1)), tmp_path / "ref.parquet", Columns.of(shape))
    alibi = fit_from_reference(tmp_path / "ref.parquet", tmp_path / "alibi", 0.01, backend="alibi")
    scipy = fit_from_reference(tmp_path / "ref.parquet", tmp_path / "scipy", 0.01, backend="scipy")
    for seed, regions in ((4, None), (5, (0.5, 0.5, 0, 0, 0, 0, 0, 0))):
        current = window(impressions(400, seed=seed, regions=regions))
        a, s = alibi.predict(current), scipy.predict(current)
        assert a.drifted == s.drifted
        for fa, fs in zip(a.features, s.features, strict=True):
            assert fa.name == fs.name and fa.p_value == pytest.approx(fs.p_value, rel=1e-3, abs=1e-6)
