"""One strict configuration object: file, then environment, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bidflow.config import Config, load_config
from bidflow.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_the_shipped_config_file_is_valid_and_matches_the_defaults_where_it_says_so() -> None:
    config = load_config(REPO / "bidflow.yaml", environ={})
    assert config.simulate.hours == 6 and config.paths.raw == Path("data/raw")
    assert config.validate_.max_psi == Config().validate_.max_psi


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("simulate:\n  hours: 3\n")
    env = {"BIDFLOW__SIMULATE__HOURS": "5", "BIDFLOW__INGEST__MAX_BAD_SHARE": "0.2", "UNRELATED": "x"}
    config = load_config(path, environ=env)
    assert config.simulate.hours == 5 and config.ingest.max_bad_share == 0.2


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("simulate:\n  hourz: 3\n", {}, "simulate.hourz"),
        ("simulate:\n  hours: -1\n", {}, "simulate.hours"),
        ("simulate:\n  scenario: tsunami\n", {}, "simulate.scenario"),
        ("", {"BIDFLOW__VALIDATE__MAX_PSI": "lots"}, "validate.max_psi"),
        ("- a\n- b\n", {}, "must be a mapping"),
        ("a: [\n", {}, "not valid YAML"),
    ],
)
def test_bad_settings_name_the_key_and_the_source(tmp_path: Path, text: str, env: dict[str, str], message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")) as failure:
        load_config(path, environ=env)
    assert str(path) in failure.value.render() or "BIDFLOW__" in failure.value.render()


def test_a_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", environ={})
