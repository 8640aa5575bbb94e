"""The monitor's intake token: created once with owner-only access, shared by every local process."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bidflow.config import CanaryConfig, Config, MonitorConfig
from bidflow.errors import ConfigError
from bidflow.monitoring.auth import authorized, bearer, monitor_token, token_path


def test_the_local_token_is_made_once_readable_by_its_owner_only(tmp_path: Path) -> None:
    config = Config(canary=CanaryConfig(state=tmp_path / "deploy"))
    with ThreadPoolExecutor(8) as pool:  # router, monitor and replay may start together
        tokens = set(pool.map(lambda _: monitor_token(config), range(16)))
    assert len(tokens) == 1 and len(next(iter(tokens))) >= 32
    assert stat.S_IMODE(token_path(config).stat().st_mode) == 0o600
    assert [p.name for p in (tmp_path / "deploy").iterdir()] == ["monitor.token"], "no staged file left behind"


def test_a_configured_token_file_must_exist_and_hold_a_secret(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    config = Config(monitor=MonitorConfig(token_file=secret))
    with pytest.raises(ConfigError, match="missing"):
        monitor_token(config)
    secret.write_text("short\n")
    with pytest.raises(ConfigError, match="too short"):
        monitor_token(config)
    secret.write_text("a-long-enough-mounted-secret\n")
    assert monitor_token(config) == "a-long-enough-mounted-secret"


def test_authorization_takes_the_header_or_the_query_parameter() -> None:
    token = "a-long-enough-mounted-secret"
    assert authorized(bearer(token)["authorization"], None, token)
    assert authorized(None, token, token)
    assert not authorized(None, None, token)
    assert not authorized("Bearer nope", None, token) and not authorized(token, None, token)
