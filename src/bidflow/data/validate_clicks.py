"""The data gate of the fraud kind: TalkingData click files, checked before anything trains on them.

The file is read as text first, so a bad value is a reported check (column, count, examples) rather
than a parse error: ids must be non-negative integers, ``click_time`` a ``YYYY-MM-DD HH:MM:SS`` time,
``is_attributed`` 0 or 1, and an attributed click's ``attributed_time`` must not precede its click.
Then the batch as a whole: enough rows, a converting share within ``fraud.converting_share`` (a file
of all zeros or all ones is a broken export, not a market), and few exact duplicate clicks. The
report has the shape and the writers of the auction-log gate (``bidflow.data.validate``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

import pandas as pd
import pandera.errors
import pandera.pandas as pa

from bidflow.data.validate import CheckResult, ValidationReport, summarise_failures
from bidflow.errors import InputError

if TYPE_CHECKING:
    from bidflow.config import FraudConfig, ValidateConfig

ID_COLUMNS: Final = ("ip", "app", "device", "os", "channel")
COLUMNS: Final = (*ID_COLUMNS, "click_time", "attributed_time", "is_attributed")
TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"


def click_schema() -> pa.DataFrameSchema:
    """The schema of a click file after ``parse`` (unparseable values have become nulls)."""
    return pa.DataFrameSchema(
        {
            # Nulls are the values that did not parse: ``_unparsed`` reports them with the text they had.
            **{name: pa.Column(float, pa.Check.ge(0), nullable=True) for name in ID_COLUMNS},
            "click_time": pa.Column("datetime64[ns, UTC]", nullable=True),
            "attributed_time": pa.Column("datetime64[ns, UTC]", nullable=True),
            "is_attributed": pa.Column(float, pa.Check.isin([0.0, 1.0]), nullable=True),
        },
        checks=[
            pa.Check(
                lambda df: df["attributed_time"].isna() | (df["attributed_time"] >= df["click_time"]),
                name="attributed_after_click",
            ),
            pa.Check(lambda df: (df[list(ID_COLUMNS)].fillna(0) % 1 == 0).all(axis=1), name="whole_number_ids"),
        ],
        strict=False,
        ordered=False,
    )


def read_text(path: Path) -> pd.DataFrame:
    """The click file with every value as text (nothing is parsed yet).

    Raises:
        InputError: the file is missing, unreadable, or lacks a TalkingData column.
    """
    if not path.is_file():
        raise InputError("TalkingData click file not found", where=path, hint="set fraud.source in bidflow.yaml")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise InputError("not a readable CSV click file", where=path, got=f"{type(exc).__name__}: {exc}") from exc
    missing = sorted(set(COLUMNS) - set(frame.columns))
    if missing:
        raise InputError("not a TalkingData click file", where=path, expected=", ".join(COLUMNS),
                         got=f"missing {missing}")  # fmt: skip
    return frame


def parse(text: pd.DataFrame) -> pd.DataFrame:
    """Numbers and UTC times from the text columns; a value that does not parse becomes null."""
    out = pd.DataFrame({name: pd.to_numeric(text[name], errors="coerce").astype(float) for name in ID_COLUMNS})
    for name in ("click_time", "attributed_time"):
        out[name] = pd.to_datetime(text[name].replace("", None), format=TIME_FORMAT, errors="coerce", utc=True)
    out["is_attributed"] = pd.to_numeric(text["is_attributed"], errors="coerce").astype(float)
    return out


def validate_clicks(path: Path, fraud: FraudConfig, cfg: ValidateConfig) -> ValidationReport:
    """Every check over the click file at ``path``; never raises for bad data (``bidflow.data.validate.enforce``).

    Raises:
        InputError: the file cannot be read as a TalkingData click file at all.
    """
    text = read_text(path)
    frame = parse(text)
    checks = _unparsed(text, frame) + _schema_checks(frame)
    rows = len(frame)
    enough = rows >= cfg.min_rows
    checks.append(CheckResult("distribution", "row_count", "", enough, f"{rows:,}", f">= {cfg.min_rows:,}"))
    low, high = fraud.converting_share
    share = float(frame["is_attributed"].mean()) if rows else float("nan")
    checks.append(CheckResult("distribution", "converting_share", "is_attributed", bool(low <= share <= high),
                              f"{share:.4%}", f"{low:.4%} .. {high:.4%}"))  # fmt: skip
    duplicated = float(frame.duplicated(subset=[*ID_COLUMNS, "click_time"]).mean()) if rows else 0.0
    checks.append(CheckResult("distribution", "duplicate_clicks", "", duplicated <= fraud.max_duplicate_share,
                              f"{duplicated:.2%} of rows", f"<= {fraud.max_duplicate_share:.2%}"))  # fmt: skip
    stamps = frame["click_time"].dropna()
    window = f"{stamps.min():%Y-%m-%d %H:%M} .. {stamps.max():%Y-%m-%d %H:%M} UTC" if len(stamps) else "empty"
    return ValidationReport(batch=str(path), reference=None, rows=rows, window=window, checks=checks)


_FRAME_CHECKS: Final = ("attributed_after_click", "whole_number_ids")


def _unparsed(text: pd.DataFrame, frame: pd.DataFrame) -> list[CheckResult]:
    """One failing check per column with values that are empty or not of its type, quoting them."""
    results = []
    for name in (*ID_COLUMNS, "click_time", "is_attributed", "attributed_time"):
        bad = frame[name].isna()
        if name == "attributed_time":
            bad &= text[name] != ""  # empty: the click did not convert
        if bad.any():
            examples = ", ".join(repr(v) for v in text.loc[bad, name].drop_duplicates().head(3))
            expected = "YYYY-MM-DD HH:MM:SS" if name.endswith("_time") else "a number"
            results.append(CheckResult("schema", "unparseable", name, False,
                                       f"{int(bad.sum())} value(s), e.g. {examples}", expected))  # fmt: skip
    return results


def _schema_checks(frame: pd.DataFrame) -> list[CheckResult]:
    schema = click_schema()
    try:
        schema.validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        return summarise_failures(exc.failure_cases, _FRAME_CHECKS)
    return [CheckResult("schema", "schema", "*", True, f"{len(schema.columns)} columns conform", "click schema")]
