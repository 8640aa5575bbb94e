"""The committed rules and dashboards are exactly what the code generates (golden files: `make observability`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bidflow.config import load_config
from bidflow.observability.render import CHART_DASHBOARDS, CHART_RULES_FILE, RULES_FILE, generated_files, write
from tests.conftest import REPO


@pytest.fixture(scope="module")
def generated() -> dict[str, str]:
    return generated_files(load_config(REPO / "bidflow.yaml", environ={}))


def test_committed_files_equal_the_generated_ones(generated: dict[str, str]) -> None:
    for relative, text in generated.items():
        path = REPO / relative
        assert path.is_file(), f"{relative} is missing: run `make observability`"
        assert path.read_text(encoding="utf-8") == text, f"{relative} is stale: run `make observability` and review"


def test_no_dashboard_is_left_over(generated: dict[str, str]) -> None:
    committed = {f"{CHART_DASHBOARDS}/{path.name}" for path in (REPO / CHART_DASHBOARDS).glob("*")}
    assert committed == {name for name in generated if name.startswith(CHART_DASHBOARDS)}


def test_the_chart_ships_the_same_rules_as_the_plain_file(generated: dict[str, str]) -> None:
    assert generated[CHART_RULES_FILE] == generated[RULES_FILE]


def test_render_writes_every_file_and_removes_stale_dashboards(generated: dict[str, str], tmp_path: Path) -> None:
    stale = tmp_path / CHART_DASHBOARDS / "bidflow-economics-gone.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    written = write(tmp_path, generated)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == sorted(generated)
    assert not stale.exists()
