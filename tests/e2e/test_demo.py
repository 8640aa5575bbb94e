"""The main job as a newcomer runs it: ``bidflow demo``, then its report in a real (headless) browser.

The demo runs once here (about five minutes on two cores): both pipeline runs, the champion and the
canary, the replay, the automatic rollback, the flood stopped by the data gate and the report. A
stale file left in ``runs/demo`` beforehand must be gone: every run starts from a fresh folder.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bidflow.demo.report import SECTIONS
from bidflow.deploy.journal import FileLog

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("demo")
    shutil.copy(REPO / "bidflow.yaml", root / "bidflow.yaml")
    stale = root / "runs" / "demo" / "stale.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("from an earlier run")
    env = os.environ | {
        "BIDFLOW__FEATURES__REPO": str(REPO / "feature_repo"),
        "BIDFLOW_MONITOR_PYTHON": str(REPO / ".venv-monitor" / "bin" / "python"),
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "COLUMNS": "200",
    }
    result = subprocess.run([str(BIN / "bidflow"), "demo"], cwd=root, env=env, capture_output=True, text=True,
                            timeout=1200)  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert not stale.exists()
    return root / "runs" / "demo", result.stdout


def test_the_demo_trains_deploys_detects_drift_and_rolls_back(demo: tuple[Path, str]) -> None:
    root, out = demo
    assert "bid_filter v1 registered, deployed as champion, drift detector fitted" in out
    assert "DVC-tracked as raw-1.dvc" in out and (root / "raw-1.dvc").is_file()
    assert "bid_filter v2 is the canary at 20 %" in out
    assert "failed 0" in out and "rolled back v2 by monitor: drift in the canary's traffic" in out
    assert "gate stopped the batch as expected" in out and "unseen_categories(publisher_id)" in out
    # What happened: each transition's outcome (the journal also holds the intent written before it).
    transitions = [t.to_dict() for t in FileLog(root / "deploy" / "transitions.jsonl").read()]
    assert [(t["action"], t["model"]["version"], t["actor"]) for t in transitions] == [
        ("deploy", "1", "pipeline"),
        ("deploy", "2", "pipeline"),
        ("rollback", "2", "monitor"),
    ]
    assert "device_type" in transitions[-1]["reasons"][0]
    assert (root / "deploy" / "retrain_requests.jsonl").read_text().strip()  # the champion's drift: retrain
    assert (root / "detectors" / "1" / "bidflow-drift.json").is_file()  # alibi-detect's saved detector
    report = (root / "reports" / "report.html").read_text()
    for section in SECTIONS:
        assert f"<h2>{section}</h2>" in report, section
    assert report.count("data:image/png;base64,") >= 10
    explanations = _section(report, "explanations")
    assert "Mean |SHAP| per feature" in explanations and explanations.count("<figure>") == 1
    assert "candidate: bid_filter v2" in explanations and "champion: bid_filter v1" in explanations
    drift = _section(report, "drift")
    # The monitor records with the rollback the features whose contributions moved most (or why it could not).
    attribution = transitions[-1]["metrics"].get("attribution") or {}
    assert "Rollback of v2: features whose contributions shifted most" in drift
    if attribution.get("features"):
        for moved in attribution["features"]:
            assert f'<td class="l">{moved["feature"]}</td>' in drift
        assert any(r.startswith("contributions shifted most: ") for r in transitions[-1]["reasons"])
    else:
        assert "No attribution was recorded" in drift or "No attribution could be made" in drift


def _section(report: str, anchor: str) -> str:
    found = re.search(rf'<section id="{anchor}">(.*?)</section>', report, re.S)
    assert found is not None, anchor
    return found.group(1)


def test_the_report_renders_in_a_browser_without_script_errors(demo: tuple[Path, str]) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: run scripts/install-browser.sh (make test does)"
    report = demo[0] / "reports" / "report.html"
    dom = subprocess.run(
        [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
         "--dump-dom", report.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    body = re.search(r"<body([^>]*)>", dom)
    assert body is not None, dom[:500]
    attributes = dict(re.findall(r'([\w-]+)="([^"]*)"', body.group(1)))
    assert attributes.get("data-errors") == "", attributes
    assert int(attributes["data-plots"]) >= 10
    assert attributes["data-plots-rendered"] == attributes["data-plots"]  # every plot decoded and laid out
