"""``bidflow validate``: the data gate between ingestion and training.

Two kinds of check, every one reported with what was observed and what was expected:

- schema (pandera, evaluated lazily so every failure is collected): columns and types,
  no nulls outside ``price``, value ranges and category sets from the OpenRTB code lists,
  a bid has a positive price and nothing else has one, ``hour_of_day`` agrees with ``ts``;
- distribution against a reference profile: row count, bid rate, share of unseen
  categories, population stability index (PSI) per feature, and optionally freshness.

The report is written as Markdown, HTML and JSON; a failing gate raises
``DataValidationError`` naming the report, so a pipeline stops with a pointer to it.
"""

from __future__ import annotations

import html
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import msgspec
import numpy as np
import pandas as pd
import pandera.errors
import pandera.pandas as pa

from bidflow.config import ValidateConfig
from bidflow.data.profile import PROFILED_CATEGORIES, PROFILED_NUMBERS, DataProfile, bin_shares, build_profile
from bidflow.data.records import STATUSES
from bidflow.errors import DataValidationError

REPORT_STEM: Final = "validation"
_PSI_FLOOR: Final = 1e-4  # smoothing so a bin empty on one side does not give an infinite PSI
_PSI_TOP_CATEGORIES: Final = 20


class CheckResult(msgspec.Struct, frozen=True):
    kind: str  # schema | distribution
    name: str
    column: str
    passed: bool
    observed: str
    expected: str


class ValidationReport(msgspec.Struct, frozen=True):
    batch: str
    reference: str | None
    rows: int
    window: str  # first .. last event time of the batch (not wall-clock: reruns give the same bytes)
    checks: list[CheckResult]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]


def _text(*checks: pa.Check) -> pa.Column:
    return pa.Column(str, list(checks), nullable=False)


def _int32(*checks: pa.Check) -> pa.Column:
    return pa.Column("int32", list(checks), nullable=False)


def _one_of(*values: object) -> pa.Check:
    return pa.Check.isin(list(values))


def _flag() -> pa.Column:
    return _int32(_one_of(0, 1))


def batch_schema() -> pa.DataFrameSchema:
    """The schema every ingested batch satisfies."""
    return pa.DataFrameSchema(
        {
            "ts": pa.Column("datetime64[ms, UTC]", nullable=False),
            "auction_id": _text(),
            "partner": _text(pa.Check.str_length(1, 64)),
            "status": _text(_one_of(*STATUSES)),
            "bid": pa.Column("int8", _one_of(0, 1), nullable=False),
            "price": pa.Column(float, pa.Check.in_range(0.0, 1_000.0, include_min=False), nullable=True),
            "latency_ms": _int32(pa.Check.in_range(0, 60_000)),
            "channel": _text(_one_of("site", "app", "dooh", "unknown")),
            "publisher_id": _text(pa.Check.str_length(1, 256)),
            "category": _text(),
            "format": _text(_one_of("banner", "video", "native", "audio", "unknown")),
            "ad_size": _text(),
            "interstitial": _flag(),
            "rewarded": _flag(),
            "bidfloor": pa.Column(float, pa.Check.in_range(0.0, 1_000.0), nullable=False),
            "device_type": _int32(pa.Check.in_range(0, 8)),
            "os": _text(),
            "country": _text(pa.Check.str_matches(r"^([A-Z]{3}|unknown)$")),
            "region": _text(),
            "connection_type": _int32(pa.Check.in_range(0, 7)),
            "has_user_id": _flag(),
            "gdpr": _flag(),
            "coppa": _flag(),
            "tmax": _int32(pa.Check.in_range(0, 60_000)),
            "secure": _flag(),
            "hour_of_day": _int32(pa.Check.in_range(0, 23)),
            "day_of_week": _int32(pa.Check.in_range(0, 6)),
            # the generator's ground truth: null in real logs
            "oracle_p_bid": pa.Column("float32", pa.Check.in_range(0.0, 1.0), nullable=True),
            "oracle_bid_value": pa.Column("float32", pa.Check.ge(0.0), nullable=True),
        },
        checks=[
            # a bid has a price and nothing else has one
            pa.Check(lambda df: (df["bid"] == 1) == df["price"].notna(), name="price_iff_bid"),
            # the shared transform derived hour_of_day from the event time
            pa.Check(lambda df: df["ts"].dt.hour == df["hour_of_day"], name="hour_of_day_matches_ts"),
        ],
        strict=True,
        ordered=False,
    )


def validate_batch(
    df: pd.DataFrame,
    reference: DataProfile | None,
    cfg: ValidateConfig,
    *,
    batch_name: str,
    reference_name: str | None = None,
    now: datetime | None = None,
) -> ValidationReport:
    """Run every check over ``df``; never raises for bad data (see ``enforce``)."""
    checks = _schema_checks(df)
    checks += _distribution_checks(df, reference, cfg, now or datetime.now(UTC))
    window = "empty"
    if len(df) and "ts" in df and df["ts"].dtype.kind == "M":
        window = f"{df['ts'].min():%Y-%m-%d %H:%M} .. {df['ts'].max():%Y-%m-%d %H:%M} UTC"
    if reference is not None and reference_name is None:
        reference_name = f"profile of {reference.rows:,} rows"
    return ValidationReport(batch=batch_name, reference=reference_name, rows=len(df), window=window, checks=checks)


def enforce(report: ValidationReport, report_path: Path) -> None:
    """Raise ``DataValidationError`` if the gate failed."""
    if not report.passed:
        names = ", ".join(f"{c.name}({c.column})" if c.column else c.name for c in report.failures[:6])
        more = f" and {len(report.failures) - 6} more" if len(report.failures) > 6 else ""
        raise DataValidationError(
            f"data validation failed: {len(report.failures)} of {len(report.checks)} checks",
            report_path=report_path,
            got=names + more,
        )


_FRAME_CHECKS: Final = ("price_iff_bid", "hour_of_day_matches_ts")
_PRESENCE_CHECKS: Final = {"column_in_schema": "unexpected column", "column_in_dataframe": "missing column"}


def _schema_checks(df: pd.DataFrame) -> list[CheckResult]:
    schema = batch_schema()
    try:
        schema.validate(df, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        return summarise_failures(exc.failure_cases, _FRAME_CHECKS)
    return [CheckResult("schema", "schema", "*", True, f"{len(schema.columns)} columns conform", "batch schema")]


def summarise_failures(cases: pd.DataFrame, frame_checks: tuple[str, ...]) -> list[CheckResult]:
    """One result per failing (check, column), from pandera's one-row-per-failing-value table.

    ``frame_checks`` name the schema's frame-level checks: pandera lists every column of a failing
    row for those, so they are counted by row instead.
    """
    results = []
    for check, group in cases.groupby("check", sort=True):
        name = str(check)
        if name in _PRESENCE_CHECKS:
            for missing_or_extra in group["failure_case"].astype(str):
                results.append(
                    CheckResult("schema", _PRESENCE_CHECKS[name], str(missing_or_extra), False, "-", "batch schema")
                )
        elif name in frame_checks:
            rows = group["index"].nunique()
            results.append(CheckResult("schema", name, "", False, f"{rows} failing row(s)", "none"))
        else:
            for column, per_column in group.groupby("column", sort=True):
                examples = ", ".join(str(v) for v in per_column["failure_case"].drop_duplicates().head(3))
                observed = f"{len(per_column)} failing value(s), e.g. {examples}"
                results.append(CheckResult("schema", name, str(column), False, observed, "none"))
    return results


def _distribution_checks(
    df: pd.DataFrame, reference: DataProfile | None, cfg: ValidateConfig, now: datetime
) -> list[CheckResult]:
    rows = len(df)
    results = [CheckResult("distribution", "row_count", "", rows >= cfg.min_rows, f"{rows:,}", f">= {cfg.min_rows:,}")]
    if cfg.max_age_hours is not None and rows and "ts" in df:
        age = (now - df["ts"].max().to_pydatetime()).total_seconds() / 3600
        results.append(
            CheckResult(
                "distribution",
                "freshness",
                "ts",
                age <= cfg.max_age_hours,
                f"{age:.1f} h old",
                f"<= {cfg.max_age_hours} h",
            )
        )
    if reference is None or rows == 0 or not {"bid", *PROFILED_CATEGORIES, *PROFILED_NUMBERS} <= set(df.columns):
        return results
    current = build_profile(df)
    low, high = reference.bid_rate * (1 - cfg.bid_rate_tolerance), reference.bid_rate * (1 + cfg.bid_rate_tolerance)
    results.append(
        CheckResult(
            "distribution", "bid_rate", "bid", low <= current.bid_rate <= high,
            f"{current.bid_rate:.4f}", f"{low:.4f} .. {high:.4f} (reference {reference.bid_rate:.4f})",
        )
    )  # fmt: skip
    for column in PROFILED_CATEGORIES:
        ref, cur = reference.categories[column], current.categories[column]
        unseen = sum(share for value, share in cur.items() if value not in ref)
        results.append(
            CheckResult(
                "distribution", "unseen_categories", column, unseen <= cfg.max_unseen_category_share,
                f"{unseen:.2%} of rows" + _examples([v for v in cur if v not in ref]),
                f"<= {cfg.max_unseen_category_share:.2%}",
            )
        )  # fmt: skip
        value = psi(*_bucketed(ref, cur))
        results.append(
            CheckResult("distribution", "psi", column, value <= cfg.max_psi, f"{value:.3f}", f"<= {cfg.max_psi}")
        )
    for column in PROFILED_NUMBERS:
        bins = reference.numbers[column]
        shares = bin_shares(df[column].to_numpy(dtype=np.float64), bins.edges)
        value = psi(bins.shares, shares)
        results.append(
            CheckResult("distribution", "psi", column, value <= cfg.max_psi, f"{value:.3f}", f"<= {cfg.max_psi}")
        )
    return results


def _bucketed(ref: dict[str, float], cur: dict[str, float]) -> tuple[list[float], list[float]]:
    """Shares over the reference's most common categories plus one bucket for all the others.

    PSI over hundreds of rare categories (publishers) measures sampling noise, not drift; a
    new category that matters still shows, through the 'other' bucket and the unseen check.
    """
    top = sorted(ref, key=lambda k: (-ref[k], k))[:_PSI_TOP_CATEGORIES]
    expected = [ref[k] for k in top]
    actual = [cur.get(k, 0.0) for k in top]
    return [*expected, max(0.0, 1.0 - math.fsum(expected))], [*actual, max(0.0, 1.0 - math.fsum(actual))]


def psi(expected: list[float], actual: list[float]) -> float:
    """Population stability index between two share vectors over the same bins.

    Scalar ``math`` on purpose: numpy's ``log`` takes a SIMD path chosen by the CPU at run time
    (AVX-512 machines use another approximation), and the report's bytes must not depend on it.
    """
    e = [max(x, _PSI_FLOOR) for x in expected]
    a = [max(x, _PSI_FLOOR) for x in actual]
    e_total, a_total = math.fsum(e), math.fsum(a)
    e, a = [x / e_total for x in e], [x / a_total for x in a]
    return math.fsum((ai - ei) * math.log(ai / ei) for ei, ai in zip(e, a, strict=True))


def _examples(values: list[str]) -> str:
    return f" (e.g. {', '.join(values[:3])})" if values else ""


def write_report(report: ValidationReport, out_dir: Path) -> Path:
    """Write ``validation.{md,html,json}`` to ``out_dir``; returns the HTML path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{REPORT_STEM}.json").write_bytes(
        msgspec.json.format(msgspec.json.encode({"passed": report.passed} | msgspec.structs.asdict(report)), indent=2)
    )
    (out_dir / f"{REPORT_STEM}.md").write_text(_markdown(report), encoding="utf-8")
    html_path = out_dir / f"{REPORT_STEM}.html"
    html_path.write_text(_html(report), encoding="utf-8")
    return html_path


def _verdict(report: ValidationReport) -> str:
    return "PASSED" if report.passed else f"FAILED ({len(report.failures)} of {len(report.checks)} checks)"


def _markdown(report: ValidationReport) -> str:
    lines = [
        f"# Data validation: {_verdict(report)}",
        "",
        f"- batch: `{report.batch}` ({report.rows:,} rows)",
        f"- reference: `{report.reference or 'none (schema checks only)'}`",
        f"- time window: {report.window}",
        "",
        "| result | kind | check | column | observed | expected |",
        "|---|---|---|---|---|---|",
    ]
    ordered = sorted(report.checks, key=lambda c: (c.passed, c.kind, c.name, c.column))
    for c in ordered:
        cells = ("pass" if c.passed else "**FAIL**", c.kind, c.name, c.column, c.observed, c.expected)
        lines.append("| " + " | ".join(text.replace("|", "\\|") for text in cells) + " |")
    return "\n".join(lines) + "\n"


def _html(report: ValidationReport) -> str:
    rows = []
    for c in sorted(report.checks, key=lambda c: (c.passed, c.kind, c.name, c.column)):
        cls = "pass" if c.passed else "fail"
        cells = (cls.upper(), c.kind, c.name, c.column, c.observed, c.expected)
        rows.append(f'<tr class="{cls}">' + "".join(f"<td>{html.escape(v)}</td>" for v in cells) + "</tr>")
    status = "pass" if report.passed else "fail"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Data validation: {html.escape(_verdict(report))}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #1d2330; }}
h1 .pass {{ color: #1a7f37; }} h1 .fail {{ color: #cf222e; }}
table {{ border-collapse: collapse; width: 100%; font-size: 0.9rem; }}
td, th {{ border-bottom: 1px solid #d8dee4; padding: 0.35rem 0.6rem; text-align: left; }}
tr.fail td:first-child {{ color: #cf222e; font-weight: 600; }} tr.pass td:first-child {{ color: #1a7f37; }}
</style></head><body>
<h1>Data validation: <span class="{status}">{html.escape(_verdict(report))}</span></h1>
<p>Batch <code>{html.escape(report.batch)}</code>: {report.rows:,} rows.
Reference: <code>{html.escape(report.reference or "none (schema checks only)")}</code>.
Time window: {html.escape(report.window)}.</p>
<table><thead><tr><th>result</th><th>kind</th><th>check</th><th>column</th><th>observed</th><th>expected</th></tr></thead>
<tbody>{"".join(rows)}</tbody></table></body></html>
"""
