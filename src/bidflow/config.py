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
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bidflow.errors import ConfigError

ENV_PREFIX = "BIDFLOW__"
DEFAULT_CONFIG_FILE = Path("bidflow.yaml")

ScenarioName = Literal["none", "partner_retarget", "device_shift", "publisher_flood", "floor_hike"]


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


class IngestConfig(_Section):
    """Raw logs to parquet (``bidflow ingest``)."""

    max_bad_share: float = Field(
        default=0.01, ge=0.0, le=1.0, description="fail the run if more lines than this share are malformed"
    )


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


class TrainConfig(_Section):
    """Model training (``bidflow train``)."""

    validation_hours: int = Field(default=1, ge=1, description="latest hours held out for early stopping")


class EvaluateConfig(_Section):
    """Evaluation and the champion/challenger gate (``bidflow evaluate``)."""

    target_bid_recall: float = Field(default=0.95, gt=0.0, le=1.0)
    exploration_share: float = Field(default=0.05, ge=0.0, lt=1.0)


class FairnessConfig(_Section):
    """The bias gate (``bidflow fairness``)."""

    max_recall_gap: float = Field(default=0.05, ge=0.0, le=1.0)


class RegistryConfig(_Section):
    """MLflow tracking and model registry; SQLite and local files by default."""

    tracking_uri: str = "sqlite:///mlflow.db"
    artifact_location: Path = Path("mlartifacts")


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

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (default ``./bidflow.yaml`` if it exists), apply env overrides, validate."""
    environ = os.environ if environ is None else environ
    source = path if path is not None else (DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.exists() else None)
    data: dict[str, Any] = _read_yaml(source) if source is not None else {}
    for key, raw in environ.items():
        if key.startswith(ENV_PREFIX):
            _set_dotted(data, key[len(ENV_PREFIX) :].lower().split("__"), _parse_scalar(key, raw))
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        dotted = ".".join(str(part) for part in first["loc"])
        raise ConfigError(
            f"invalid configuration value for '{dotted}': {first['msg']}",
            where=f"{source or 'defaults'} (or env {ENV_PREFIX}{dotted.upper().replace('.', '__')})",
            got=repr(first.get("input"))[:200],
            hint=f"fix '{dotted}'; {len(exc.errors())} problem(s) in total" if len(exc.errors()) > 1 else None,
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
