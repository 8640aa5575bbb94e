"""The one configuration object.

``load_config`` reads a YAML file once, in the entry point, applies environment
overrides (``BIDFLOW__SECTION__KEY=value``, values parsed as YAML scalars) and validates the
result strictly: unknown keys are errors, so a typo never silently falls back to a default.
Everything below the entry point receives the ``Config`` (or the section it needs).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bidflow.bidding.names import PolicyName
from bidflow.errors import ConfigError
from bidflow.kinds.registry import BUILTIN, DEFAULT_KIND

ENV_PREFIX = "BIDFLOW__"
DEFAULT_CONFIG_FILE = Path("bidflow.yaml")

ScenarioName = Literal["none", "partner_retarget", "device_shift", "publisher_flood", "floor_hike"]
FilterObjective = Literal["recall", "value"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PathsConfig(_Section):
    """Where data lives; relative paths are resolved against the working directory."""

    raw: Path = Path("data/raw")
    parquet: Path = Path("data/parquet")
    reference: Path = Path("data/reference")
    reports: Path = Path("reports")


class SimulateConfig(_Section):
    """The auction-log generator (``bidflow simulate``)."""

    seed: int = 7
    start: datetime = datetime(2026, 11, 2, 0, tzinfo=UTC)
    hours: int = Field(default=6, ge=1, le=24 * 31)
    auctions_per_hour: int = Field(default=20_000, ge=1)
    publishers: int = Field(default=400, ge=1)
    scenario: ScenarioName = "none"
    scenario_start_hour: int = Field(
        default=0, ge=0, description="hours after `start` at which the drift scenario switches on"
    )
    chunk_size: int = Field(default=10_000, ge=1_000, description="auctions rendered per batch")

    @field_validator("start")
    @classmethod
    def _hour_aligned_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        if value.minute or value.second or value.microsecond:
            raise ValueError("must be aligned to a whole hour (logs are partitioned by hour)")
        return value.astimezone(UTC)


Engine = Literal["pandas", "spark"]
ENGINE_HELP = "pandas: in this process (the embedded default); spark: on the Spark session of the spark: section"


class SparkPodResources(_Section):
    """Cores and JVM memory of the Spark driver's or an executor's pod."""

    cores: int = Field(default=1, ge=1, description="CPU cores (the pod's request and Spark's task slots)")
    memory: str = Field(default="2g", pattern=r"^[0-9]+[kmgt]?$", description="JVM heap, such as 512m or 4g")


class SparkExecutorResources(SparkPodResources):
    """The executors: how many, and each one's cores and memory."""

    instances: int = Field(default=2, ge=1, description="executor pods")


class SparkKubernetesConfig(_Section):
    """Spark jobs on Kubernetes: SparkApplication resources run by the Kubeflow Spark Operator.

    ``bidflow.deploy.spark_application`` renders them and the ``submit_spark_job`` component creates them;
    the chart (``sparkOperator`` values) creates the service account and RBAC they need.
    """

    namespace: str = Field(default="bidflow", min_length=1, description="where SparkApplications are created")
    image: str = Field(default="", description="driver and executor image; empty: the component image of this release")
    service_account: str = Field(
        default="bidflow-spark", min_length=1, description="the driver's and executors' account (IRSA on EKS)"
    )
    driver: SparkPodResources = SparkPodResources()
    executor: SparkExecutorResources = SparkExecutorResources()
    retries: int = Field(default=0, ge=0, description="reruns of a failed application (0: restartPolicy Never)")
    timeout_s: float = Field(default=7200.0, gt=0, description="the component gives up waiting after this long")
    ttl_s: int = Field(default=86400, ge=0, description="the operator deletes a finished application after this")


class SparkConfig(_Section):
    """The Spark session that steps with ``engine: spark`` run on (``bidflow.engines.spark``)."""

    master: str = Field(
        default="local[*]", min_length=1, description="Spark master URL: local[N] in one JVM here, or a cluster's"
    )
    runner: Literal["in_process", "operator"] = Field(
        default="in_process",
        description="where a pipeline task's Spark steps run: in the task's own process (on spark.master), or "
        "as SparkApplications of the Kubeflow Spark Operator (spark.kubernetes) that the task submits and waits for",
    )
    app_name: str = Field(default="bidflow", min_length=1, description="application name shown by Spark")
    driver_memory: str = Field(
        default="2g", pattern=r"^[0-9]+[kmgt]?$", description="spark.driver.memory (JVM size such as 2g)"
    )
    shuffle_partitions: int = Field(
        default=8, ge=1, description="spark.sql.shuffle.partitions: partitions after a group-by or join"
    )
    conf: dict[str, str] = Field(
        default_factory=dict, description="further Spark settings (spark.* keys), applied last"
    )
    kubernetes: SparkKubernetesConfig = SparkKubernetesConfig()


class IngestConfig(_Section):
    """Raw logs to parquet (``bidflow ingest``)."""

    max_bad_share: float = Field(
        default=0.01, ge=0.0, le=1.0, description="fail the run if more lines than this share are malformed"
    )
    workers: int = Field(default=0, ge=0, description="processes, one file each at a time; 0 = one per core")
    engine: Engine = Field(default="pandas", description=ENGINE_HELP)


class ValidateConfig(_Section):
    """The data gate (``bidflow validate``): thresholds against the reference batch."""

    min_rows: int = Field(default=1_000, ge=0)
    bid_rate_tolerance: float = Field(
        default=0.5, gt=0.0, description="allowed relative change of the bid rate vs the reference"
    )
    max_unseen_category_share: float = Field(
        default=0.05, ge=0.0, le=1.0, description="share of rows whose category the reference never saw"
    )
    max_psi: float = Field(default=0.25, gt=0.0, description="population stability index limit per feature")
    max_age_hours: float | None = Field(
        default=None, description="newest row must be at most this old; None disables (replays, demos)"
    )


class FeaturesConfig(_Section):
    """The feature store (``bidflow features ...``)."""

    repo: Path = Path("feature_repo")
    environment: Literal["local", "production"] = "local"
    offline: Path = Path("data/features")
    engine: Engine = Field(
        default="pandas", description=f"aggregated views and point-in-time training sets. {ENGINE_HELP}"
    )
    offline_uri: str | None = Field(
        default=None,
        description="base URI the Feast sources point to when applied (s3://... in production); "
        "None: the absolute path of `offline`",
    )
    project: str | None = Field(
        default=None, description="Feast project name instead of the feature_store.yaml's (tests, shared Redis)"
    )
    state: Path | None = Field(
        default=None,
        description="local environment only: folder for Feast's registry.db and online_store.db "
        "instead of the paths in feature_store.yaml",
    )
    ctr_source: Path = Field(
        default=Path("../shared/data/ipinyou_2997_sample/train.csv.gz"),
        description="iPinYou campaign-2997 impressions read by `bidflow features build-ctr` (never copied)",
    )
    ctr_day: datetime = Field(
        default=datetime(2013, 10, 23, tzinfo=UTC),
        description="UTC midnight the iPinYou sample's `hour` column is placed on (the data carries no date)",
    )

    @field_validator("ctr_day")
    @classmethod
    def _midnight_utc(cls, value: datetime) -> datetime:
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if value.hour or value.minute or value.second or value.microsecond:
            raise ValueError("must be a UTC midnight (the sample's rows carry only an hour of the day)")
        return value


class TrainSettings(_Section):
    """The training settings of one model kind."""

    validation_hours: int = Field(default=1, ge=1, description="latest hours held out for early stopping")
    feature_source: Literal["feast", "request"] = Field(
        default="feast",
        description="feast: the model's FeatureService training set (request + aggregated features); "
        "request: only the request features stored in the data itself",
    )
    n_estimators: int = Field(default=400, ge=1, description="boosting rounds at most (early stopping cuts them)")
    early_stopping_rounds: int = Field(default=30, ge=1, description="rounds without validation gain before stopping")
    max_depth: int = Field(default=6, ge=1, le=16)
    learning_rate: float = Field(default=0.1, gt=0.0, le=1.0)
    min_child_weight: float = Field(default=1.0, ge=0.0)
    subsample: float = Field(default=0.8, gt=0.0, le=1.0)
    colsample_bytree: float = Field(default=0.8, gt=0.0, le=1.0)
    reg_lambda: float = Field(default=1.0, ge=0.0)
    max_bin: int = Field(default=256, ge=2)
    nthread: int = Field(default=0, ge=0, description="xgboost threads; 0 = all cores")
    seed: int = 0
    min_category_count: int = Field(
        default=20, ge=1, description="training rows a category needs to get its own code; rarer ones share 'unseen'"
    )
    refit: bool = Field(
        default=False,
        description="after early stopping picks the number of trees, retrain on training + validation rows with as "
        "many trees per row (small data; not with per-partner thresholds); valid_* metrics stay the early-stopped "
        "model's",
    )
    category_order: Literal["frequency", "rate"] = Field(
        default="frequency",
        description="category codes by training frequency (label-free) or by smoothed label rate, training rows "
        "coded out of fold",
    )
    engine: Engine = Field(default="pandas", description=f"xgboost in this process or xgboost.spark. {ENGINE_HELP}")


class _PerKind:
    """Shared settings plus a ``<kind>:`` section per model kind, holding only the keys it changes.

    ``train: {ctr: {max_depth: 3}}``: a kind's keys are checked as strictly as the shared ones, and
    its name must be a registered kind (``Config`` checks that, since ``kinds:`` may register more).
    The subclass is a pydantic model with ``extra="allow"`` (the kinds' sections are its extras).
    """

    _settings: ClassVar[type[BaseModel]]
    _section: ClassVar[str]

    def _extras(self) -> dict[str, Any]:
        extra: dict[str, Any] | None = getattr(self, "model_extra", None)  # pydantic's, on the subclass
        return extra or {}

    def _check_kind_sections(self) -> None:
        fields = self._settings.model_fields
        for name, section in self._extras().items():
            where = f"{self._section}.{name}"
            if not isinstance(section, Mapping):
                raise ValueError(f"'{where}' is neither a setting nor a kind's section (a mapping)")
            unknown = sorted(set(section) - set(fields))
            if unknown:
                raise ValueError(f"'{where}' has unknown keys: {', '.join(unknown)}")
            try:
                self._settings.model_validate(self.shared() | dict(section))
            except ValidationError as exc:
                first = exc.errors()[0]
                raise ValueError(f"'{where}.{'.'.join(str(p) for p in first['loc'])}': {first['msg']}") from exc

    def shared(self) -> dict[str, Any]:
        """The shared settings, without the kinds' sections."""
        return {key: getattr(self, key) for key in self._settings.model_fields}

    def kind_sections(self) -> dict[str, dict[str, Any]]:
        """Each kind's own keys, as written."""
        return {name: dict(section) for name, section in self._extras().items()}


class TrainConfig(TrainSettings, _PerKind):
    """Model training (``bidflow train``): shared settings, and a ``<kind>:`` section per model kind."""

    _settings: ClassVar[type[BaseModel]] = TrainSettings
    _section: ClassVar[str] = "train"
    model_config = ConfigDict(extra="allow", frozen=True)

    @model_validator(mode="after")
    def _kind_sections_are_settings(self) -> TrainConfig:
        self._check_kind_sections()
        return self

    def for_kind(self, kind: str) -> TrainSettings:
        """The settings ``kind`` trains with: the shared ones, overridden by its section."""
        return TrainSettings.model_validate(self.shared() | self.kind_sections().get(kind, {}))


class EvaluateSettings(_Section):
    """Evaluation and the champion/challenger gate of one model kind."""

    target_bid_recall: float = Field(
        default=0.95,
        gt=0.0,
        le=1.0,
        description="share of each partner's bids (objective recall) or bid value (objective value) the filter keeps",
    )
    objective: FilterObjective = Field(
        default="recall",
        description="what per-partner thresholds keep the target share of: `recall` (bids) or `value` "
        "(the bids' summed CPM: cheap bids may be dropped first)",
    )
    exploration_share: float = Field(default=0.05, ge=0.0, lt=1.0)
    threshold_confidence_z: float = Field(
        default=1.645,
        ge=0.0,
        description="per-partner thresholds aim this many standard errors above the target recall "
        "(a partner with few validation bids gets a cautious threshold)",
    )
    holdout_hours: int = Field(
        default=1, ge=1, description="latest hours of the data that training leaves out and evaluation scores"
    )
    calibration_bins: int = Field(default=10, ge=2, description="equal-width bins of the expected calibration error")
    max_auc_drop: float = Field(default=0.005, ge=0.0, description="candidate AUC may be at most this below champion")
    max_pr_auc_drop: float | None = Field(
        default=None,
        ge=0.0,
        description="candidate PR-AUC may be at most this below champion's (None: not gated; for kinds with rare "
        "positives, where AUC barely moves)",
    )
    max_logloss_increase: float = Field(
        default=0.02, ge=0.0, description="candidate log loss may exceed the champion's by at most this share"
    )
    max_ece_increase: float = Field(
        default=0.01, ge=0.0, description="candidate calibration error may exceed the champion's by at most this"
    )
    min_calls_saved_ratio: float = Field(
        default=0.97,
        ge=0.0,
        description="candidate's share of calls saved at the target recall must be >= this x the champion's",
    )
    max_recall_shortfall: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="bid recall on the hold-out at the model's own thresholds may fall at most this below target",
    )


class EvaluateConfig(EvaluateSettings, _PerKind):
    """Evaluation and the champion/challenger gate (``bidflow evaluate``); ``evaluate.<kind>`` changes a kind's."""

    _settings: ClassVar[type[BaseModel]] = EvaluateSettings
    _section: ClassVar[str] = "evaluate"
    model_config = ConfigDict(extra="allow", frozen=True)

    @model_validator(mode="after")
    def _kind_sections_are_settings(self) -> EvaluateConfig:
        self._check_kind_sections()
        return self

    def for_kind(self, kind: str) -> EvaluateSettings:
        """The gate rules ``kind`` is judged by: the shared ones, overridden by its section."""
        return EvaluateSettings.model_validate(self.shared() | self.kind_sections().get(kind, {}))


class FairnessSettings(_Section):
    """The bias gate of one model kind."""

    max_recall_gap: float = Field(default=0.05, ge=0.0, le=1.0)
    max_calibration_gap: float = Field(
        default=0.03,
        ge=0.0,
        le=1.0,
        description="a slice's |mean score - bid rate| may exceed the overall one by this (absolute)",
    )
    confidence_z: float = Field(
        default=1.96,
        ge=0.0,
        description="a gap must exceed its limit by this many standard errors to fail (noise is not bias)",
    )
    min_slice_rows: int = Field(default=500, ge=1, description="smaller slices are reported but not gated")
    min_slice_bids: int = Field(default=30, ge=1, description="slices with fewer bids are not gated on recall")
    slices: tuple[str, ...] = Field(
        default=("channel", "geo", "country", "device_type", "format", "partner"),
        min_length=1,
        description="columns to slice by; 'geo' groups countries into world regions",
    )


class FairnessConfig(FairnessSettings, _PerKind):
    """The bias gate (``bidflow fairness``); ``fairness.<kind>`` changes a kind's limits."""

    _settings: ClassVar[type[BaseModel]] = FairnessSettings
    _section: ClassVar[str] = "fairness"
    model_config = ConfigDict(extra="allow", frozen=True)

    @model_validator(mode="after")
    def _kind_sections_are_settings(self) -> FairnessConfig:
        self._check_kind_sections()
        return self

    def for_kind(self, kind: str) -> FairnessSettings:
        """The bias-gate limits of ``kind``: the shared ones, overridden by its section."""
        return FairnessSettings.model_validate(self.shared() | self.kind_sections().get(kind, {}))


class RegistryConfig(_Section):
    """MLflow tracking and model registry; SQLite and local files by default."""

    tracking_uri: str = "sqlite:///mlflow.db"
    artifact_location: Path = Path("mlartifacts")
    experiment: str = Field(default="bidflow", min_length=1)
    models: dict[str, str] = Field(
        default_factory=dict,
        description="registered model name per kind, instead of the kind's own (e.g. {ctr: ctr_campaign_2997})",
    )


class CanaryConfig(_Section):
    """Canary deployments: the backend, the traffic split and the analysis gates."""

    kind: str = Field(default=DEFAULT_KIND, min_length=1, description="the model kind this deployment serves")
    backend: Literal["local", "kserve"] = "local"
    traffic_percent: int = Field(default=20, ge=0, le=100, description="canary share of requests on deploy")
    state: Path = Field(default=Path("deploy"), description="local backend: state, journal and server logs")
    host: str = Field(default="127.0.0.1", description="local backend: bind address of the router and servers")
    router_port: int = Field(default=8080, ge=1, le=65535, description="local backend: the endpoint clients call")
    champion_port: int = Field(default=8181, ge=1, le=65535)
    canary_port: int = Field(default=8182, ge=1, le=65535)
    monitor_url: str | None = Field(
        default="http://127.0.0.1:8090",
        description="local backend: where the router sends served payloads (None: no payload logging)",
    )
    namespace: str = Field(default="bidflow", min_length=1, description="kserve backend: namespace")
    inference_service: str = Field(default="bid-filter", min_length=1, description="kserve backend: name")
    # Analysis: the canary is compared with the champion over one window.
    min_requests: int = Field(default=500, ge=1, description="canary requests needed before promote is possible")
    max_error_rate: float = Field(default=0.01, ge=0.0, le=1.0, description="canary error share limit")
    max_p99_ratio: float = Field(default=1.5, ge=1.0, description="canary p99 latency / champion p99 limit")
    max_p99_ms: float = Field(
        default=50.0, gt=0.0, description="canary p99 latency (ms) above which an alert is raised (never a rollback)"
    )
    min_p99_gap_ms: float = Field(
        default=5.0,
        ge=0.0,
        description="a canary p99 at most this far above the champion's is noise (never a rollback)",
    )
    max_score_psi: float = Field(
        default=0.25, gt=0.0, description="population stability index of canary vs champion scores"
    )
    max_recall_drop: float = Field(
        default=0.05, ge=0.0, le=1.0, description="online bid recall (exploration share) may fall this much"
    )
    min_explored_bids: int = Field(default=30, ge=1, description="labelled bids needed to judge online recall")


class MonitorConfig(_Section):
    """The drift monitor: windows, test level, where the fitted detectors are."""

    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=1, le=65535)
    detector: Path = Field(default=Path("deploy/detector"), description="folder written by save_detector")
    window_size: int = Field(default=2_000, ge=50, description="auctions per detection window")
    # Per window, familywise (Bonferroni over the features): a clean canary watched for N windows is
    # rolled back by chance with probability about 1 - (1 - p_value)^N, so 0.05 would be too eager.
    p_value: float = Field(default=0.01, gt=0.0, lt=1.0, description="test level per window (Bonferroni over features)")
    reference_rows: int = Field(default=5_000, ge=100, description="training rows kept as the drift reference")
    payload_batch: int = Field(default=256, ge=1, description="payloads per batch sent by the router")
    payload_queue: int = Field(default=20_000, ge=1, description="payloads buffered before new ones are dropped")
    token_file: Path | None = Field(
        default=None,
        description="file holding the bearer token senders must present to the intake (a mounted Secret); "
        "None: canary.state/monitor.token, created on first use",
    )
    # Off ("record") by default: a run trains, gates and deploys a canary by itself, so it is switched on
    # where retrain_args name the data to train on. Not "off": YAML reads a bare off as false.
    retrain: Literal["record", "local", "submit"] = Field(
        default="record",
        description="what drift in the champion's traffic starts: record (the request only), "
        "local (`bidflow pipeline run --local`), submit (`bidflow pipeline submit` to retrain_host)",
    )
    retrain_cooldown_hours: float = Field(
        default=6.0,
        ge=0.0,
        description="at most one retraining run per pipeline in this many hours, failed runs included "
        "(0: only never two at once)",
    )
    retrain_command: list[str] | None = Field(
        default=None,
        description="the platform's `bidflow` command line (the monitor's environment has no kfp); "
        "default: .venv/bin/bidflow beside the monitor's environment, else `bidflow` on PATH",
    )
    retrain_args: list[str] = Field(
        default=[],
        description="more options for the run, e.g. ['--raw', 'data/raw'] (the logs to train on; without it "
        "a local run generates simulated logs) or ['--param', 'canary_percent=10']",
    )
    retrain_host: str | None = Field(default=None, description="submit: the Kubeflow Pipelines API endpoint")
    explain_urls: dict[Literal["champion", "canary"], str] = Field(
        default_factory=dict,
        description="base URL of the model server of each role, asked to explain a drifted window "
        "(KServe: the revisions' tag URLs); unset: the local router, which pins explain requests to a role",
    )
    retrain_timeout_minutes: float = Field(
        default=180.0, gt=0.0, description="a run still going after this long is stopped and recorded as failed"
    )


class ExplainConfig(_Section):
    """Explanations (TreeSHAP contributions): online, in the reports and in the monitor's rollback reasons."""

    top: int = Field(default=8, ge=0, description="contributions shown per decision (0: every feature)")
    max_rows: int = Field(
        default=20_000, ge=100, description="held-out rows explained for a report (a seeded sample beyond this)"
    )
    plot_features: int = Field(default=15, ge=1, description="features in a summary plot, most important first")
    slices: int = Field(default=5, ge=1, description="bias report: worst slices whose scores are explained")
    drift_features: int = Field(default=3, ge=1, description="features a rollback or alert reason names")
    drift_requests: int = Field(
        default=64, ge=1, le=1_000, description="monitor: recent requests per role kept to explain a drifted window"
    )


class BidderConfig(_Section):
    """The bidder kind: a campaign's landscape and bidding policies, replayed on logged auctions.

    The default data are the public RLB experiments' iPinYou files (research use only), read in place.
    """

    campaign: str = Field(default="2997", min_length=1, description="the campaign the bidder bids for")
    data: Path = Field(
        default=Path("../shared/data/ipinyou_auction_outcomes"),
        description="folder with info_<campaign>.json or train_info/<campaign>.train-info.txt, the held-out "
        "test_theta_<campaign>.csv.gz and validation_by_campaign/<campaign>.csv.gz",
    )
    episode: int = Field(default=1_000, ge=10, description="auctions per budget episode (T)")
    levels: tuple[float, ...] = Field(
        default=(1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2),
        min_length=1,
        description="budget levels c0 (share of the training cost per auction) fitted and gated",
    )
    served_level: float = Field(default=1 / 32, gt=0.0, le=1.0, description="the budget level the server bids at")
    policy: PolicyName = Field(
        default="planned", description="the policy served and gated (planned: budget-aware value function)"
    )
    value_bins: int = Field(default=32, ge=1, le=256, description="pCTR quantile bins the planned policy may use")
    max_bid: int = Field(default=300, ge=1, description="highest bid, in the log's price unit (fen CPM)")
    budget_url: str = Field(
        default="redis://127.0.0.1:6379/0", description="Redis holding the shared budget state of the served bidder"
    )
    reservation_ttl_s: float = Field(
        default=30.0,
        gt=0.0,
        description="a bid with no win or loss notice by then counts as spent at the full bid (lost notices "
        "never cause overspend)",
    )
    budget_timeout_s: float = Field(
        default=0.02, gt=0.0, le=5.0, description="longest wait on the budget store (Redis); past it the bid is 0"
    )
    state_max_age_s: float = Field(
        default=0.005,
        ge=0.0,
        le=1.0,
        description="a replica bids from the budget state its last reservation returned while younger than this, "
        "instead of reading Redis again (0: read for every bid); the reservation's check keeps the budget safe",
    )
    max_auctions: int | None = Field(
        default=None,
        ge=100,
        description="read at most this many auctions (the head, in logged order) of each log: quick checks and "
        "tests; None reads them whole",
    )
    gate_spend_tolerance: float | None = Field(
        default=None,
        ge=0.0,
        description="replay gate: None compares candidate and baseline at equal budget (the level's); a number "
        "also caps the candidate's cost at the baseline's x (1 + tolerance) (bidflow.bidding.gate)",
    )

    @model_validator(mode="after")
    def _served_level_is_fitted(self) -> BidderConfig:
        if not all(0.0 < level <= 1.0 for level in self.levels):
            raise ValueError("bidder.levels must lie in (0, 1]")
        if self.served_level not in self.levels:
            raise ValueError(f"bidder.served_level {self.served_level} is not one of bidder.levels {self.levels}")
        return self


class KinesisConfig(_Section):
    """The click stream on Amazon Kinesis Data Streams (``stream.source: kinesis``, the EKS variant)."""

    stream_name: str = Field(default="bidflow-clicks", min_length=1, description="the Kinesis data stream")
    region: str | None = Field(default=None, description="AWS region; None: the SDK's (AWS_REGION, set on EKS)")
    endpoint_url: str | None = Field(default=None, description="another Kinesis endpoint (tests: moto_server)")
    poll_interval_s: float = Field(
        default=1.0, gt=0, description="wait before asking again once the shard has nothing new (5 reads/s per shard)"
    )


class StreamConfig(_Section):
    """The streaming velocity features: click events on a Redis Stream or Kinesis -> ``bidflow stream process``."""

    source: Literal["redis", "kinesis"] = Field(
        default="redis", description="where clicks arrive: the Redis Stream `stream`, or Kinesis (`kinesis`)"
    )
    kinesis: KinesisConfig = KinesisConfig()

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", description="Redis holding the click stream and the processor's checkpoint"
    )
    stream: str = Field(default="bidflow:clicks", description="the stream's key")
    group: str = Field(default="velocity", description="consumer group of the processor")
    consumer: str = Field(default="processor-1", description="the processor's name in its group")
    online_store: str | None = Field(
        default=None,
        description="Feast Redis connection string the processor writes (host:port,db=N); None: the "
        "online store of features.environment, which must then be Redis",
    )
    sink: Literal["redis", "feast"] = Field(
        default="redis", description="redis: direct HSETs in Feast's layout; feast: FeatureStore.push"
    )
    allowed_lateness_s: int = Field(default=60, ge=0, description="how far behind the latest click one may arrive")
    batch: int = Field(default=5_000, ge=1, description="most entries read per step")
    block_ms: int = Field(default=100, ge=1, description="longest wait for new entries per read")
    checkpoint_every_s: float = Field(default=10.0, gt=0, description="how often the state is saved")
    key_ttl_s: int | None = Field(
        default=2 * 86_400, ge=1, description="Redis expiry of each written key (None: keys never expire)"
    )


class FraudConfig(_Section):
    """The fraud (invalid click) kind on TalkingData AdTracking clicks."""

    source: Path = Field(
        default=Path("../shared/data/talkingdata_adtracking_sample/train_sample_2017-11-06_to_08.csv.gz"),
        description="TalkingData clicks (research use only: read in place, never copied)",
    )
    holdout_day: str = Field(default="2017-11-08", description="UTC day held out for evaluation (the last one)")
    validation_share: float = Field(
        default=0.25, gt=0, lt=1, description="latest share of the clicks before the hold-out, for tuning"
    )
    bootstrap: int = Field(default=1_000, ge=100, description="bootstrap resamples of the hold-out AUC interval")
    converting_share: tuple[float, float] = Field(
        default=(0.0005, 0.05),
        description="the data gate's bounds on the share of converting clicks (the sample: 0.24 %)",
    )
    max_duplicate_share: float = Field(
        default=0.05, ge=0.0, le=1.0, description="the data gate's limit on exact duplicate clicks (same ids, second)"
    )
    seed: int = 7


class Config(_Section):
    """All of bidflow's settings."""

    environment: Literal["local", "production"] = "local"
    paths: PathsConfig = PathsConfig()
    simulate: SimulateConfig = SimulateConfig()
    ingest: IngestConfig = IngestConfig()
    validate_: ValidateConfig = Field(default=ValidateConfig(), alias="validate")
    features: FeaturesConfig = FeaturesConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    fairness: FairnessConfig = FairnessConfig()
    registry: RegistryConfig = RegistryConfig()
    canary: CanaryConfig = CanaryConfig()
    monitor: MonitorConfig = MonitorConfig()
    explain: ExplainConfig = ExplainConfig()
    bidder: BidderConfig = BidderConfig()
    stream: StreamConfig = StreamConfig()
    fraud: FraudConfig = FraudConfig()
    spark: SparkConfig = SparkConfig()
    kinds: dict[str, str] = Field(
        default_factory=dict,
        description="model kinds beyond the built-in ones: name -> 'module:attribute' of a bidflow.kinds.Kind",
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _sections_name_registered_kinds(self) -> Config:
        known = {*BUILTIN, *self.kinds}
        sections: dict[str, set[str]] = {
            "train": set(self.train.kind_sections()),
            "evaluate": set(self.evaluate.kind_sections()),
            "fairness": set(self.fairness.kind_sections()),
            "registry.models": set(self.registry.models),
            "canary.kind": {self.canary.kind},
        }
        for section, names in sections.items():
            unknown = sorted(set(names) - known)
            if unknown:
                where = section if section == "canary.kind" else f"{section}.{unknown[0]}"
                raise ValueError(
                    f"'{where}' names no registered model kind ({unknown[0]}; registered: {', '.join(sorted(known))})"
                )
        for name, path in self.kinds.items():
            if name in BUILTIN:
                raise ValueError(f"'kinds.{name}' would replace a built-in kind")
            if not name.isidentifier() or ":" not in path:
                raise ValueError(f"'kinds.{name}' must be an identifier mapped to 'module:attribute', got {path!r}")
        return self


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (default ``./bidflow.yaml`` if it exists), apply env overrides, validate."""
    environ = os.environ if environ is None else environ
    source = path if path is not None else (DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.exists() else None)
    data: dict[str, Any] = _read_yaml(source) if source is not None else {}
    for key, raw in environ.items():
        if key.startswith(ENV_PREFIX):
            _set_dotted(data, key[len(ENV_PREFIX) :].lower().split("__"), _parse_scalar(key, raw))
    return _validated(data, f"{source or 'defaults'} or env {ENV_PREFIX}*")


def override(config: Config, section: str, values: Mapping[str, Any]) -> Config:
    """``config`` with the non-None ``values`` (command-line options) replacing keys of ``section``."""
    given = {key: value for key, value in values.items() if value is not None}
    if not given:
        return config
    data = config.model_dump(by_alias=True)
    data[section] = data[section] | given
    return _validated(data, "command-line options")


def _validated(data: dict[str, Any], source: str) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        dotted = ".".join(str(part) for part in first["loc"])
        raise ConfigError(
            f"invalid configuration value for '{dotted}': {first['msg']}",
            where=source,
            got=repr(first.get("input"))[:200],
            hint=f"{len(exc.errors())} problems in total" if len(exc.errors()) > 1 else None,
        ) from exc


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError("configuration file not found", where=path, hint="pass --config PATH to an existing file")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError("configuration file is not valid YAML", where=path, got=str(exc)) from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError("configuration must be a mapping", where=path, got=type(loaded).__name__)
    return loaded


def _parse_scalar(key: str, raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError("environment override is not a valid YAML scalar", where=key, got=raw) from exc


def _set_dotted(data: dict[str, Any], keys: list[str], value: Any) -> None:
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError("environment override goes below a non-mapping value", where=".".join(keys))
        node = child
    node[keys[-1]] = value
