"""The data version of an object store location (a Spark job's ``s3://`` input): a listing hash, over moto's S3."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bidflow.modeling.lineage import data_version
from tests.moto_server import moto_endpoint, s3_bucket

__all__ = ["moto_endpoint"]

pytestmark = [pytest.mark.integration]

BUCKET = "bidflow-lineage"


@pytest.fixture
def bucket(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with s3_bucket(moto_endpoint, BUCKET, monkeypatch):
        yield BUCKET


def _put(key: str, body: bytes) -> None:
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(f"s3://{BUCKET}/{key}")
    with filesystem.open_output_stream(path) as stream:
        stream.write(body)


def test_a_changed_file_changes_the_version_and_a_marker_does_not(bucket: str) -> None:
    _put("batch/hour=00/part-0.parquet", b"a" * 100)
    _put("batch/hour=01/part-0.parquet", b"b" * 100)
    first = data_version(f"s3://{bucket}/batch")
    assert first.source == "listing" and first.path == f"s3://{bucket}/batch" and len(first.value) == 64
    assert data_version(f"s3://{bucket}/batch").value == first.value  # nothing changed, nothing read

    _put("batch/_SUCCESS", b"")  # Spark's marker and staging files are not data
    assert data_version(f"s3://{bucket}/batch").value == first.value
    _put("batch/hour=01/part-0.parquet", b"c" * 101)
    assert data_version(f"s3://{bucket}/batch").value != first.value
    _put("other/part-0.parquet", b"a" * 100)
    assert data_version(f"s3://{bucket}/other").value != first.value
