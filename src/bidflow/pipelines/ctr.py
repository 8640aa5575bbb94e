"""The CTR training pipeline: wiring only (every step is a ``bidflow.components`` component).

import the iPinYou sample -> build CTR features (+ apply, materialize) -> train -> evaluate ->
bias -> (both gates passed) register.

It stops at registration: the canary machinery (``bidflow.deploy``: traffic split, drift monitor,
online bid recall) is built around the bid filter's auction traffic. The registered CTR version is
served by the chart's CTR InferenceService (``ctr.storageUri``) or ``bidflow serve --kind ctr``.

There is no ingest or validate step: the CTR model learns from a fixed, read-only research sample
(iPinYou campaign 2997), which the importer brings in as a dataset as it is; bidflow's ingestion and
data gate are built for OpenRTB auction logs, and the sample's loader already rejects a file
without the expected columns.
"""

from kfp import dsl

from bidflow.components.apply_features import apply_features
from bidflow.components.build_ctr_features import build_ctr_features
from bidflow.components.check_bias import check_bias
from bidflow.components.evaluate_model import evaluate_model
from bidflow.components.materialize_features import materialize_features
from bidflow.components.register_model import register_model
from bidflow.components.train_model import train_model
from bidflow.pipelines import _dsl, platform
from bidflow.pipelines.bid_filter import TrainingOutputs

NAME = "bidflow-ctr-training"
KIND = "ctr"
# The bias gate's default slices are the bid filter's (partner, device, ...); the sample has these.
BIAS_SLICES = ["region", "adexchange", "slotvisibility"]


@_dsl.pipeline(name=NAME, description="The iPinYou sample to a gated CTR model registered as 'candidate'.")
def ctr_pipeline(
    impressions: str = "s3://bidflow-data/ipinyou/2997/train.csv.gz",
    config: str = "",
    feature_source: str = "feast",
    champion: str = "champion",
) -> TrainingOutputs:
    """Train the CTR model on the iPinYou campaign-2997 sample and register it only if both gates pass.

    Args:
        impressions: URI of the iPinYou sample (CSV, gzip); the latest ``evaluate.holdout_hours`` of
            its hours are held out.
        config: the text of a bidflow.yaml; empty for the defaults. Secrets are not put here: the
            tasks get them from Kubernetes Secrets as BIDFLOW__* environment overrides.
        feature_source: feast (the ctr FeatureService training set) or request (the sample's columns).
        champion: the alias or version the candidate must not be worse than; none for no comparison.

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

    return TrainingOutputs(
        model=model,
        evaluation_passed=evaluate.outputs["Output"],
        bias_passed=bias.outputs["Output"],
        evaluation_report=evaluate.outputs["report"],
        bias_report=bias.outputs["report"],
    )
