"""The CTR training pipeline: wiring only (every step is a ``bidflow.components`` component).

import the iPinYou sample -> build CTR features (+ apply, materialize) -> train -> evaluate ->
bias -> (both gates passed) register -> deploy (champion, or a canary at ``canary_percent``) -> fit
the drift detectors the monitor will watch it with (the impressions' fields and the score).

The deployment serves one kind (``canary.kind``): with ``canary.kind: ctr`` the registered version
goes out as the bid filter's do; with another kind the deploy step says so and deploys nothing
(the version stays registered, and no detector is fitted).

There is no ingest or validate step: the CTR model learns from a fixed, read-only research sample
(iPinYou campaign 2997), which the importer brings in as a dataset as it is; bidflow's ingestion and
data gate are built for OpenRTB auction logs, and the sample's loader already rejects a file
without the expected columns.
"""

from kfp import dsl

from bidflow.components.apply_features import apply_features
from bidflow.components.build_ctr_features import build_ctr_features
from bidflow.components.check_bias import check_bias
from bidflow.components.deploy_canary import deploy_canary
from bidflow.components.evaluate_model import evaluate_model
from bidflow.components.fit_drift_detector import fit_drift_detector
from bidflow.components.materialize_features import materialize_features
from bidflow.components.register_model import register_model
from bidflow.components.train_model import train_model
from bidflow.pipelines import _dsl, platform
from bidflow.pipelines.bid_filter import TrainingOutputs

NAME = "bidflow-ctr-training"
KIND = "ctr"
# The bias gate's default slices are the bid filter's (partner, device, ...); the sample has these.
BIAS_SLICES = ["region", "adexchange", "slotvisibility"]


@_dsl.pipeline(name=NAME, description="The iPinYou sample to a gated CTR model, registered and deployed as a canary.")
def ctr_pipeline(
    impressions: str = "s3://bidflow-data/ipinyou/2997/train.csv.gz",
    config: str = "",
    feature_source: str = "feast",
    champion: str = "champion",
    canary_percent: int = 20,
) -> TrainingOutputs:
    """Train the CTR model on the iPinYou campaign-2997 sample and register it only if both gates pass.

    Args:
        impressions: URI of the iPinYou sample (CSV, gzip); the latest ``evaluate.holdout_hours`` of
            its hours are held out.
        config: the text of a bidflow.yaml; empty for the defaults. Secrets are not put here: the
            tasks get them from Kubernetes Secrets as BIDFLOW__* environment overrides.
        feature_source: feast (the ctr FeatureService training set) or request (the sample's columns).
        champion: the alias or version the candidate must not be worse than; none for no comparison.
        canary_percent: share of requests the new version takes as a canary (0-100); the first
            version deployed becomes the champion instead.

    Returns:
        The candidate model, both gate verdicts and their HTML reports.
    """
    sample = dsl.importer(artifact_uri=impressions, artifact_class=dsl.Dataset, reimport=False)
    sample.set_display_name("ipinyou-sample")
    data = sample.output

    features = build_ctr_features(impressions=data, config=config)
    apply = apply_features(config=config)
    materialize = materialize_features(features=features.outputs["features"], config=config).after(apply)
    for task in (features, apply, materialize):
        platform.stateful(task)
    platform.attach_secrets(features, object_store=True)  # writes the offline tables, registers nothing
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
            model_version=register.outputs["Output"], batch=data, config=config, percent=canary_percent, kind=KIND
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
