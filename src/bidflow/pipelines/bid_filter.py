"""The bid-filter training pipeline: wiring only (every step is a ``bidflow.components`` component).

ingest -> validate -> build features (+ apply, materialize) -> train -> evaluate -> bias ->
(both gates passed) register -> deploy (champion, or a canary at ``canary_percent``) -> fit the
drift detectors the monitor will watch it with.
"""

from typing import NamedTuple

from kfp import dsl

from bidflow.components.apply_features import apply_features
from bidflow.components.build_features import build_features
from bidflow.components.check_bias import check_bias
from bidflow.components.deploy_canary import deploy_canary
from bidflow.components.evaluate_model import evaluate_model
from bidflow.components.fit_drift_detector import fit_drift_detector
from bidflow.components.ingest_logs import ingest_logs
from bidflow.components.materialize_features import materialize_features
from bidflow.components.register_model import register_model
from bidflow.components.train_model import train_model
from bidflow.components.validate_data import validate_data
from bidflow.pipelines import _dsl, platform

NAME = "bidflow-bid-filter-training"
KIND = "bid_filter"


class TrainingOutputs(NamedTuple):
    """What a training run hands back: the candidate and both gate verdicts with their reports."""

    model: dsl.Model
    evaluation_passed: bool
    bias_passed: bool
    evaluation_report: dsl.HTML
    bias_report: dsl.HTML


@_dsl.pipeline(name=NAME, description="Auction logs to a gated bid-filter model, registered and deployed as a canary.")
def bid_filter_pipeline(
    raw_logs: str = "s3://bidflow-data/auctions/raw",
    config: str = "",
    feature_source: str = "feast",
    champion: str = "champion",
    canary_percent: int = 20,
) -> TrainingOutputs:
    """Train the bid filter on a window of auction logs and register it only if both gates pass.

    Args:
        raw_logs: URI of the auction logs to train on (a folder of hourly gzip JSON-lines files); name
            an immutable window (e.g. one day's prefix), since ingestion is cached by this URI.
        config: the text of a bidflow.yaml; empty for the defaults. Secrets are not put here: the
            tasks get them from Kubernetes Secrets as BIDFLOW__* environment overrides.
        feature_source: feast (the FeatureService training set) or request (request features only).
        champion: the alias or version the candidate must not be worse than; none for no comparison.
        canary_percent: share of requests the new version takes as a canary (0-100); the first
            version deployed becomes the champion instead.

    Returns:
        The candidate model, both gate verdicts and their HTML reports.
    """
    logs = dsl.importer(artifact_uri=raw_logs, artifact_class=dsl.Dataset, reimport=False)
    logs.set_display_name("auction-logs")
    ingest = ingest_logs(raw_logs=logs.output, config=config)
    platform.pure(ingest)
    batch = ingest.outputs["batch"]
    validate = validate_data(batch=batch, config=config)
    platform.gate(validate)

    features = build_features(batch=batch, config=config).after(validate)
    apply = apply_features(config=config).after(validate)
    materialize = materialize_features(features=features.outputs["features"], config=config).after(apply)
    for task in (features, apply, materialize):
        platform.stateful(task)
    platform.attach_secrets(features, object_store=True)  # writes the offline tables, registers nothing
    platform.attach_secrets(apply, feature_store=True)
    platform.attach_secrets(materialize, feature_store=True)

    train = train_model(batch=batch, config=config, kind=KIND, feature_source=feature_source).after(features, apply)
    platform.stateful(train, retries=1)
    platform.compute(train, cpu="2", memory="4G")
    model = train.outputs["model"]
    evaluate = evaluate_model(batch=batch, model=model, config=config, kind=KIND, champion=champion)
    bias = check_bias(batch=batch, model=model, config=config, kind=KIND, slices=[])
    for task in (train, evaluate, bias):
        platform.attach_secrets(task, registry=True, feature_store=True)
    platform.stateful(evaluate)
    platform.stateful(bias)

    # Nested conditions: register only when both gates passed (`== True`: KFP compares channel values).
    with (
        dsl.If(evaluate.outputs["Output"] == True, name="evaluation-gate-passed"),  # noqa: E712
        dsl.If(bias.outputs["Output"] == True, name="bias-gate-passed"),  # noqa: E712
    ):
        register = register_model(model=model, config=config, kind=KIND)
        platform.stateful(register)
        platform.attach_secrets(register, registry=True)
        # After materialize too: a server that starts before the online store is filled serves default features.
        deploy = deploy_canary(
            model_version=register.outputs["Output"], batch=batch, config=config, percent=canary_percent
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
