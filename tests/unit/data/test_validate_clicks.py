"""The fraud kind's data gate over real TalkingData clicks and over files broken on purpose."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from bidflow.config import Config
from bidflow.data.validate import enforce, write_report
from bidflow.data.validate_clicks import validate_clicks
from bidflow.errors import DataValidationError, InputError
from tests.conftest import SHARED_DATA

CLICKS = SHARED_DATA / "talkingdata_adtracking_sample" / "train_sample_2017-11-06_to_08.csv.gz"


def lines(n: int = 3_000) -> list[str]:
    with gzip.open(CLICKS, "rt", encoding="utf-8") as handle:
        return [next(handle).rstrip("\n") for _ in range(n)]


def test_the_real_sample_passes() -> None:
    config = Config()
    report = validate_clicks(CLICKS, config.fraud, config.validate_)
    assert report.passed and report.rows == 71_439
    assert report.window == "2017-11-06 16:00 .. 2017-11-08 23:59 UTC"
    (share,) = [c for c in report.checks if c.name == "converting_share"]
    assert share.observed == "0.2352%"


def test_bad_values_are_reported_with_what_they_were(tmp_path: Path) -> None:
    rows = lines()
    header = rows[0].split(",")
    assert header == ["ip", "app", "device", "os", "channel", "click_time", "attributed_time", "is_attributed"]
    rows[5] = "87540,x,1,13,497,2017-11-07 09:30:38,,0"  # an id that is no number
    rows[6] = "87540,12,1.5,13,497,2017-11-07 09:30:38,,0"  # nor a whole one
    rows[7] = "1,2,3,4,5,2017-13-01 00:00:00,,0"  # month 13
    rows[8] = "1,2,3,4,5,2017-11-07 10:00:00,2017-11-07 09:00:00,7"  # attributed before the click; label 7
    path = tmp_path / "clicks.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    config = Config()
    report = validate_clicks(path, config.fraud, config.validate_)
    failed = {(c.name, c.column): c.observed for c in report.failures}
    assert failed[("unparseable", "app")] == "1 value(s), e.g. 'x'"
    assert failed[("unparseable", "click_time")] == "1 value(s), e.g. '2017-13-01 00:00:00'"
    assert failed[("whole_number_ids", "")] == "1 failing row(s)"
    assert failed[("attributed_after_click", "")] == "1 failing row(s)"
    assert "7.0" in failed[("isin([0.0, 1.0])", "is_attributed")]
    html = write_report(report, tmp_path / "report")
    with pytest.raises(DataValidationError, match="data validation failed"):
        enforce(report, html)


def test_batch_level_checks(tmp_path: Path) -> None:
    rows = lines(2_000)
    path = tmp_path / "clicks.csv"
    path.write_text("\n".join([rows[0], *rows[1:], *rows[1:200]]) + "\n", encoding="utf-8")  # 199 duplicated
    config = Config()
    strict = config.fraud.model_copy(update={"max_duplicate_share": 0.01, "converting_share": (0.2, 0.9)})
    report = validate_clicks(path, strict, config.validate_.model_copy(update={"min_rows": 5_000}))
    assert {c.name for c in report.failures} == {"row_count", "converting_share", "duplicate_clicks"}


def test_not_a_click_file_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n", encoding="utf-8")
    config = Config()
    with pytest.raises(InputError, match="not a TalkingData click file"):
        validate_clicks(path, config.fraud, config.validate_)
    with pytest.raises(InputError, match="not found"):
        validate_clicks(tmp_path / "missing.csv", config.fraud, config.validate_)
