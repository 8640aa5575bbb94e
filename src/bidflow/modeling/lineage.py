"""Which data a model was trained on: a version string logged with every run.

Preferred: the md5 DVC recorded for the data folder in ``dvc.lock`` (the same identifier ``dvc
checkout`` restores). When ``dvc.lock`` does not track the folder (ad-hoc data, tests), a SHA-256
over the data files' relative paths and bytes is computed here instead; for data in an object store
(``s3://``, a Spark job's input on a cluster) a SHA-256 over its files' paths, sizes and modification
times, which does not read the data; ``source`` says which.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import yaml

_CHUNK: Final = 1 << 20


@dataclass(frozen=True)
class DataVersion:
    """A data folder's version and how it was obtained."""

    path: str
    value: str
    source: Literal["dvc.lock", "sha256", "listing"]

    def tags(self) -> dict[str, str]:
        return {"data.path": self.path, "data.version": self.value, "data.version_source": self.source}


def data_version(path: Path | str, dvc_lock: Path = Path("dvc.lock")) -> DataVersion:
    """The version of ``path`` (a file or a folder): its DVC md5 if ``dvc_lock`` tracks it, else SHA-256.

    Args:
        path: the data (e.g. the ingested parquet folder or a CSV file), or an object store URI.
        dvc_lock: the lock file whose stage outputs are searched for ``path``.
    """
    if "://" in str(path):
        return DataVersion(str(path), listing_hash(str(path)), "listing")
    path = Path(path)
    md5 = _dvc_md5(path, dvc_lock)
    if md5 is not None:
        return DataVersion(str(path), md5, "dvc.lock")
    return DataVersion(str(path), content_hash(path), "sha256")


def content_hash(path: Path) -> str:
    """SHA-256 over each data file's path relative to ``path`` and its bytes, in sorted order.

    Files and folders whose names start with ``_`` or ``.`` (quarantine, summaries, staging) are
    not data and are skipped, as the parquet reader skips them.
    """
    digest = hashlib.sha256()
    if path.is_file():
        files = [path]
        base = path.parent
    else:
        base = path
        files = sorted(
            p for p in path.rglob("*") if p.is_file() and not any(part[0] in "_." for part in p.relative_to(path).parts)
        )
    for file in files:
        digest.update(file.relative_to(base).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def listing_hash(uri: str) -> str:
    """SHA-256 over the data files under ``uri`` (relative path, size, modification time); ``_``/``.`` names skipped."""
    from pyarrow import fs

    filesystem, root = fs.FileSystem.from_uri(uri)
    found = filesystem.get_file_info(fs.FileSelector(root, recursive=True, allow_not_found=True))
    if not found:
        found = [info for info in [filesystem.get_file_info(root)] if info.type == fs.FileType.File]
    digest = hashlib.sha256()
    for info in sorted(found, key=lambda i: i.path):
        relative = info.path[len(root) :].lstrip("/") or info.base_name
        if info.type != fs.FileType.File or any(part[:1] in "_." for part in relative.split("/")):
            continue
        stamp = info.mtime_ns if info.mtime_ns is not None else -1
        digest.update(f"{relative}\0{info.size}\0{stamp}\0".encode())
    return digest.hexdigest()


def _dvc_md5(path: Path, dvc_lock: Path) -> str | None:
    if not dvc_lock.is_file():
        return None
    try:
        lock: Any = yaml.safe_load(dvc_lock.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        return None  # an unreadable lock file is no version; fall back to hashing the data
    root = dvc_lock.resolve().parent
    target = path.resolve()
    for stage in (lock.get("stages") or {}).values():
        # An input DVC hashes without caching it (the research samples beside the repository) is a stage's dependency.
        for entry in [*(stage.get("outs") or []), *(stage.get("deps") or [])]:
            if isinstance(entry, dict) and "md5" in entry and (root / str(entry.get("path", ""))).resolve() == target:
                return str(entry["md5"])
    return None
