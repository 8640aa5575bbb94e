"""The bidder kind: registered like the others, refused with a pointer by the commands of the tabular loop."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bidflow.config import Config
from bidflow.errors import ConfigError
from bidflow.kinds import kind, registered_name
from bidflow.kinds.base import SCORE

REPO = Path(__file__).resolve().parents[3]


def bidflow(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIDFLOW__")} | {"COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "bidflow.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


def test_the_bidder_is_a_registered_kind_with_its_own_loop_and_gate() -> None:
    bidder = kind(Config(), "bidder")
    assert registered_name(Config(), "bidder") == "bidder"
    assert bidder.served_model == "bidflow.serving.bidder:BidderModel"
    assert not bidder.tabular and bidder.commands == "bidder" and bidder.gates == ("replay",)
    assert kind(Config(), "ctr").tabular and kind(Config(), "ctr").gates == ("evaluation", "fairness")
    assert bidder.default_source(Config()) == Config().bidder.data
    assert bidder.drift is not None and bidder.drift_features == ("campaign", "pctr")
    rows = bidder.drift.served({"instances": [{"campaign": "2997", "pctr": 0.001, "auction": "a1"}]},
                               {"predictions": [42]}, 0)  # fmt: skip
    assert rows[0].values == {"campaign": "2997", "pctr": 0.001, SCORE: 42.0}


def test_the_tabular_steps_refuse_it_before_reading_anything() -> None:
    from bidflow.modeling.steps import drift_reference_step, evaluate_step, fairness_step, train_step

    config = Config()
    for call in (
        lambda: train_step(config, "bidder"),
        lambda: evaluate_step(config, "bidder"),
        lambda: fairness_step(config, "bidder"),
        lambda: drift_reference_step(config, kind="bidder"),
    ):
        with pytest.raises(ConfigError, match="does not go through") as error:
            call()
        assert "bidflow bidder --help" in (error.value.hint or "")
    with pytest.raises(ConfigError, match="not trained on rows"):
        kind(config, "bidder").load_rows(config, Path("x"), None, None)


@pytest.mark.parametrize(
    "args",
    [
        ("train", "--kind", "bidder"),
        ("evaluate", "--kind", "bidder"),
        ("fairness", "--kind", "bidder"),
        ("explain", "requests.jsonl", "--kind", "bidder"),
        ("features", "training-set", "--kind", "bidder", "--out", "x.parquet"),
    ],
)
def test_the_tabular_commands_say_where_to_go(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = bidflow(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "bidflow bidder --help" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("bidder", "fit", "--level", "0"), "a budget level must lie in (0, 1]"),
        (("bidder", "fit", "--level", "3/2"), "a budget level must lie in (0, 1]"),
        (("bidder", "fit", "--level", "half"), "not a budget level"),
        (("bidder", "fit", "--data", "no/such/folder"), "bidder data folder not found"),
        (("bidder", "replay", "--policy", "greedy"), "unknown policy"),
    ],
)
def test_bad_bidder_input_is_a_message_and_exit_2(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = bidflow(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in " ".join(result.stderr.split()) and "Traceback" not in result.stderr


def test_kinds_lists_the_bidder_and_how_it_is_trained(tmp_path: Path) -> None:
    result = bidflow("kinds", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "bidder" in result.stdout and "bidflow bidder" in result.stdout
