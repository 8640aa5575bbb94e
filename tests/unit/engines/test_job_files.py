"""``bidflow.engines.job_files``: what a Spark step hands back to the task that submitted it, through a folder."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from bidflow.engines import job_files
from bidflow.errors import InputError
from bidflow.features.build import BuildSummary


def test_a_build_summary_survives_the_report(tmp_path: Path) -> None:
    summary = BuildSummary(
        out="s3://b/features",
        rows={"partner_stats": 120, "publisher_stats": np.int64(7)},
        first=datetime(2026, 11, 2, 1, tzinfo=UTC),
        last=datetime(2026, 11, 2, 6, tzinfo=UTC),
        seconds=1.5,
    )
    uri = str(tmp_path / "task.spark" / "report.json")  # its folder does not exist yet
    job_files.write_json(uri, job_files.summary_facts(summary))
    assert job_files.summary_from(job_files.read_json(uri)) == summary


def test_a_missing_report_or_output_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="report is missing"):
        job_files.read_json(str(tmp_path / "absent.json"))
    with pytest.raises(InputError, match="output is missing"):
        job_files.download(str(tmp_path / "absent"), tmp_path / "to")
    (tmp_path / "list.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(InputError, match="not a JSON object"):
        job_files.read_json(str(tmp_path / "list.json"))


def test_a_folder_goes_up_and_comes_back_file_for_file(tmp_path: Path) -> None:
    source = tmp_path / "bundle"
    (source / "inner").mkdir(parents=True)
    (source / "model.ubj").write_bytes(bytes(range(256)) * 10)
    (source / "inner" / "bidflow_model.json").write_text('{"a": 1}', encoding="utf-8")
    job_files.upload(source, str(tmp_path / "remote" / "model"))
    back = job_files.download(str(tmp_path / "remote" / "model"), tmp_path / "task" / "model")
    assert sorted(p.relative_to(back).as_posix() for p in back.rglob("*") if p.is_file()) == [
        "inner/bidflow_model.json",
        "model.ubj",
    ]
    assert (back / "model.ubj").read_bytes() == (source / "model.ubj").read_bytes()
