"""TalkingData AdTracking clicks (real mobile ad clicks, label ``is_attributed``) as click frames.

The sample is research-only: it is read where it lies, never copied. Each row is one click; the event
id is the row's position in the file, so the same file gives the same ids on every read (what makes a
redelivered click recognisable).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

from bidflow.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

LABEL: Final = "is_attributed"
ID_COLUMNS: Final = ("ip", "app", "device", "os", "channel")


def read_clicks(path: Path) -> pd.DataFrame:
    """The file's clicks: ``event_id``, the id columns, ``ts`` (UTC epoch seconds), ``day`` and the label.

    Raises:
        InputError: the file is missing or lacks a TalkingData column.
    """
    import pandas as pd

    if not path.is_file():
        raise InputError("TalkingData click file not found", where=path, hint="set fraud.source in bidflow.yaml")
    frame = pd.read_csv(path, dtype={name: "int64" for name in ID_COLUMNS})
    missing = sorted({*ID_COLUMNS, "click_time", LABEL} - set(frame.columns))
    if missing:
        raise InputError("not a TalkingData click file", where=path, expected="ip, app, device, os, channel, "
                         "click_time, is_attributed", got=f"missing {missing}")  # fmt: skip
    stamps = pd.to_datetime(frame["click_time"], format="%Y-%m-%d %H:%M:%S", utc=True)
    out = pd.DataFrame({"event_id": [f"td-{i}" for i in range(len(frame))]})
    for name in ID_COLUMNS:
        out[name] = frame[name].to_numpy()
    out["ts"] = stamps.astype("int64").to_numpy() // 1_000_000_000
    out["day"] = stamps.dt.strftime("%Y-%m-%d").to_numpy()
    out[LABEL] = frame[LABEL].astype("int64").to_numpy()
    return out.sort_values("ts", kind="stable").reset_index(drop=True)
