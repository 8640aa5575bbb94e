"""Feast access: open the store for an environment, apply the definitions, materialize, training sets.

One feature repository (``feature_repo/``) serves both environments; the environment only picks
the ``feature_store.yaml`` (``local``: file offline store, SQLite online store, file registry;
``production``: S3 parquet, Redis, SQL registry). Feast errors that a user can cause (a missing
repo, offline files not built yet, Redis or the registry database down) become
``FeatureStoreError`` with what to do about them.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pandas as pd
import yaml

from bidflow.config import FeaturesConfig
from bidflow.errors import BidflowError, FeatureStoreError
from bidflow.features.spec import ServiceSpec, ViewSpec, service_spec

if TYPE_CHECKING:
    from feast import FeatureStore, RepoConfig

log = logging.getLogger(__name__)

STORE_YAML: Final = {"local": "feature_store.yaml", "production": "feature_store.production.yaml"}
DEFINITION_MODULES: Final = ("entities", "sources", "feature_views", "feature_services")
OFFLINE_URI_ENV: Final = "BIDFLOW_FEATURES_OFFLINE_URI"  # read by feature_repo/sources.py
TIMESTAMP: Final = "event_timestamp"


# --- opening the store -------------------------------------------------------------------------


def repo_config(cfg: FeaturesConfig, overrides: Mapping[str, Any] | None = None) -> RepoConfig:
    """The Feast ``RepoConfig`` of ``cfg.environment``, read the way Feast reads it.

    Like Feast, ``${VAR}`` is expanded from the environment; unlike Feast, an unset variable is an
    error instead of a literal ``${VAR}`` connection string. ``cfg.project`` and (local only)
    ``cfg.state`` replace the file's project and state paths; ``overrides`` replace whole
    top-level keys (a section of the same ``type`` is merged one level deep), for tests and benchmarks.

    Args:
        cfg: the ``features`` section of the configuration (``bidflow.config.FeaturesConfig``).
        overrides: top-level ``feature_store.yaml`` keys to replace.
    """
    repo = cfg.repo.resolve()
    if not repo.is_dir():
        raise FeatureStoreError(
            "feature repository not found",
            where=repo,
            hint="run from the project root or set features.repo (BIDFLOW__FEATURES__REPO)",
        )
    path = repo / STORE_YAML[cfg.environment]
    if not path.is_file():
        raise FeatureStoreError(
            f"no {path.name} for environment '{cfg.environment}'",
            where=path,
            expected=", ".join(f"{env}: {name}" for env, name in STORE_YAML.items()),
        )
    try:
        raw = yaml.safe_load(os.path.expandvars(path.read_text(encoding="utf-8"))) or {}
    except yaml.YAMLError as exc:
        raise FeatureStoreError("feature store configuration is not valid YAML", where=path, got=str(exc)) from exc
    unset = sorted(_unexpanded(raw))
    if unset:
        raise FeatureStoreError(
            "feature store configuration refers to unset environment variables",
            where=path,
            got=", ".join(unset),
            hint="export them (see the comments at the top of the file)",
        )
    if isinstance(raw.get("registry"), str):
        raw["registry"] = {"path": raw["registry"]}
    if cfg.project:
        raw["project"] = cfg.project
    if cfg.state is not None and cfg.environment == "local":
        state = cfg.state.resolve()
        raw["registry"] = {**raw.get("registry", {}), "path": str(state / "registry.db")}
        if raw.get("online_store", {}).get("type", "sqlite") == "sqlite":
            raw["online_store"] = {**raw.get("online_store", {}), "path": str(state / "online_store.db")}
    for key, value in (overrides or {}).items():
        current = raw.get(key)
        if (
            isinstance(current, dict)
            and isinstance(value, dict)
            and value.get("type", current.get("type")) == current.get("type")
        ):
            raw[key] = {**current, **value}
        else:
            raw[key] = value
    from feast import RepoConfig
    from pydantic import ValidationError

    try:
        config = RepoConfig(**raw)
    except ValidationError as exc:
        raise FeatureStoreError("invalid feature store configuration", where=path, got=str(exc)) from exc
    config.repo_path = repo
    return config


def _unexpanded(node: Any) -> set[str]:
    """Names of ``${VAR}`` references left in the parsed YAML (comments do not count)."""
    import re

    if isinstance(node, str):
        return set(re.findall(r"\$\{(\w+)\}", node))
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    found: set[str] = set()
    for child in children:
        found |= _unexpanded(child)
    return found


def open_store(cfg: FeaturesConfig, overrides: Mapping[str, Any] | None = None) -> FeatureStore:
    """A ``FeatureStore`` for ``cfg.environment`` (see ``repo_config``)."""
    config = repo_config(cfg, overrides)  # checks the repo before paying for importing Feast
    from feast import FeatureStore

    return FeatureStore(repo_path=str(config.repo_path), config=config)


def offline_base(cfg: FeaturesConfig) -> str:
    """Where the offline parquet lives: ``cfg.offline_uri``, else ``cfg.offline`` made absolute."""
    return str(cfg.offline_uri).rstrip("/") if cfg.offline_uri else str(cfg.offline.resolve())


# --- definitions -------------------------------------------------------------------------------


@contextmanager
def _definition_imports(repo: Path, offline: str) -> Iterator[dict[str, Any]]:
    """Import the repo's definition modules fresh, as ``feast apply`` does (top-level names).

    The modules import each other by their bare names (``from entities import partner``), so the
    repo goes first on ``sys.path`` and any cached module of those names is set aside, then
    restored: two repos (or a test's and the CLI's) never see each other's objects. The offline
    base reaches ``sources.py`` through its environment variable, set only while importing.
    """
    import importlib

    saved_modules = {name: sys.modules.pop(name) for name in DEFINITION_MODULES if name in sys.modules}
    saved_env = os.environ.get(OFFLINE_URI_ENV)
    sys.path.insert(0, str(repo))
    os.environ[OFFLINE_URI_ENV] = offline
    try:
        yield {name: importlib.import_module(name) for name in DEFINITION_MODULES}
    finally:
        sys.path.remove(str(repo))
        if saved_env is None:
            os.environ.pop(OFFLINE_URI_ENV, None)
        else:
            os.environ[OFFLINE_URI_ENV] = saved_env
        for name in DEFINITION_MODULES:
            sys.modules.pop(name, None)
        for name, module in saved_modules.items():
            sys.modules[name] = module


def load_definitions(repo: Path, offline: str) -> list[Any]:
    """The Feast objects (data sources, entities, views, services) defined in ``repo``.

    Args:
        repo: the feature repository folder.
        offline: base location of the offline parquet files (local folder or URI).
    """
    from feast import Entity, FeatureService, FeatureView
    from feast.data_source import DataSource

    missing = [name for name in DEFINITION_MODULES if not (repo / f"{name}.py").is_file()]
    if missing:
        raise FeatureStoreError(
            "feature repository is incomplete",
            where=repo,
            expected=", ".join(DEFINITION_MODULES),
            got=f"missing {missing}",
        )
    objects: list[Any] = []
    try:
        with _definition_imports(repo.resolve(), offline) as modules:
            for module in modules.values():
                for value in vars(module).values():
                    kinds = (DataSource, Entity, FeatureView, FeatureService)
                    if isinstance(value, kinds) and not any(value is seen for seen in objects):
                        objects.append(value)
    except BidflowError:
        raise
    except Exception as exc:  # a definition module that does not import is a user error
        raise FeatureStoreError(
            "feature definitions do not load", where=repo, got=f"{type(exc).__name__}: {exc}"
        ) from exc
    return objects


@dataclass
class ApplySummary:
    """What ``apply`` registered, and what it removed because the repo no longer defines it."""

    project: str
    entities: list[str] = field(default_factory=list)
    feature_views: list[str] = field(default_factory=list)
    feature_services: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


def apply(store: FeatureStore, cfg: FeaturesConfig) -> ApplySummary:
    """Register the repo's definitions in ``store`` and create its online tables.

    Objects of the project that the repo no longer defines are deleted (like ``feast apply``).
    The offline parquet need not exist yet: schemas are explicit, nothing is inferred.
    """
    from feast import Entity, FeatureService, FeatureView

    objects = load_definitions(cfg.repo, offline_base(cfg))
    summary = ApplySummary(project=store.project)
    names = {type(o).__name__ + ":" + o.name for o in objects}
    with feast_errors(store):
        registered: list[Any] = [*store.list_feature_services(), *store.list_feature_views(), *store.list_entities()]
        stale = [o for o in registered if type(o).__name__ + ":" + o.name not in names]
        store.apply(objects, objects_to_delete=stale, partial=False)
    summary.entities = sorted(o.name for o in objects if isinstance(o, Entity))
    summary.feature_views = sorted(o.name for o in objects if isinstance(o, FeatureView))
    summary.feature_services = sorted(o.name for o in objects if isinstance(o, FeatureService))
    summary.deleted = sorted(f"{type(o).__name__} {o.name}" for o in stale)
    return summary


# --- checks and error translation ---------------------------------------------------------------


@contextmanager
def feast_errors(store: FeatureStore) -> Iterator[None]:
    """Turn connection failures of the registry database and of Redis into ``FeatureStoreError``."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from sqlalchemy.exc import OperationalError

    try:
        yield
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise FeatureStoreError(
            "Redis online store is unreachable",
            where=redact(getattr(store.config.online_store, "connection_string", "?")),
            got=str(exc),
            hint="start Redis or fix BIDFLOW_FEAST_REDIS / the online_store section",
        ) from exc
    except OperationalError as exc:
        raise FeatureStoreError(
            "feature registry database is unreachable",
            where=redact(store.config.registry.path),
            got=str(exc.orig) if exc.orig is not None else str(exc),
            hint="start the database or fix BIDFLOW_FEAST_REGISTRY_URL",
        ) from exc


def redact(connection: str) -> str:
    """A connection string or URL without its password."""
    import re

    connection = re.sub(r"(password=)[^,]*", r"\1***", connection)
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", connection)


def check_online_store(store: FeatureStore, timeout_s: float = 2.0) -> None:
    """Fail fast, with the address, when the store's Redis does not answer a PING."""
    online = store.config.online_store
    if getattr(online, "type", None) != "redis":
        return
    import redis
    from feast.infra.online_stores.redis import RedisOnlineStore
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    nodes, kwargs = RedisOnlineStore._parse_connection_string(online.connection_string)
    kwargs = {k: v for k, v in kwargs.items() if k in {"db", "password", "username", "ssl"}}
    client = redis.Redis(
        host=nodes[0]["host"],
        port=int(nodes[0]["port"]),
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),  # a health check answers now; redis-py would retry for seconds
        **kwargs,
    )
    try:
        with feast_errors(store):
            client.ping()
    finally:
        client.close()


def missing_offline_sources(store: FeatureStore, views: Sequence[str] | None = None) -> dict[str, str]:
    """View name -> resolved path of each local offline source that does not exist."""
    from feast.infra.offline_stores.file_source import FileSource

    with feast_errors(store):
        feature_views = store.list_feature_views()
    missing = {}
    for view in feature_views:
        if views is not None and view.name not in views:
            continue
        source = view.batch_source
        if not isinstance(source, FileSource):
            continue
        uri = FileSource.get_uri_for_file_path(store.config.repo_path, source.path)
        if "://" not in uri and not Path(uri).exists():
            missing[view.name] = uri
    return missing


def offline_source(store: FeatureStore, view_name: str) -> tuple[str, str]:
    """(resolved path or URI, timestamp column) of a view's parquet source, for engines that read it themselves.

    Raises:
        FeatureStoreError: the view's batch source is not a file source.
    """
    from feast.infra.offline_stores.file_source import FileSource

    with feast_errors(store):
        source = store.get_feature_view(view_name).batch_source
    if not isinstance(source, FileSource):
        raise FeatureStoreError(
            f"feature view '{view_name}' does not read a parquet file source",
            got=type(source).__name__,
            hint="engine: spark reads the views' offline parquet; use engine: pandas for other sources",
        )
    return FileSource.get_uri_for_file_path(store.config.repo_path, source.path), str(source.timestamp_field)


def check_offline_sources(store: FeatureStore, views: Sequence[str] | None = None) -> None:
    """Raise ``FeatureStoreError`` naming every offline parquet file the views need but lack."""
    missing = missing_offline_sources(store, views)
    if missing:
        ctr = any(name.startswith("ctr_") for name in missing)
        raise FeatureStoreError(
            f"{len(missing)} offline feature source(s) do not exist",
            where=", ".join(sorted(set(missing.values()))),
            got=", ".join(sorted(missing)),
            hint="run `bidflow features build`"
            + (" and `bidflow features build-ctr`" if ctr else "")
            + ", then `bidflow features apply` if features.offline changed",
        )


# --- materialization -----------------------------------------------------------------------------


def batch_views(store: FeatureStore) -> list[str]:
    """The views materialization fills: every view but those fed by a push source.

    A push-fed view (the streaming velocity features) is written by its stream processor; its
    offline table exists for training sets and need not be there for a batch materialization.
    """
    from feast.data_source import PushSource

    with feast_errors(store):
        return [view.name for view in store.list_feature_views() if not isinstance(view.stream_source, PushSource)]


def materialize(store: FeatureStore, start: datetime, end: datetime, views: Sequence[str] | None = None) -> None:
    """Load the latest row per entity with ``start <= event_timestamp <= end`` into the online store.

    No ``views``: every batch view (``batch_views``).
    """
    if end < start:
        raise FeatureStoreError("materialization window is empty", expected="start <= end", got=f"{start} > {end}")
    views = list(views) if views else batch_views(store)
    check_offline_sources(store, views)
    check_online_store(store)
    with feast_errors(store):
        store.materialize(start_date=start, end_date=end, feature_views=views)


def materialize_incremental(
    store: FeatureStore, end: datetime | None = None, views: Sequence[str] | None = None
) -> None:
    """Materialize each view from where its last materialization ended (or ``end - ttl``) to ``end``.

    No ``views``: every batch view (``batch_views``).
    """
    views = list(views) if views else batch_views(store)
    check_offline_sources(store, views)
    check_online_store(store)
    with feast_errors(store):
        store.materialize_incremental(end_date=end or datetime.now(UTC), feature_views=views)


# --- training sets -------------------------------------------------------------------------------


@dataclass
class TrainingSet:
    """A training frame and how many of its rows fell back to defaults.

    ``defaulted[view]`` counts entity rows with no live row of that view (no row at or before
    their timestamp, or only rows older than the view's ttl, or no row at all); their features
    are the view's defaults, exactly as the online reader would serve them. ``dropped_by_feast``
    counts the distinct (keys, timestamp) lookups Feast's file offline store left out of its
    result instead of returning nulls -- those rows are kept here, with defaults.
    """

    frame: pd.DataFrame
    defaulted: dict[str, int]
    dropped_by_feast: dict[str, int]
    rows_with_defaults: int


def training_set(store: FeatureStore, entity_df: pd.DataFrame, service: str) -> pd.DataFrame:
    """``entity_df`` with the point-in-time features of ``service`` appended, row for row.

    Never drops or reorders a row (the index is reset): entity rows without a live feature row get
    the same defaults the online reader serves (logged, and counted in ``frame.attrs["defaulted"]``).

    Args:
        store: the feature store.
        entity_df: one row per example with every join key of the service and ``event_timestamp``.
        service: the FeatureService.
    """
    result = build_training_set(store, entity_df, service)
    result.frame.attrs["defaulted"] = result.defaulted
    result.frame.attrs["dropped_by_feast"] = result.dropped_by_feast
    result.frame.attrs["rows_with_defaults"] = result.rows_with_defaults
    return result.frame


def build_training_set(store: FeatureStore, entity_df: pd.DataFrame, service: str) -> TrainingSet:
    """``training_set`` with its counts (see ``TrainingSet``).

    Feast's file offline store (0.67) removes an entity row from the result when every feature row
    of its key is after its timestamp or older than the ttl, and collapses rows that share a
    timestamp and the join keys of the *first* view it joins (its de-duplication runs on the keys
    joined so far). Either would shrink or corrupt a training set silently. So each view is asked
    for separately, for the distinct (its keys, timestamp) pairs only, through the feature
    references of the FeatureService; a missing answer is detected by row count, then joined back
    onto every entity row and filled with the view's defaults.
    """
    spec = service_spec(store, service)
    frame = _entity_frame(entity_df, spec)
    if frame.empty:
        empty = pd.DataFrame({c: pd.Series(dtype=np.float64) for c in spec.columns})
        return TrainingSet(pd.concat([frame, empty], axis=1), {}, {}, 0)
    check_offline_sources(store, [v.view for v in spec.views])
    any_default = np.zeros(len(frame), dtype=bool)
    defaulted: dict[str, int] = {}
    dropped: dict[str, int] = {}
    columns: dict[str, np.ndarray] = {}
    for view in spec.views:
        values, lost, live = _view_features(store, frame, view, _lookup_times(store, view, frame[TIMESTAMP]))
        dropped[view.name] = lost
        defaulted[view.name] = int((~live).sum())
        any_default |= ~live
        columns.update(zip(view.columns, values.T, strict=True))
    out = pd.concat([frame, pd.DataFrame(columns, index=frame.index)], axis=1)
    if len(out) != len(entity_df):  # cannot happen by construction; a guard, not a code path
        raise FeatureStoreError("training set changed size", expected=str(len(entity_df)), got=str(len(out)))
    result = TrainingSet(out, defaulted, dropped, int(any_default.sum()))
    if result.rows_with_defaults:
        log.warning(
            "%s of %s training rows use default features for at least one view (%s); Feast left out %s lookups",
            result.rows_with_defaults,
            len(out),
            ", ".join(f"{k}: {v}" for k, v in defaulted.items() if v),
            sum(dropped.values()),
        )
    return result


def _entity_frame(entity_df: pd.DataFrame, spec: ServiceSpec) -> pd.DataFrame:
    """A copy with UTC nanosecond timestamps and join keys of the registered types."""
    needed = [*spec.join_keys, TIMESTAMP]
    absent = [c for c in needed if c not in entity_df.columns]
    if absent:
        raise FeatureStoreError(
            f"entity frame lacks columns the '{spec.name}' service needs",
            expected=", ".join(needed),
            got=f"missing {absent}",
        )
    frame = entity_df.reset_index(drop=True).copy()
    clashes = [c for c in spec.columns if c in frame.columns]
    if clashes:
        raise FeatureStoreError("entity frame already has feature columns", got=", ".join(clashes[:5]))
    frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True).astype("datetime64[ns, UTC]")
    types = {k: t for view in spec.views for k, t in zip(view.join_keys, view.key_types, strict=True)}
    for key, kind in types.items():
        if frame[key].isna().any():
            raise FeatureStoreError(
                f"entity frame has missing values in join key '{key}'", got=str(frame[key].isna().sum())
            )
        frame[key] = frame[key].astype(np.int64) if kind == "Int64" else frame[key].astype(str)
    return frame


def _lookup_times(store: FeatureStore, view: ViewSpec, times: pd.Series) -> pd.Series:
    """Entity times moved, where that cannot change the answer, so that many rows share one lookup.

    When every offline row of ``view`` is stamped on the hour (``bidflow features build`` writes them
    so) and its ttl is whole hours, all times strictly inside one hour see the same feature rows: a
    row stamped ``k`` is used at ``t`` iff ``t - ttl <= k <= t``, and for hour-aligned ``k`` that
    holds for every ``t`` in ``(H, H + 1h)`` exactly when it holds for ``H + 1s``. A training set
    of 600k calls then asks Feast for a few thousand (keys, hour) pairs instead of 600k, which is
    what makes the file offline store usable at this size. Other sources keep their exact times.
    """
    ttl = view.ttl_seconds
    if (ttl is not None and ttl % 3600) or not _source_on_hours(store, view.view):
        return times
    hour = pd.Timedelta(hours=1)
    floor = times.dt.floor(hour)
    return times.where(times == floor, floor + pd.Timedelta(seconds=1))


def _source_on_hours(store: FeatureStore, view_name: str) -> bool:
    """Whether the view's local parquet source has only hour-aligned event timestamps."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from feast.infra.offline_stores.file_source import FileSource

    with feast_errors(store):
        source = store.get_feature_view(view_name).batch_source
    if not isinstance(source, FileSource):
        return False
    uri = FileSource.get_uri_for_file_path(store.config.repo_path, source.path)
    if "://" in uri:
        return False
    stamps = pq.read_table(uri, columns=[source.timestamp_field]).column(0)
    nanos = pc.cast(stamps, pa.timestamp("ns", tz="UTC")).cast(pa.int64()).to_numpy(zero_copy_only=False)
    return bool(np.all(nanos % 3_600_000_000_000 == 0))


def _view_features(
    store: FeatureStore, frame: pd.DataFrame, view: ViewSpec, at: pd.Series
) -> tuple[np.ndarray, int, np.ndarray]:
    """Features of one view for every row of ``frame`` at times ``at``: (values, lookups Feast dropped, live mask)."""
    keys = [*view.join_keys, TIMESTAMP]
    frame = frame[list(view.join_keys)].assign(**{TIMESTAMP: at})
    lookups = frame[keys].drop_duplicates(ignore_index=True)
    refs = [f"{view.view}:{feature}" for feature in view.features]
    with feast_errors(store):
        got = store.get_historical_features(entity_df=lookups, features=refs, full_feature_names=True).to_df()
    feast_columns = [f"{view.view}__{feature}" for feature in view.features]
    got = got[[*keys, *feast_columns]].copy()
    got[TIMESTAMP] = pd.to_datetime(got[TIMESTAMP], utc=True).astype("datetime64[ns, UTC]")
    lost = len(lookups) - len(got)
    joined = frame[keys].merge(got, on=keys, how="left", validate="many_to_one")
    values = joined[feast_columns].to_numpy(dtype=np.float64, na_value=np.nan)
    # A row Feast returned with every feature null is an entity it had no row for at all.
    live = ~np.isnan(values).all(axis=1)
    defaults = np.asarray(view.defaults, dtype=np.float64)
    values = np.where(np.isnan(values), defaults, values)
    return values, lost, live


def bid_filter_entities(calls: pd.DataFrame) -> pd.DataFrame:
    """Entity rows for the ``bid_filter`` service from ingested rows (one per auction x partner).

    All columns are kept (label, request features); ``ts`` becomes ``event_timestamp``.
    """
    frame = calls.rename(columns={"ts": TIMESTAMP})
    frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
    frame["device_type"] = frame["device_type"].astype(np.int64)
    return frame
