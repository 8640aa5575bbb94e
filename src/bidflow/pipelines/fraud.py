"""The fraud training pipeline: wiring only (every step is a ``bidflow.components`` component).

import the TalkingData clicks -> validate them (the data gate) -> build the velocity views' offline
tables (+ apply, materialize: the online store's backfill; ``bidflow stream process`` keeps it fresh
from then on) -> train -> evaluate against the champion (AUC, PR-AUC, log loss) -> bias by device,
os and app -> (both gates passed) register -> deploy (champion, or a canary at ``canary_percent``)
-> fit the drift detectors the monitor will watch it with (the clicks' ids and the score).

As in the CTR pipeline, the deployment serves one kind (``canary.kind``): with another kind the
deploy step says so and deploys nothing (the version stays registered).
"""

from kfp import dsl

from bidflow.components.apply_features import apply_features
from bidflow.components.build_fraud_features import build_fraud_features
from bidflow.components.check_bias import check_bias
from bidflow.components.deploy_canary import deploy_canary
from bidflow.components.evaluate_model import evaluate_model
from bidflow.components.fit_drift_detector import fit_drift_detector
from bidflow.components.materialize_features import materialize_features
from bidflow.components.register_model import register_model
from bidflow.components.train_model import train_model
from bidflow.components.validate_clicks import validate_clicks
from bidflow.pipelines import _dsl, platform
from bidflow.pipelines.bid_filter import TrainingOutputs

NAME = "bidflow-fraud-training"
KIND = "fraud"
BIAS_SLICES = ["device", "os", "app"]


@_dsl.pipeline(name=NAME, description="TalkingData clicks to a gated fraud model, registered and deployed as a canary.")
def fraud_pipeline(
    clicks: str = "s3://bidflow-data/talkingdata/train_sample.csv.gz",
    config: str = "",
    feature_source: str = "feast",
    champion: str = "champion",
    canary_percent: int = 20,
) -> TrainingOutputs:
    """Train the fraud model on TalkingData clicks and register it only if both gates pass.

    Args:
        clicks: URI of the click file (CSV, gzip); its latest ``evaluate.fraud.holdout_hours`` are held out.
        config: the text of a bidflow.yaml; empty for the defaults. Secrets are not put here: the
            tasks get them from Kubernetes Secrets as BIDFLOW__* environment overrides.
        feature_source: feast (the fraud FeatureService: streaming velocity features, point in time)
            or request (the clicks' ids and hour only).
        champion: the alias or version the candidate must not be worse than; none for no comparison.
        canary_percent: share of requests the new version takes as a canary (0-100); the first
            version deployed becomes the champion instead.

    Returns:
        The candidate model, both gate verdicts and their HTML reports.
    """
    imported = dsl.importer(artifact_uri=clicks, artifact_class=dsl.Dataset, reimport=False)
    imported.set_display_name("talkingdata-clicks")
    data = imported.output

    validate = validate_clicks(clicks=data, config=config)
    platform.pure(validate)
    features = build_fraud_features(clicks=data, config=config).after(validate)
    apply = apply_features(config=config)
    materialize = materialize_features(features=features.outputs["features"], config=config).after(apply)
    for task in (features, apply, materialize):
        platform.stateful(task)
    platform.attach_secrets(features, object_store=True)
    platform.attach_secrets(apply, feature_store=True)
    platform.attach_secrets(materialize, feature_store=True)

    train = train_model(batch=data, config=config, kind=KIND, feature_source=feature_source).after(features, apply)
    platform.stateful(train, retries=1)
    platform.compute(train, cpu="2", memory="4G")
    model = train.outputs["model"]
    evaluate = evaluate_model(batch=data, model=model, config=config, kind=KIND, champion=champion)
    bias = check_bias(batch=data, model=model, config=config, kind=KIND, slices=BIAS_SLICES)
    for task in (train, evaluate, bias):
        platform.attach_secrets(task, registry=True, feature_store=True)
    platform.stateful(evaluate)
    platform.stateful(bias)

    with (
        dsl.If(evaluate.outputs["Output"] == True, name="evaluation-gate-passed"),  # noqa: E712
        dsl.If(bias.outputs["Output"] == True, name="bias-gate-passed"),  # noqa: E712
    ):
        register = register_model(model=model, config=config, kind=KIND)
        platform.stateful(register)
        platform.attach_secrets(register, registry=True)
        deploy = deploy_canary(
            model_version=register.outputs["Output"], batch=data, config=config, percent=canary_percent, kind=KIND
        ).after(materialize)
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
