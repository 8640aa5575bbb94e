"""``materialize_features``: load the built features into the online store (``bidflow.features.store.materialize``)."""

from kfp.dsl import Dataset, Input

from bidflow.components._base import component


@component
def materialize_features(features: Input[Dataset], config: str) -> None:
    """Load the latest row per entity of the freshly built views into the online store.

    The window is the event-time span the build wrote (``first`` .. ``last`` of its manifest), and
    only the views it wrote are materialized.

    Args:
        features: the manifest ``build_features`` or ``build_ctr_features`` wrote.
        config: the text of a bidflow.yaml; empty for the defaults.
    """
    from datetime import datetime

    from bidflow.components import _runtime
    from bidflow.features import store

    settings = _runtime.config(config).features
    first, last = (datetime.fromisoformat(features.metadata[key]) for key in ("first", "last"))
    store.materialize(store.open_store(settings), first, last, features.metadata["views"])
