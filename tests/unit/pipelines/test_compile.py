"""The pipelines as Kubeflow receives them: compiled IR equal to the golden files, and its promises.

The golden files under ``pipelines/`` are regenerated with ``make pipelines``; a change in wiring,
a component's signature or docstring, caching, retries or secrets shows in review as a diff there.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from bidflow.cli import cli
from bidflow.components import COMPONENT_IMAGE, MONITOR_IMAGE
from bidflow.errors import ConfigError
from bidflow.kinds import kind as kind_of
from bidflow.pipelines import catalog
from bidflow.pipelines.commands import register_pipeline_commands
from bidflow.pipelines.local import LocalRunError, check_no_installs

REPO = Path(__file__).resolve().parents[3]
GOLDEN = REPO / "pipelines"
COMPONENT_MODULES = sorted(p.stem for p in (REPO / "src/bidflow/components").glob("*.py") if not p.stem.startswith("_"))
# The kinds trained through the tabular loop (train -> evaluate -> bias -> register -> deploy); a kind
# with its own commands has its own pipeline shape (tested below).
TABULAR = sorted(name for name in catalog.pipeline_names() if kind_of(None, name).tabular)
OWN_LOOP = sorted(name for name in catalog.pipeline_names() if not kind_of(None, name).tabular)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("ir")
    return {path.stem: path for path in catalog.compile_all(out)}


def _documents(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    spec, platform = yaml.safe_load_all(path.read_text(encoding="utf-8"))
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _tasks(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every task of the pipeline, at any depth of conditions, by name."""
    found = dict(spec["root"]["dag"]["tasks"])
    for name, component in spec["components"].items():
        if name.startswith("comp-condition"):
            found |= component["dag"]["tasks"]
    return found


@pytest.mark.parametrize("name", sorted(catalog.pipeline_names()))
def test_pipeline_compiles_to_its_golden_yaml(name: str, compiled: dict[str, Path]) -> None:
    golden = GOLDEN / f"{name}.yaml"
    assert golden.is_file(), f"{golden} is missing: run `make pipelines`"
    assert compiled[name].read_text() == golden.read_text(), (
        f"{golden} is stale: run `make pipelines` and review the diff"
    )


@pytest.mark.parametrize("name", sorted(catalog.pipeline_names()))
def test_every_task_runs_on_the_component_image_and_installs_nothing(name: str, compiled: dict[str, Path]) -> None:
    spec, _ = _documents(compiled[name])
    executors = spec["deploymentSpec"]["executors"]
    containers = [e["container"] for e in executors.values() if "container" in e]
    # One image for every task but the detector fit, which needs alibi-detect's own environment.
    assert {c["image"] for name, e in executors.items() if (c := e.get("container")) and "drift" not in name} == {
        COMPONENT_IMAGE
    }
    fits = [e["container"]["image"] for name, e in executors.items() if "drift" in name]
    assert fits in ([], [MONITOR_IMAGE])
    for container in containers:
        text = " ".join(container["command"] + container["args"])
        assert "pip install" not in text and "ensurepip" not in text
    check_no_installs(compiled[name])  # what `pipeline run --local` checks before it starts


def test_a_component_that_would_pip_install_is_refused(tmp_path: Path) -> None:
    from kfp import compiler, dsl

    def naive(x: int) -> int:
        return x

    def naive_pipeline(x: int = 1) -> None:
        component(x=x)

    naive.__annotations__ = {"x": int, "return": int}  # this module postpones annotations; KFP needs types
    naive_pipeline.__annotations__ = {"x": int, "return": None}
    component = dsl.component(naive, base_image="python:3.11")  # the default: pip-installs kfp first
    compiler.Compiler().compile(dsl.pipeline(naive_pipeline, name="naive"), str(tmp_path / "naive.yaml"))

    with pytest.raises(LocalRunError, match="pip-install"):
        check_no_installs(tmp_path / "naive.yaml")


def test_image_can_be_replaced_at_compile_time(tmp_path: Path) -> None:
    path = catalog.compile_pipeline("ctr", tmp_path / "ctr.yaml", image="registry.example/bidflow:test")
    spec, _ = _documents(path)
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values() if "container" in e}
    # The drift detector's fit runs on the monitor's own image (its own environment), which --image leaves alone.
    assert images == {"registry.example/bidflow:test", MONITOR_IMAGE}


@pytest.mark.parametrize("name", TABULAR)
def test_register_runs_only_when_both_gates_pass(name: str, compiled: dict[str, Path]) -> None:
    spec, _ = _documents(compiled[name])
    root = spec["root"]["dag"]["tasks"]
    assert "register-model" not in root
    outer = root["condition-1"]
    assert (
        outer["triggerPolicy"]["condition"]
        == "inputs.parameter_values['pipelinechannel--evaluate-model-Output'] == true"
    )
    inner = spec["components"]["comp-condition-1"]["dag"]["tasks"]["condition-2"]
    assert (
        inner["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--check-bias-Output'] == true"
    )
    gated = {"register-model", "deploy-canary", "fit-drift-detector"}  # every kind's pipeline deploys
    assert set(spec["components"]["comp-condition-2"]["dag"]["tasks"]) == gated
    # Deploy only the registered version, then fit the detector on its reference ...
    tasks = spec["components"]["comp-condition-2"]["dag"]["tasks"]
    assert tasks["deploy-canary"]["dependentTasks"] == ["register-model"]
    # ... and after materialize (hoisted by KFP to the gate's condition): no server starts on an empty store.
    assert "materialize-features" in root["condition-1"]["dependentTasks"]
    assert tasks["fit-drift-detector"]["dependentTasks"] == ["deploy-canary"]


@pytest.mark.parametrize("name", TABULAR)
def test_caching_and_retries_are_set_per_task(name: str, compiled: dict[str, Path]) -> None:
    tasks = _tasks(_documents(compiled[name])[0])
    stateful = {"build-features", "build-ctr-features", "build-fraud-features", "apply-features",
                "materialize-features", "evaluate-model", "check-bias", "register-model"}  # fmt: skip
    for task_name, task in tasks.items():
        if "componentRef" not in task or task_name.startswith(("condition", "importer")):
            continue
        caching = task.get("cachingOptions", {}).get("enableCache", False)
        retries = task.get("retryPolicy", {}).get("maxRetryCount", 0)
        if task_name == "ingest-logs":
            assert caching and retries == 0
        elif task_name == "validate-data":
            assert not caching and retries == 0
        elif task_name == "validate-clicks":  # reads only its input file: a rerun may reuse its verdict
            assert caching and retries == 0
        elif task_name in ("train-model", "deploy-canary"):
            assert not caching and retries == 1
        elif task_name == "fit-drift-detector":
            assert caching and retries == 0
        else:
            assert task_name in stateful
            assert not caching and retries == 2, task_name


@pytest.mark.parametrize("name", TABULAR)
def test_secrets_are_attached_by_name_only_where_needed(name: str, compiled: dict[str, Path]) -> None:
    spec, executors = _documents(compiled[name])
    secrets = {ex: {s["secretName"] for s in cfg.get("secretAsEnv", [])} for ex, cfg in executors.items()}
    assert secrets["exec-register-model"] == {"bidflow-mlflow", "bidflow-object-store"}
    assert secrets["exec-train-model"] == {"bidflow-mlflow", "bidflow-feast", "bidflow-object-store"}
    assert secrets["exec-apply-features"] == {"bidflow-feast", "bidflow-object-store"}
    assert "exec-ingest-logs" not in secrets and "exec-validate-data" not in secrets
    text = compiled[name].read_text()
    assert "postgresql" not in text and "redis:" not in text and "PASSWORD" not in text  # names, never values
    for executor in spec["deploymentSpec"]["executors"].values():
        assert "env" not in executor.get("container", {})  # nothing put in plain environment variables


@pytest.mark.parametrize("module", COMPONENT_MODULES)
def test_components_are_thin_documented_wrappers(module: str) -> None:
    import importlib

    component = getattr(importlib.import_module(f"bidflow.components.{module}"), module)
    function = component.python_func
    assert function.__name__ == module
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    statements = [s for s in body[1:] if not isinstance(s, ast.Import | ast.ImportFrom)]
    assert isinstance(body[0], ast.Expr), "a Google-style docstring comes first"
    assert 1 <= len(statements) <= 12, f"{module} has {len(statements)} statements: move logic into the core"
    spec = component.component_spec
    for kind, declared in (("Args", spec.inputs or {}), ("Returns", spec.outputs or {})):
        for name, entry in declared.items():  # KFP shows these in its UI; outputs come from "Returns:"
            assert entry.description, f"{module}: document '{name}' under {kind}:"


def test_parameters_are_typed_from_the_compiled_spec(compiled: dict[str, Path]) -> None:
    declared = catalog.parameters(compiled["bid_filter"])
    assert set(declared) == {"raw_logs", "config", "feature_source", "champion", "canary_percent"}
    assert declared["canary_percent"].default == 20
    assert declared["champion"].default == "champion"
    arguments = catalog.parse_arguments(declared, ["champion=none", "raw_logs=s3://x/y=z"])
    assert arguments == {"champion": "none", "raw_logs": "s3://x/y=z"}
    typed = {"n": catalog.Parameter("n", "NUMBER_INTEGER"), "on": catalog.Parameter("on", "BOOLEAN"),
             "xs": catalog.Parameter("xs", "LIST")}  # fmt: skip
    assert catalog.parse_arguments(typed, ["n=3", "on=True", 'xs=["a"]']) == {"n": 3, "on": True, "xs": ["a"]}
    with pytest.raises(ConfigError, match="unknown pipeline parameter"):
        catalog.parse_arguments(declared, ["hours=3"])
    with pytest.raises(ConfigError, match="wrong type"):
        catalog.parse_arguments(typed, ["n=three"])
    with pytest.raises(ConfigError, match="key=value"):
        catalog.parse_arguments(declared, ["champion"])


def test_compile_command_writes_every_pipeline(tmp_path: Path) -> None:
    register_pipeline_commands(cli)
    register_pipeline_commands(cli)  # idempotent: cli.py may register it too
    result = CliRunner().invoke(cli, ["pipeline", "compile", "--out", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bid_filter.yaml", "bidder.yaml", "ctr.yaml", "fraud.yaml"]
    assert (tmp_path / "ctr.yaml").read_text() == (GOLDEN / "ctr.yaml").read_text()


def test_run_without_local_says_where_to_go() -> None:
    register_pipeline_commands(cli)
    result = CliRunner().invoke(cli, ["pipeline", "run"])
    assert result.exit_code != 0 and "submit" in result.output


@pytest.mark.parametrize("name", OWN_LOOP)
def test_an_own_loop_kind_registers_only_after_its_gate(name: str, compiled: dict[str, Path]) -> None:
    spec, executors = _documents(compiled[name])
    root = spec["root"]["dag"]["tasks"]
    assert "register-model" not in root
    (condition,) = [t for n, t in root.items() if n.startswith("condition")]
    assert "gate-bidder-Output'] == true" in condition["triggerPolicy"]["condition"]
    gated = spec["components"][condition["componentRef"]["name"]]["dag"]["tasks"]
    assert set(gated) == {"register-model"}
    tasks = _tasks(spec)
    assert tasks["fit-bidder"]["retryPolicy"]["maxRetryCount"] == 1
    assert not tasks["gate-bidder"].get("cachingOptions", {}).get("enableCache", False)
    secrets = {ex: {s["secretName"] for s in cfg.get("secretAsEnv", [])} for ex, cfg in executors.items()}
    assert secrets["exec-fit-bidder"] == secrets["exec-gate-bidder"] == {"bidflow-mlflow", "bidflow-object-store"}
    assert set(catalog.parameters(compiled[name])) == {"auction_data", "config", "champion"}
