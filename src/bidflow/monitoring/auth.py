"""Who may feed the drift monitor: a shared bearer token, compared in constant time.

The monitor's intake can roll a canary back, so it is a trust boundary. Senders (the router, the
replay client, KServe's payload logger) prove themselves with a token that only the deployment's
workloads can read: on Kubernetes a Secret mounted as a file (``monitor.token_file``); locally a
file under ``canary.state`` that whoever starts first creates with mode 0600. A request carries it
as ``Authorization: Bearer <token>``; KServe's payload logger cannot add headers, so its URL carries
it instead (``?token=<token>``), which is why the logger's URL is itself treated as a secret.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Final

from bidflow.errors import ConfigError

if TYPE_CHECKING:
    from bidflow.config import Config

TOKEN_FILE: Final = "monitor.token"
QUERY_PARAMETER: Final = "token"
_MIN_LENGTH: Final = 16


def token_path(config: Config) -> Path:
    """Where the token is: ``monitor.token_file``, else ``canary.state/monitor.token``."""
    return config.monitor.token_file or config.canary.state / TOKEN_FILE


def monitor_token(config: Config, *, create: bool = True) -> str:
    """The intake token, created (random, mode 0600) when the local default file does not exist yet.

    Raises:
        ConfigError: a configured ``monitor.token_file`` is missing or holds too short a token.
    """
    path = token_path(config)
    if not path.is_file():
        if config.monitor.token_file is not None or not create:
            raise ConfigError(
                "the monitor's token file is missing",
                where=path,
                hint="mount the token Secret there, or leave monitor.token_file unset locally",
            )
        _create(path)
    token = path.read_text(encoding="utf-8").strip()
    if len(token) < _MIN_LENGTH:
        raise ConfigError(
            "the monitor's token is too short to be a secret",
            where=path,
            expected=f"at least {_MIN_LENGTH} characters",
            got=f"{len(token)} characters",
        )
    return token


def bearer(token: str) -> dict[str, str]:
    """The header a sender adds."""
    return {"authorization": f"Bearer {token}"}


def authorized(header: str | None, query_token: str | None, expected: str) -> bool:
    """Whether a request's ``Authorization`` header or ``token`` query parameter carries ``expected``."""
    given = header[len("Bearer ") :].strip() if header and header.startswith("Bearer ") else query_token
    return given is not None and hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _create(path: Path) -> None:
    """Write a new token beside ``path`` and link it into place: a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(secrets.token_urlsafe(32) + "\n")
    try:
        os.link(staged, path)
    except FileExistsError:
        pass  # another process created it first: theirs is used
    finally:
        staged.unlink()
