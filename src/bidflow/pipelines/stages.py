"""The stages every tabular kind's training pipeline shares: the feature store's tasks and the gated tail.

Each kind's pipeline module imports its data and builds its features its own way, then hands the build
task to ``feature_store_tasks`` (apply, materialize) and everything to ``gated_training`` (train ->
evaluate -> bias -> register -> deploy -> fit the drift detector), so the gates, the caching and
retry policy, the secrets and the order "register only when both gates pass, deploy only after the
online store is filled" are written once.
"""

from collections.abc import Sequence
from typing import Any, NamedTuple

from kfp import dsl

from bidflow.components.apply_features import apply_features
from bidflow.components.check_bias import check_bias
from bidflow.components.deploy_canary import deploy_canary
from bidflow.components.evaluate_model import evaluate_model
from bidflow.components.fit_drift_detector import fit_drift_detector
from bidflow.components.materialize_features import materialize_features
from bidflow.components.register_model import register_model
from bidflow.components.train_model import train_model
from bidflow.pipelines import platform


class TrainingOutputs(NamedTuple):
    """What a training run hands back: the candidate and both gate verdicts with their reports."""

    model: dsl.Model
    evaluation_passed: bool
    bias_passed: bool
    evaluation_report: dsl.HTML
    bias_report: dsl.HTML


def feature_store_tasks(features: Any, config: Any, after: Any = None) -> tuple[Any, Any]:
    """Apply the Feast definitions and materialize what ``features`` (a build task) wrote: (apply, materialize)."""
    apply = apply_features(config=config)
    if after is not None:
        apply.after(after)
    materialize = materialize_features(features=features.outputs["features"], config=config).after(apply)
    for task in (features, apply, materialize):
        platform.stateful(task)
    platform.attach_secrets(features, object_store=True)  # writes the offline tables, registers nothing
    platform.attach_secrets(apply, feature_store=True)
    platform.attach_secrets(materialize, feature_store=True)
    return apply, materialize


def gated_training(
    *,
    data: Any,
    config: Any,
    kind: str,
    feature_source: Any,
    champion: Any,
    canary_percent: Any,
    slices: Sequence[str],
    features: Any,
    apply: Any,
    materialize: Any,
) -> TrainingOutputs:
    """Train ``kind`` on ``data``, gate it, and register and deploy it only when both gates pass."""
    train = train_model(batch=data, config=config, kind=kind, feature_source=feature_source).after(features, apply)
    platform.stateful(train, retries=1)
    platform.compute(train, cpu="2", memory="4G")
    model = train.outputs["model"]
    evaluate = evaluate_model(batch=data, model=model, config=config, kind=kind, champion=champion)
    bias = check_bias(batch=data, model=model, config=config, kind=kind, slices=list(slices))
    for task in (train, evaluate, bias):
        platform.attach_secrets(task, registry=True, feature_store=True)
    platform.stateful(evaluate)
    platform.stateful(bias)

    # Nested conditions: register only when both gates passed (`== True`: KFP compares channel values).
    with (
        dsl.If(evaluate.outputs["Output"] == True, name="evaluation-gate-passed"),  # noqa: E712
        dsl.If(bias.outputs["Output"] == True, name="bias-gate-passed"),  # noqa: E712
    ):
        register = register_model(model=model, config=config, kind=kind)
        platform.stateful(register)
        platform.attach_secrets(register, registry=True)
        # After materialize too: a server that starts before the online store is filled serves default features.
        deploy = deploy_canary(
            model_version=register.outputs["Output"], batch=data, config=config, percent=canary_percent, kind=kind
        ).after(materialize)
        # Deploying twice would be refused (a canary is live), so a retry is for connection errors only.
        platform.stateful(deploy, retries=1)
        platform.attach_secrets(deploy, registry=True)
        fit = fit_drift_detector(reference=deploy.outputs["reference"], config=config)
        platform.pure(fit)

    return TrainingOutputs(
        model=model,
        evaluation_passed=evaluate.outputs["Output"],
        bias_passed=bias.outputs["Output"],
        evaluation_report=evaluate.outputs["report"],
        bias_report=bias.outputs["report"],
    )
