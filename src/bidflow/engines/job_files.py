"""What a Spark step hands back to the task that submitted it: a JSON report and a model bundle, at a URI.

On a cluster the step runs in a driver pod of its own, not in the pipeline task's container, so what the
task needs from it (the rows a build wrote, a trained model and its MLflow run) travels through the object
store: ``s3://`` on EKS, read and written with the pod's credentials (IRSA), or a folder when the step
runs here. pyarrow's file systems do both with the same calls.
"""

from __future__ import annotations

import json
import tempfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bidflow.errors import InputError

if TYPE_CHECKING:
    from pyarrow.fs import FileSystem

    from bidflow.features.build import BuildSummary


def _resolve(uri: str) -> tuple[FileSystem, str]:
    from pyarrow import fs

    if "://" in uri:
        filesystem, path = fs.FileSystem.from_uri(uri)
        return filesystem, str(path)
    return fs.LocalFileSystem(), str(Path(uri).absolute())


def write_json(uri: str, data: dict[str, Any]) -> None:
    """Write ``data`` as a JSON document at ``uri`` (its folder is created)."""
    filesystem, path = _resolve(uri)
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with filesystem.open_output_stream(path) as stream:
        stream.write(json.dumps(data, indent=1, default=_default).encode("utf-8"))


def read_json(uri: str) -> dict[str, Any]:
    """The JSON document at ``uri``.

    Raises:
        InputError: nothing is there (the step did not write its report).
    """
    filesystem, path = _resolve(uri)
    try:
        with filesystem.open_input_stream(path) as stream:
            data = json.loads(stream.read().decode("utf-8"))
    except FileNotFoundError as exc:
        raise InputError("the Spark step's report is missing", where=uri, hint="read the driver's log") from exc
    if not isinstance(data, dict):
        raise InputError("the Spark step's report is not a JSON object", where=uri)
    return data


def upload(folder: Path, uri: str) -> None:
    """Copy the files of ``folder`` to ``uri`` (a folder URI or path)."""
    from pyarrow import fs

    filesystem, path = _resolve(uri)
    filesystem.create_dir(path, recursive=True)
    fs.copy_files(
        str(folder.absolute()), path, source_filesystem=fs.LocalFileSystem(), destination_filesystem=filesystem
    )


def download(uri: str, folder: Path) -> Path:
    """Copy the files under ``uri`` into ``folder``; returns ``folder``.

    Raises:
        InputError: nothing is there.
    """
    from pyarrow import fs

    filesystem, path = _resolve(uri)
    if filesystem.get_file_info(path).type == fs.FileType.NotFound:
        raise InputError("the Spark step's output is missing", where=uri, hint="read the driver's log")
    folder.mkdir(parents=True, exist_ok=True)
    fs.copy_files(
        path, str(folder.absolute()), source_filesystem=filesystem, destination_filesystem=fs.LocalFileSystem()
    )
    return folder


def save_bundle(model: Any, uri: str) -> None:
    """``bidflow.modeling.train.save_model`` to a folder or a URI."""
    from bidflow.modeling.train import save_model

    if "://" not in uri:
        save_model(model, Path(uri))
        return
    with tempfile.TemporaryDirectory(prefix="bidflow-model-") as tmp:
        upload(save_model(model, Path(tmp)), uri)


def summary_facts(summary: BuildSummary) -> dict[str, Any]:
    """A feature build's summary as a JSON object (``summary_from``'s input)."""
    return {"out": summary.out, "rows": dict(summary.rows), "first": summary.first, "last": summary.last,
            "seconds": summary.seconds}  # fmt: skip


def summary_from(facts: dict[str, Any]) -> BuildSummary:
    """The ``BuildSummary`` a report holds (``summary_facts``)."""
    from bidflow.features.build import BuildSummary

    def when(value: Any) -> datetime | None:
        return datetime.fromisoformat(value) if value else None

    return BuildSummary(
        out=str(facts["out"]),
        rows={str(k): int(v) for k, v in dict(facts.get("rows") or {}).items()},
        first=when(facts.get("first")),
        last=when(facts.get("last")),
        seconds=float(facts.get("seconds") or 0.0),
    )


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
