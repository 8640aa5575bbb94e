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

from bidflow.components.build_ctr_features import build_ctr_features
from bidflow.pipelines import _dsl, stages
from bidflow.pipelines.stages import TrainingOutputs

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
    apply, materialize = stages.feature_store_tasks(features, config)
    return stages.gated_training(
        data=data, config=config, kind=KIND, feature_source=feature_source, champion=champion,
        canary_percent=canary_percent, slices=BIAS_SLICES, features=features, apply=apply, materialize=materialize,
    )  # fmt: skip
