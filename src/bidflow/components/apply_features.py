"""``apply_features``: register the Feast definitions (``bidflow.features.store.apply``)."""

from bidflow.components._base import component


@component
def apply_features(config: str) -> str:
    """Register the feature repo's entities, views and services for ``features.environment``.

    Creates the online tables too. The offline parquet need not exist yet, so this runs beside
    the feature build.

    Args:
        config: the text of a bidflow.yaml; empty for the defaults.

    Returns:
        Output: the Feast project applied.
    """
    from bidflow.components import _runtime
    from bidflow.features import store

    settings = _runtime.config(config).features
    summary = store.apply(store.open_store(settings), settings)
    print(f"applied project {summary.project}: views {summary.feature_views}, services {summary.feature_services}")
    return summary.project
