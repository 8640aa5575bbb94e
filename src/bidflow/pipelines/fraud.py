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

from bidflow.components.build_fraud_features import build_fraud_features
from bidflow.components.validate_clicks import validate_clicks
from bidflow.pipelines import _dsl, platform, stages
from bidflow.pipelines.stages import TrainingOutputs

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
    apply, materialize = stages.feature_store_tasks(features, config)
    return stages.gated_training(
        data=data, config=config, kind=KIND, feature_source=feature_source, champion=champion,
        canary_percent=canary_percent, slices=BIAS_SLICES, features=features, apply=apply, materialize=materialize,
    )  # fmt: skip
