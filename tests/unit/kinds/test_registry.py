"""The model-kind registry: lookup, registration from the configuration, strict per-kind settings."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bidflow.config import Config
from bidflow.errors import ConfigError
from bidflow.kinds import BUILTIN, kind, kind_names, registered_name
from bidflow.kinds.base import Kind

REPO = Path(__file__).resolve().parents[3]
SRC = REPO / "src" / "bidflow"
TOY = {"kinds": {"toy": "tests.kinds.toy:KIND"}}


def test_the_built_in_kinds_and_a_registered_one_are_listed() -> None:
    assert kind_names(Config()) == ("bid_filter", "ctr", "bidder", "fraud")
    config = Config.model_validate(TOY)
    assert kind_names(config) == ("bid_filter", "ctr", "bidder", "fraud", "toy")
    toy = kind(config, "toy")
    assert isinstance(toy, Kind) and toy.label == "bought" and registered_name(config, "toy") == "toy_model"


def test_an_unknown_kind_names_the_registered_ones() -> None:
    with pytest.raises(ConfigError, match="unknown model kind") as error:
        kind(Config(), "toy")
    assert error.value.expected == "bid_filter, ctr, bidder, fraud"


def test_a_registration_that_leads_nowhere_is_a_clear_error() -> None:
    for path, message in [
        ("tests.kinds.nowhere:KIND", "does not import"),
        ("tests.kinds.toy:NOPE", "no such object"),
        ("tests.kinds.toy:write_rows", "not a bidflow Kind"),
    ]:
        with pytest.raises(ConfigError, match=message):
            kind(Config.model_validate({"kinds": {"toy": path}}), "toy")
    with pytest.raises(ConfigError, match="another name"):
        kind(Config.model_validate({"kinds": {"shop": "tests.kinds.toy:KIND"}}), "shop")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"train": {"toy": {"max_depth": 3}}}, "'train.toy' names no registered model kind"),
        ({"train": {"ctr": {"max_dept": 3}}}, "'train.ctr' has unknown keys: max_dept"),
        ({"train": {"ctr": {"max_depth": 0}}}, "'train.ctr.max_depth'"),
        ({"train": {"max_dept": 3}}, "neither a setting nor a kind's section"),
        ({"registry": {"models": {"toy": "x"}}}, "'registry.models.toy' names no registered model kind"),
        ({"canary": {"kind": "toy"}}, "'canary.kind' names no registered model kind"),
        ({"kinds": {"ctr": "tests.kinds.toy:KIND"}}, "would replace a built-in kind"),
        ({"evaluate": {"toy": {"max_auc_drop": 0.1}}}, "'evaluate.toy' names no registered model kind"),
        ({"fairness": {"ctr": {"max_recall_gapp": 0.1}}}, "'fairness.ctr' has unknown keys: max_recall_gapp"),
        ({"kinds": {"toy": "tests.kinds.toy"}}, "'module:attribute'"),
    ],
)
def test_kind_settings_are_as_strict_as_the_rest(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Config.model_validate(settings)


def test_a_kinds_training_section_overrides_only_its_own_keys() -> None:
    config = Config.model_validate({"train": {"max_depth": 5, "ctr": {"max_depth": 3, "learning_rate": 0.05}}})
    ctr, bid_filter = config.train.for_kind("ctr"), config.train.for_kind("bid_filter")
    assert (ctr.max_depth, ctr.learning_rate, ctr.n_estimators) == (3, 0.05, config.train.n_estimators)
    assert (bid_filter.max_depth, bid_filter.learning_rate) == (5, config.train.learning_rate)
    again = Config.model_validate(config.model_dump(mode="json", by_alias=True))  # what a pipeline task reads
    assert again.train.for_kind("ctr") == ctr


def test_a_kinds_gate_rules_are_its_own() -> None:
    config = Config.model_validate(
        {"evaluate": {"ctr": {"max_auc_drop": 0.02}}, "fairness": {"ctr": {"min_slice_rows": 100}}}
    )
    assert config.evaluate.for_kind("ctr").max_auc_drop == 0.02
    assert config.evaluate.for_kind("bid_filter").max_auc_drop == config.evaluate.max_auc_drop != 0.02
    assert (config.fairness.for_kind("ctr").min_slice_rows, config.fairness.for_kind("bid_filter").min_slice_rows) == (
        100,
        config.fairness.min_slice_rows,
    )


def _kind_names_in_code(path: Path) -> list[tuple[int, str]]:
    """String constants in ``path`` equal to a built-in kind's name, docstrings left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    documented = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, documented) and node.body and isinstance(node.body[0], ast.Expr)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in BUILTIN and id(node) not in docstrings
    ]


# Words a kind's name shares with a protocol, where they mean the protocol's thing: Prebid's
# ``imp.ext.prebid.bidder`` (the demand partners to call), not the bidder kind.
VOCABULARY = {("openrtb/prebid.py", "bidder"), ("data/world.py", "bidder")}


def test_no_module_outside_the_registry_and_the_kinds_own_modules_names_a_kind() -> None:
    own = {SRC / "kinds"}
    for name in BUILTIN:
        found = kind(Config(), name)
        for path in (found.pipeline, found.served_model):
            if path is not None:
                own.add(SRC.parent / (path.partition(":")[0].replace(".", "/") + ".py"))
    offenders = {
        str(path.relative_to(SRC)): hits
        for path in sorted(SRC.rglob("*.py"))
        if not any(path == o or o in path.parents for o in own)
        and (
            hits := [
                (line, word)
                for line, word in _kind_names_in_code(path)
                if (str(path.relative_to(SRC)), word) not in VOCABULARY
            ]
        )
    }
    assert not offenders, f"ask bidflow.kinds instead of spelling a kind: {offenders}"
