"""Ingest: logs to hourly parquet, every row accounted for, bad lines quarantined with a reason."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bidflow.config import IngestConfig
from bidflow.data.batch import read_batch
from bidflow.data.ingest import QUARANTINE_DIR, SUMMARY_FILE, ingest, parquet_schema
from bidflow.errors import IngestError, InputError
from bidflow.openrtb import decode_request_obj
from bidflow.openrtb.features import request_features
from tests.conftest import read_log


def test_one_row_per_partner_call_with_the_shared_request_features(generated_logs: Path, ingested: Path) -> None:
    records = [r for p in sorted(generated_logs.rglob("*.jsonl.gz")) for r in read_log(p)]
    table = read_batch(ingested)
    assert table.schema == parquet_schema()
    assert table.num_rows == sum(len(r["outcomes"]) for r in records)
    summary = json.loads((ingested / SUMMARY_FILE).read_text())
    assert summary["auctions"] == len(records) and summary["bad_lines"] == 0
    assert sorted(p.name for p in ingested.glob("hour=*")) == ["hour=2026-11-02T08", "hour=2026-11-02T09"]

    rows = table.to_pylist()
    by_call = {(row["auction_id"], row["partner"]): row for row in rows}
    for record in records[:: max(1, len(records) // 200)]:
        features = request_features(decode_request_obj(record["request"]), record["ts_ms"])
        for outcome in record["outcomes"]:
            row = by_call[(record["request"]["id"], outcome["partner"])]
            assert row["status"] == outcome["status"]
            assert row["bid"] == (outcome["status"] == "bid")
            assert row["price"] == outcome.get("price")
            assert row["latency_ms"] == outcome["latency_ms"]
            assert int(row["ts"].timestamp() * 1000) == record["ts_ms"]
            for name in features.__struct_fields__:
                assert row[name] == pytest.approx(getattr(features, name)), name


def _write_log(path: Path, lines: list[str], compress: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(payload) if compress else payload)


def _good_lines(generated_logs: Path, n: int) -> list[str]:
    path = next(iter(sorted(generated_logs.rglob("*.jsonl.gz"))))
    with gzip.open(path, "rt") as handle:
        return [next(handle).rstrip("\n") for _ in range(n)]


def _bad_lines(good: str) -> dict[str, str]:
    record = json.loads(good)
    wrong_type = json.loads(good)
    wrong_type["request"]["imp"][0]["bidfloor"] = "cheap"
    no_id = json.loads(good)
    del no_id["request"]["id"]
    price_on_nobid = json.loads(good)
    price_on_nobid["outcomes"][0] = {"partner": "atlas", "status": "nobid", "latency_ms": 3, "price": 1.0}
    twice = json.loads(good)
    twice["outcomes"].append(dict(twice["outcomes"][0]))
    negative_size = json.loads(good)
    negative_size["request"]["imp"][0] = {"id": "1", "banner": {"w": -300, "h": 250}}
    assert record  # the untouched line stays good
    return {
        "not json": '{"ts_ms": 1, "request": ',
        "$.request.imp[0].bidfloor": json.dumps(wrong_type),
        "$.request.id": json.dumps(no_id),
        "$.outcomes[0].price": json.dumps(price_on_nobid),
        "$.outcomes": json.dumps(twice),
        "$.request.imp[0].banner.w": json.dumps(negative_size),
    }


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "plain"])
def test_bad_lines_are_quarantined_with_line_path_and_reason(
    generated_logs: Path, tmp_path: Path, compress: bool
) -> None:
    good = _good_lines(generated_logs, 400)
    bad = _bad_lines(good[0])
    lines = good[:100] + list(bad.values()) + [""] + good[100:]
    name = "logs.jsonl.gz" if compress else "logs.jsonl"
    _write_log(tmp_path / "raw" / name, lines, compress)
    summary = ingest(tmp_path / "raw", tmp_path / "out", IngestConfig(max_bad_share=0.05))
    assert summary.lines == 400 + len(bad) and summary.bad_lines == len(bad) and summary.auctions == 400
    entries = [json.loads(line) for q in summary.quarantine for line in q.read_text().splitlines()]
    assert [e["line"] for e in entries] == list(range(101, 101 + len(bad)))
    for entry, expected_path in zip(entries, bad, strict=True):
        if expected_path == "not json":
            assert entry["path"] == "$" and "JSON" in entry["reason"]
        else:
            assert entry["path"] == expected_path, entry
        assert entry["reason"] and entry["raw"] and entry["file"] == name
    assert read_batch(tmp_path / "out").num_rows == sum(len(json.loads(g)["outcomes"]) for g in good)


def test_too_many_bad_lines_fail_and_publish_nothing(generated_logs: Path, tmp_path: Path) -> None:
    good = _good_lines(generated_logs, 50)
    _write_log(tmp_path / "raw" / "logs.jsonl.gz", good + ["not json"] * 5, compress=True)
    with pytest.raises(IngestError, match="5 of 55 lines are malformed") as failure:
        ingest(tmp_path / "raw", tmp_path / "out", IngestConfig(max_bad_share=0.05))
    assert "nothing was published" in failure.value.render()
    assert not list((tmp_path / "out").rglob("*.parquet"))
    (quarantined,) = (tmp_path / "out" / QUARANTINE_DIR).glob("*.jsonl")
    assert len(quarantined.read_text().splitlines()) == 5


def test_reingesting_replaces_rather_than_duplicates(generated_logs: Path, tmp_path: Path) -> None:
    first = ingest(generated_logs, tmp_path, IngestConfig())
    second = ingest(generated_logs, tmp_path, IngestConfig())
    assert first.rows == second.rows == read_batch(tmp_path).num_rows
    assert pq.read_metadata(second.partitions[0]).num_rows > 0


def test_missing_or_empty_input_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        ingest(tmp_path / "nope", tmp_path / "out", IngestConfig())
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no auction-log files"):
        ingest(tmp_path / "empty", tmp_path / "out", IngestConfig())


def test_a_file_spanning_hours_is_split_into_hourly_partitions(generated_logs: Path, tmp_path: Path) -> None:
    records = [r for p in sorted(generated_logs.rglob("*.jsonl.gz")) for r in read_log(p)]
    _write_log(tmp_path / "raw" / "both-hours.jsonl", [json.dumps(r) for r in records], compress=False)
    summary = ingest(tmp_path / "raw", tmp_path / "out", IngestConfig())
    per_hour: dict[str, int] = {}
    for record in records:
        hour = f"hour=2026-11-02T{record['ts_ms'] // 3_600_000 % 24:02d}"
        per_hour[hour] = per_hour.get(hour, 0) + len(record["outcomes"])
    assert sorted(per_hour) == ["hour=2026-11-02T08", "hour=2026-11-02T09"]
    written = {p.parent.name: pq.read_metadata(p).num_rows for p in summary.partitions}
    assert written == per_hour
