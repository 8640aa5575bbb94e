"""Check a JSON-lines file of bid requests (or of records holding one) and report every bad line.

``bidflow openrtb check PATH [--field F]`` is a thin wrapper around ``check_file``. The file is
streamed line by line, gzip or plain (told apart by the gzip magic bytes, not the file name).
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from bidflow.errors import InputError, OpenRTBError
from bidflow.openrtb._common import key_path
from bidflow.openrtb.context import ValidationContext
from bidflow.openrtb.decode import decode_request, decode_request_obj

_GZIP_MAGIC = b"\x1f\x8b"


class CheckFailure(msgspec.Struct, frozen=True, kw_only=True):
    """One rejected line: 1-based line number, JSON path of the offending value, what is wrong."""

    line: int
    path: str
    message: str


class CheckReport(msgspec.Struct, kw_only=True):
    """Outcome of ``check_file``.

    ``total`` counts non-blank lines, ``parsed`` the ones that hold a valid request, ``failed`` the
    others. ``failures`` lists the first ``max_failures`` of them in file order (a huge bad file
    must not turn into a huge list in memory).
    """

    source: str
    field: str | None = None
    total: int = 0
    parsed: int = 0
    failed: int = 0
    failures: list[CheckFailure] = []

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def render_text(self, max_lines: int = 20) -> str:
        """Human-readable summary for the CLI: counts, then up to ``max_lines`` failures."""
        what = f"requests under {self.field!r}" if self.field else "requests"
        lines = [f"{self.source}: {self.parsed} of {self.total} {what} valid, {self.failed} invalid"]
        for failure in self.failures[:max_lines]:
            lines.append(f"  line {failure.line}: {failure.path}: {failure.message}")
        hidden = self.failed - min(len(self.failures), max_lines)
        if hidden > 0:
            lines.append(f"  ... and {hidden} more")
        return "\n".join(lines)


def check_file(
    path: Path | str,
    field: str | None = None,
    context: ValidationContext | None = None,
    *,
    max_failures: int = 1000,
) -> CheckReport:
    """Validate every non-blank line of a JSON-lines file.

    Args:
        path: plain or gzip-compressed JSON lines.
        field: when given, each line is a record holding the request under this key; dots walk
            into nested objects (``record.request``). The request may be a JSON object or a string
            of JSON.
        context: outside knowledge for the rules (see ``ValidationContext``).
        max_failures: how many failures to keep in ``CheckReport.failures``; all are counted.

    Raises:
        InputError: the file is missing, unreadable, or its gzip stream is corrupt.
    """
    path = Path(path)
    report = CheckReport(source=str(path), field=field)
    parts = field.split(".") if field else []
    field_path = "$"
    for part in parts:
        field_path = key_path(field_path, part)
    with _open_lines(path) as lines:
        lineno = 0
        try:
            for lineno, raw in enumerate(lines, start=1):
                if not raw.strip():
                    continue
                report.total += 1
                failure = _check_line(raw, lineno, parts, field_path, context)
                if failure is None:
                    report.parsed += 1
                else:
                    report.failed += 1
                    if len(report.failures) < max_failures:
                        report.failures.append(failure)
        except (OSError, EOFError, zlib.error) as e:
            raise InputError(
                f"could not read past line {lineno}: {e}",
                where=path,
                hint="the file is truncated or corrupt; re-copy or re-compress it",
            ) from e
    return report


def _check_line(
    raw: bytes, lineno: int, parts: list[str], field_path: str, context: ValidationContext | None
) -> CheckFailure | None:
    try:
        if not parts:
            decode_request(raw, context)
            return None
        try:
            record = msgspec.json.decode(raw)
        except (msgspec.DecodeError, UnicodeError, RecursionError) as e:
            return CheckFailure(line=lineno, path="$", message=f"line is not valid JSON: {e}")
        value: Any = record
        for part in parts:
            if not isinstance(value, dict) or part not in value:
                return CheckFailure(line=lineno, path=field_path, message=f"record has no field {'.'.join(parts)!r}")
            value = value[part]
        if value is None:
            return CheckFailure(line=lineno, path=field_path, message="the request field is null")
        if isinstance(value, str):
            decode_request(value, context)  # the request stored as a string of JSON
        else:
            decode_request_obj(value, context)
        return None
    except OpenRTBError as e:
        path = e.path if not parts else field_path + e.path[1:]
        return CheckFailure(line=lineno, path=path, message=_describe(e))


def _describe(e: OpenRTBError) -> str:
    text = e.what
    if e.expected is not None:
        text += f"; expected {e.expected}"
    if e.got is not None:
        text += f"; got {e.got}"
    return text


@contextmanager
def _open_lines(path: Path) -> Iterator[io.BufferedIOBase]:
    try:
        with path.open("rb") as probe:
            magic = probe.read(2)
    except FileNotFoundError as e:
        raise InputError("file not found", where=path, hint="check the path") from e
    except IsADirectoryError as e:
        raise InputError("expected a JSON-lines file, got a directory", where=path) from e
    except OSError as e:
        raise InputError(f"cannot read the file: {e.strerror}", where=path) from e
    stream = _gzip_open(path) if magic == _GZIP_MAGIC else path.open("rb")
    with stream:
        yield stream


def _gzip_open(path: Path) -> io.BufferedIOBase:
    # isal reads the same gzip format several times faster; stdlib gzip keeps this module usable
    # in environments without it (the drift-monitor image).
    try:
        from isal import igzip
    except ImportError:
        return gzip.open(path, "rb")
    stream: io.BufferedIOBase = igzip.open(path, "rb")
    return stream
