"""The bid-filter training pipeline: wiring only (every step is a ``bidflow.components`` component).

ingest -> validate -> build features (+ apply, materialize) -> train -> evaluate -> bias ->
(both gates passed) register -> deploy (champion, or a canary at ``canary_percent``) -> fit the
drift detectors the monitor will watch it with.
"""

from kfp import dsl

from bidflow.components.build_features import build_features
from bidflow.components.ingest_logs import ingest_logs
from bidflow.components.validate_data import validate_data
from bidflow.pipelines import _dsl, platform, stages
from bidflow.pipelines.stages import TrainingOutputs

NAME = "bidflow-bid-filter-training"
KIND = "bid_filter"


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
    apply, materialize = stages.feature_store_tasks(features, config, after=validate)
    return stages.gated_training(
        data=batch, config=config, kind=KIND, feature_source=feature_source, champion=champion,
        canary_percent=canary_percent, slices=[], features=features, apply=apply, materialize=materialize,
    )  # fmt: skip
