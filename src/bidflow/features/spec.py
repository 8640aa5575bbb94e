"""What a FeatureService serves, read from the Feast registry: the one list of feature names.

Training sets (``bidflow.features.store``) and the online reader (``bidflow.features.online``)
both take their columns, their order, the defaults for missing entities and the ttl of each view
from here, so they cannot drift apart. Column names are Feast's full names,
``<feature view>__<feature>``, which are unique across the views of a service.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Final

import numpy as np

from bidflow.errors import FeatureStoreError

if TYPE_CHECKING:
    from feast import FeatureStore

DEFAULT_TAG: Final = "default"  # Field tag holding the value used when an entity has no live row
NUMERIC_TYPES: Final = frozenset({"Float64", "Float32", "Int64", "Int32", "Bool"})
KEY_TYPES: Final = frozenset({"String", "Int64"})


@dataclass(frozen=True)
class ViewSpec:
    """One feature view as a FeatureService projects it."""

    name: str  # the name Feast prefixes its features with (alias or view name)
    view: str  # the feature view's own name (online tables and Redis hash fields use it)
    join_keys: tuple[str, ...]
    key_types: tuple[str, ...]  # Feast type names of the join keys: "String" | "Int64"
    features: tuple[str, ...]
    defaults: tuple[float, ...]
    ttl_seconds: float | None  # None: rows never expire

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(f"{self.name}__{feature}" for feature in self.features)

    @property
    def ttl_limit(self) -> float:
        """The ttl in seconds, infinite when rows never expire (``too_old`` takes it as it is)."""
        return math.inf if self.ttl_seconds is None else self.ttl_seconds


def too_old(event_seconds: np.ndarray, ttl_limit: float | np.ndarray, at_seconds: float) -> np.ndarray:
    """The ttl rule: which rows stamped ``event_seconds`` are too old to use at ``at_seconds``.

    ``ttl_limit`` is one view's (``ViewSpec.ttl_limit``) or, for rows holding several views'
    stamps side by side, one per view.
    """
    old: np.ndarray = event_seconds < at_seconds - ttl_limit
    return old


@dataclass(frozen=True)
class ServiceSpec:
    """A FeatureService: its views in order, and the flat column list of its features."""

    name: str
    views: tuple[ViewSpec, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(column for view in self.views for column in view.columns)

    @property
    def defaults(self) -> np.ndarray:
        return np.array([d for view in self.views for d in view.defaults], dtype=np.float64)

    @cached_property  # read on every online request
    def join_keys(self) -> tuple[str, ...]:
        keys: dict[str, None] = {}
        for view in self.views:
            keys.update(dict.fromkeys(view.join_keys))
        return tuple(keys)

    def slices(self) -> dict[str, slice]:
        """Column range of each view in ``columns``."""
        out: dict[str, slice] = {}
        start = 0
        for view in self.views:
            out[view.name] = slice(start, start + len(view.features))
            start += len(view.features)
        return out


def service_spec(store: FeatureStore, service: str) -> ServiceSpec:
    """Read ``service`` from the store's registry.

    Raises:
        FeatureStoreError: the service is not applied, or a feature is not numeric or has no
            ``default`` tag (the online reader returns one float matrix for every feature).
    """
    try:
        feature_service = store.get_feature_service(service)
    except Exception as exc:  # Feast raises its own FeatureServiceNotFoundException and registry errors
        raise FeatureStoreError(
            f"feature service '{service}' is not in the registry",
            where=f"project {store.project}",
            got=f"{type(exc).__name__}: {exc}",
            hint="run `bidflow features apply` for this environment",
        ) from exc
    views = []
    for projection in feature_service.feature_view_projections:
        view = store.get_feature_view(projection.name)
        key_map = projection.join_key_map or {}
        keys = [(key_map.get(c.name, c.name), str(c.dtype)) for c in view.entity_columns]
        for key, kind in keys:
            if kind not in KEY_TYPES:
                raise FeatureStoreError(
                    f"join key '{key}' of feature view '{view.name}' has an unsupported type",
                    expected=" or ".join(sorted(KEY_TYPES)),
                    got=kind,
                )
        features, defaults = [], []
        for feature in projection.features:
            kind = str(feature.dtype)
            if kind not in NUMERIC_TYPES:
                raise FeatureStoreError(
                    f"feature '{view.name}:{feature.name}' is not numeric",
                    expected=", ".join(sorted(NUMERIC_TYPES)),
                    got=kind,
                    hint="models read one float matrix; encode categories before the feature store",
                )
            features.append(feature.name)
            defaults.append(_default(view.name, feature.name, feature.tags))
        ttl: timedelta | None = view.ttl
        views.append(
            ViewSpec(
                name=str(projection.name_to_use()),  # type: ignore[no-untyped-call]
                view=view.name,
                join_keys=tuple(k for k, _ in keys),
                key_types=tuple(t for _, t in keys),
                features=tuple(features),
                defaults=tuple(defaults),
                ttl_seconds=ttl.total_seconds() if ttl and ttl.total_seconds() > 0 else None,
            )
        )
    return ServiceSpec(name=service, views=tuple(views))


def _default(view: str, feature: str, tags: dict[str, str] | None) -> float:
    raw = (tags or {}).get(DEFAULT_TAG)
    if raw is None:
        raise FeatureStoreError(
            f"feature '{view}:{feature}' has no '{DEFAULT_TAG}' tag",
            where="feature_repo/feature_views.py",
            hint=f"give the Field tags={{'{DEFAULT_TAG}': '0'}} (or 'nan'): the value for entities with no row",
        )
    try:
        value = float(raw)
    except ValueError as exc:
        raise FeatureStoreError(
            f"feature '{view}:{feature}' has a non-numeric default", expected="a float or 'nan'", got=raw
        ) from exc
    if math.isinf(value):
        raise FeatureStoreError(f"feature '{view}:{feature}' has an infinite default", got=raw)
    return value
