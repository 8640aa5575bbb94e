"""check_file: JSON lines, plain or gzip, with or without a field holding the request."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from bidflow.errors import InputError
from bidflow.openrtb import CheckFailure, CheckReport, ValidationContext, check_file

GOOD: dict[str, Any] = {
    "id": "r1",
    "imp": [{"id": "1", "banner": {"w": 300, "h": 250}}],
    "site": {"page": "https://a.example"},
}
BAD_TYPE: dict[str, Any] = {"id": "r2", "imp": [{"id": "1", "banner": {"w": "300", "h": 250}}]}
BAD_RULE: dict[str, Any] = {"id": "r3", "imp": []}

# line 1 good, 2 blank, 3 bad type, 4 not JSON, 5 whitespace only, 6 good, 7 rule broken
LINES = [json.dumps(GOOD), "", json.dumps(BAD_TYPE), "{not json", "   \t", json.dumps(GOOD), json.dumps(BAD_RULE)]
EXPECTED = [
    (3, "$.imp[0].banner.w"),
    (4, "$"),
    (7, "$.imp"),
]


def write(path: Path, lines: list[str], *, compress: bool) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def failures(report: CheckReport) -> list[tuple[int, str]]:
    return [(f.line, f.path) for f in report.failures]


@pytest.mark.parametrize("compress", [False, True])
def test_plain_and_gzip_give_the_same_report(tmp_path: Path, compress: bool) -> None:
    # The name lies on purpose: gzip is told by its magic bytes, not by the extension.
    path = write(tmp_path / ("requests.jsonl" if compress else "requests.jsonl.gz"), LINES, compress=compress)
    report = check_file(path)
    assert (report.total, report.parsed, report.failed) == (5, 2, 3)
    assert failures(report) == EXPECTED
    assert not report.ok
    assert all(isinstance(f, CheckFailure) and f.message for f in report.failures)


@pytest.mark.parametrize("compress", [False, True])
def test_field_mode(tmp_path: Path, compress: bool) -> None:
    records = [
        json.dumps({"outbound_request": GOOD, "outcome": "bid"}),
        json.dumps({"outbound_request": BAD_TYPE}),
        "",
        json.dumps({"something_else": GOOD}),
        json.dumps({"outbound_request": None}),
        json.dumps({"outbound_request": json.dumps(GOOD)}),  # request stored as a JSON string
        json.dumps({"outbound_request": json.dumps(BAD_RULE)}),
        "[1, 2",
        json.dumps(["not", "an", "object"]),
    ]
    report = check_file(write(tmp_path / "log", records, compress=compress), field="outbound_request")
    assert (report.total, report.parsed, report.failed) == (8, 2, 6)
    assert failures(report) == [
        (2, "$.outbound_request.imp[0].banner.w"),
        (4, "$.outbound_request"),
        (5, "$.outbound_request"),
        (7, "$.outbound_request.imp"),
        (8, "$"),
        (9, "$.outbound_request"),
    ]
    assert "no field 'outbound_request'" in report.failures[1].message
    assert "null" in report.failures[2].message


def test_dotted_field(tmp_path: Path) -> None:
    records = [
        json.dumps({"record": {"request": GOOD}}),
        json.dumps({"record": {"req": GOOD}}),
        json.dumps({"record": "flat"}),
    ]
    report = check_file(write(tmp_path / "log", records, compress=False), field="record.request")
    assert failures(report) == [(2, "$.record.request"), (3, "$.record.request")]


# Invalid endpoint fixtures that only a richer context rejects (known bidders, params, stores).
NEED_MORE_CONTEXT = {
    "invalid-stored/bad_stored_imp.json",
    "invalid-whole/alias-unknown-core.json",
    "invalid-whole/bid-adjustment-invalid-bidder.json",
    "invalid-whole/imp-ext-unknown-bidder.json",
    "invalid-whole/invalid-bidder-params.json",
    "invalid-whole/user-ext-prebid-buyeruids-unknown.json",
}


def test_a_whole_real_file(shared_data: Path, auction_endpoint: list[dict[str, Any]]) -> None:
    path = shared_data / "openrtb_prebid_fixtures" / "auction_endpoint_requests.jsonl.gz"
    report = check_file(path, field="request", context=ValidationContext(auction_entry=True))
    assert (report.total, report.parsed + report.failed) == (239, 239)
    expected = set()
    for line, record in enumerate(auction_endpoint, start=1):
        name = record["source_path"].split("sample-requests/")[1]
        invalid = record["category"].startswith("invalid-") and record["expected_http_status"] == 400
        if (invalid and name not in NEED_MORE_CONTEXT) or name == "valid-whole/supplementary/imp-info-invalid.json":
            expected.add(line)
    assert {f.line for f in report.failures} == expected
    assert all(f.path.startswith("$.request") for f in report.failures)


def test_context_is_passed_through(tmp_path: Path) -> None:
    no_channel = {"id": "r", "imp": [{"id": "1", "banner": {"w": 1, "h": 1}, "ext": {"a": {}}}]}
    path = write(tmp_path / "x.jsonl", [json.dumps(no_channel)], compress=False)
    assert check_file(path).ok
    assert failures(check_file(path, context=ValidationContext(auction_entry=True))) == [(1, "$")]


def test_max_failures_bounds_the_list_but_not_the_count(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.jsonl", ["{}"] * 50, compress=False)
    report = check_file(path, max_failures=5)
    assert (report.total, report.failed, len(report.failures)) == (50, 50, 5)
    text = report.render_text(max_lines=3)
    assert "0 of 50 requests valid, 50 invalid" in text
    assert "line 1: $.id:" in text
    assert "... and 47 more" in text


def test_empty_file(tmp_path: Path) -> None:
    report = check_file(write(tmp_path / "empty.jsonl", [], compress=False))
    assert (report.total, report.parsed, report.failed, report.ok) == (0, 0, 0, True)


def test_missing_file_and_directory_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found") as info:
        check_file(tmp_path / "nope.jsonl")
    assert info.value.where == str(tmp_path / "nope.jsonl")
    with pytest.raises(InputError, match="directory"):
        check_file(tmp_path)


def test_corrupt_gzip_is_an_input_error_naming_the_last_good_line(tmp_path: Path) -> None:
    data = gzip.compress(("\n".join([json.dumps(GOOD)] * 2000) + "\n").encode())
    path = tmp_path / "truncated.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="could not read past line"):
        check_file(path)
