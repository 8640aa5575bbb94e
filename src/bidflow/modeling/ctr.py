"""The second model: click-through rate on real RTB impressions (iPinYou campaign 2997; Avazu, Criteo samples).

The data is read from ``../shared/data`` at run time and never copied into the repository (see each
folder's PROVENANCE.md: research/evaluation use only). The CTR model goes through the same path as
the bid filter -- ``FeatureSpec``, vocabulary encoding, ``train.fit``, evaluation, the registry --
only its columns and its time key differ.

iPinYou: every row of the sample is from one day (``weekday`` constant) and carries only its
``hour`` (16-19), so rows are stamped at ``day + hour`` and the time split holds out the latest
hour(s). ``hour`` and ``weekday`` are therefore not features (a held-out hour would be a value never
seen in training, and weekday carries no signal); ``advertiser`` is constant (one campaign).

Avazu: every row of the sample is from one hour, so no time split is possible; it is offered for
schema-level experiments only (``bench/bench_ctr.py`` uses a hash split on ``id`` and says so).
Criteo: 13 integer counts and 26 hashed categoricals, no time column either (hash split too).

Training settings (the ``train.ctr`` section of ``bidflow.yaml``): 200 training clicks over ~20,000
rows are too few for deep trees on category codes. Boosted stumps make an additive model -- one
step function per column, like the one-hot logistic regression it is measured against -- and a
category needs 10 training rows to get its own code (rarer ones share the *unseen* code, which
is what serving meets for a new domain or IP). Codes stay ordered by frequency: ordered by
out-of-fold click rate (``category_order: rate``) they lost on the validation hour (log loss 0.0661
against 0.0653, AUC 0.49 against 0.60), as 106 training clicks cannot rank thousands of values.
Depth, learning rate, ``min_category_count``, ``min_child_weight`` and ``reg_lambda`` were chosen
among 72 settings by log loss on the validation hour (hour 18 of the training rows; never the
hold-out). Early stopping then only picks the number of trees, and the model is refitted on all
training rows (``refit: true``): the validation hour alone holds 94 of the 200 clicks.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

from bidflow.errors import InputError
from bidflow.modeling.dataset import FeatureSpec

LABEL: Final = "click"
TIME: Final = "ts"
IPINYOU_CATEGORICAL: Final = (
    "useragent",
    "IP",
    "region",
    "city",
    "adexchange",
    "domain",
    "slotid",
    "slotvisibility",
    "slotformat",
    "creative",
    "slotprice",
)
IPINYOU_NUMERIC: Final = ("slotwidth", "slotheight")
_IPINYOU_COLUMNS: Final = ("click", "weekday", "hour", *IPINYOU_CATEGORICAL, *IPINYOU_NUMERIC, "advertiser")
AVAZU_CATEGORICAL: Final = (
    "C1",
    "banner_pos",
    "site_id",
    "site_domain",
    "site_category",
    "app_id",
    "app_domain",
    "app_category",
    "device_model",
    "device_type",
    "device_conn_type",
    "C14",
    "C15",
    "C16",
    "C17",
    "C18",
    "C19",
    "C20",
    "C21",
)
CRITEO_NUMERIC: Final = tuple(f"I{i}" for i in range(1, 14))
CRITEO_CATEGORICAL: Final = tuple(f"C{i}" for i in range(1, 27))
CRITEO_LABEL: Final = "label"
_MS_PER_HOUR: Final = 3_600_000


def ipinyou_spec(extra_numeric: tuple[str, ...] = (), feature_service: str | None = None) -> FeatureSpec:
    """The iPinYou CTR model's features (plus aggregated columns from a feature service)."""
    return FeatureSpec(
        names=(*IPINYOU_CATEGORICAL, *IPINYOU_NUMERIC, *extra_numeric),
        categorical=IPINYOU_CATEGORICAL,
        label=LABEL,
        feature_service=feature_service,
    )


def read_ipinyou_impressions(path: Path, day: datetime) -> pd.DataFrame:
    """The iPinYou sample with every column, and ``ts`` (UTC) = ``day`` + ``hour``.

    Values are kept as written (``null`` and ``other`` are categories, not missing data).

    Raises:
        InputError: the file is missing or lacks the expected columns.
    """
    if not path.is_file():
        raise InputError(
            "iPinYou sample not found",
            where=path,
            hint="clone the project with ../shared beside it, or set features.ctr_source",
        )
    text_columns = [c for c in _IPINYOU_COLUMNS if c not in {"click", "hour", "weekday", *IPINYOU_NUMERIC}]
    try:
        frame = pd.read_csv(
            path,
            usecols=list(_IPINYOU_COLUMNS),
            dtype={"click": np.int8, "hour": np.int64, "weekday": np.int64, **dict.fromkeys(text_columns, str)},
            keep_default_na=False,
        )
    except ValueError as exc:
        raise InputError(
            "iPinYou sample does not have the expected columns",
            where=path,
            expected=", ".join(_IPINYOU_COLUMNS),
            got=str(exc)[:300],
        ) from exc
    first_hour = int(day.timestamp() * 1000) // _MS_PER_HOUR
    frame[TIME] = pd.to_datetime((first_hour + frame["hour"].to_numpy(np.int64)) * _MS_PER_HOUR, unit="ms", utc=True)
    for column in IPINYOU_NUMERIC:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def avazu_spec() -> FeatureSpec:
    """The Avazu CTR features (every categorical field; ``device_id``/``device_ip`` are per-user ids)."""
    return FeatureSpec(names=AVAZU_CATEGORICAL, categorical=AVAZU_CATEGORICAL, label=LABEL)


def read_avazu(path: Path) -> pd.DataFrame:
    """The Avazu sample, every column as text except the label.

    Raises:
        InputError: the file is missing or lacks the expected columns.
    """
    if not path.is_file():
        raise InputError("Avazu sample not found", where=path, hint="clone the project with ../shared beside it")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("id", LABEL, *AVAZU_CATEGORICAL) if c not in frame.columns]
    if missing:
        raise InputError("Avazu sample lacks columns", where=path, got=f"missing {missing}")
    frame[LABEL] = frame[LABEL].astype(np.int8)
    return frame


def criteo_spec() -> FeatureSpec:
    """The Criteo features: 13 counts (numeric, missing as NaN) and 26 hashed categoricals."""
    return FeatureSpec(names=(*CRITEO_NUMERIC, *CRITEO_CATEGORICAL), categorical=CRITEO_CATEGORICAL, label=CRITEO_LABEL)


def read_criteo(path: Path) -> pd.DataFrame:
    """The Criteo sample (tab-separated, with a header): counts as floats, hashes as text.

    An empty hash stays the empty string (a value of its own, as in the original data).

    Raises:
        InputError: the file is missing or lacks the expected columns.
    """
    if not path.is_file():
        raise InputError("Criteo sample not found", where=path, hint="clone the project with ../shared beside it")
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    missing = [c for c in (CRITEO_LABEL, *CRITEO_NUMERIC, *CRITEO_CATEGORICAL) if c not in frame.columns]
    if missing:
        raise InputError("Criteo sample lacks columns", where=path, got=f"missing {missing}")
    frame[CRITEO_LABEL] = frame[CRITEO_LABEL].astype(np.int8)
    for column in CRITEO_NUMERIC:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(np.float64)
    return frame
