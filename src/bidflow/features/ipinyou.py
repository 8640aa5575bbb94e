"""The iPinYou campaign-2997 sample: reading it, and when each impression happened.

The sample (``../shared/data/ipinyou_2997_sample``, see its PROVENANCE.md) carries no date and
no time within the hour: every row of the train split is from one day (``weekday`` is constant)
and has only ``hour``. Impressions of hour ``h`` are therefore placed at ``day + h`` -- the
*start* of their hour -- for training rows. Feature rows built from hour ``h`` are stamped at
its end (``day + h + 1``), so an impression never sees its own hour's clicks: the conservative
reading when nothing finer is known.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

from bidflow.errors import InputError

CTR_KEYS: Final = ("domain", "slotid", "region", "adexchange")
_COLUMNS: Final = ("click", "hour", *CTR_KEYS)
_MS_PER_HOUR: Final = 3_600_000


def read_ipinyou(path: Path) -> pd.DataFrame:
    """The CSV's label, hour and entity columns (keys as strings, exactly as written)."""
    if not path.is_file():
        raise InputError(
            "iPinYou sample not found",
            where=path,
            hint="clone the project with ../shared beside it, or set features.ctr_source",
        )
    try:
        frame = pd.read_csv(
            path,
            usecols=list(_COLUMNS),
            dtype={"click": np.int64, "hour": np.int64, **dict.fromkeys(CTR_KEYS, str)},
            keep_default_na=False,  # 'null' and 'other' are values here, not missing data
        )
    except ValueError as exc:
        raise InputError(
            "iPinYou sample does not have the expected columns", where=path, expected=", ".join(_COLUMNS), got=str(exc)
        ) from exc
    bad = frame[(frame["hour"] < 0) | (frame["hour"] > 23) | ~frame["click"].isin([0, 1])]
    if len(bad):
        raise InputError(
            f"{len(bad)} iPinYou rows have an hour outside 0-23 or a click other than 0/1",
            where=path,
            got=bad.head(3).to_dict("records").__repr__(),
        )
    return frame


def impression_hours(impressions: pd.DataFrame, day: datetime) -> np.ndarray:
    """Epoch hour (hours since 1970-01-01 UTC) of each impression's hour."""
    first = int(day.timestamp() * 1000) // _MS_PER_HOUR
    return first + impressions["hour"].to_numpy(np.int64)


def ctr_entities(impressions: pd.DataFrame, day: datetime) -> pd.DataFrame:
    """Entity rows for the ``ctr`` service: the keys, ``event_timestamp`` and the label ``click``."""
    frame = impressions[["click", *CTR_KEYS]].copy()
    frame["event_timestamp"] = pd.to_datetime(impression_hours(impressions, day) * _MS_PER_HOUR, unit="ms", utc=True)
    return frame
