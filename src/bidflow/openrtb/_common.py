"""Helpers shared by the rule modules: raising with a JSON path, and building JSON paths."""

from __future__ import annotations

import re
from typing import NoReturn

from bidflow.errors import OpenRTBError

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def fail(
    path: str, what: str, *, expected: str | None = None, got: str | None = None, hint: str | None = None
) -> NoReturn:
    """Raise ``OpenRTBError`` for the value at ``path``."""
    raise OpenRTBError(what, path=path, expected=expected, got=got, hint=hint)


def key_path(base: str, key: str) -> str:
    """``$.a`` + ``b`` -> ``$.a.b``; keys that are not plain names use brackets: ``$.a['x-y']``."""
    if _PLAIN_KEY.match(key):
        return f"{base}.{key}"
    escaped = key.replace("\\", "\\\\").replace("'", "\\'")
    return f"{base}['{escaped}']"
