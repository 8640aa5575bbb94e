"""The model-kind registry: every model bidflow trains, gates, serves and watches is a ``Kind``.

A kind is one object (``bidflow.kinds.base.Kind``) that tells the loop everything it needs: its
FeatureService and feature spec, its label, where its rows come from, its training settings
(``train.<kind>`` of ``bidflow.yaml``), whether it has per-partner thresholds, its bias slices, its
served model class, its drift features, its pipeline and its registered model name. Code outside
this package and the kinds' own modules asks the registry (``kind(config, name)``) instead of
spelling a kind's name.

Kinds plug in by import path, as Feast's stores do: the built-in ones are listed in
``registry.BUILTIN``; a user's kind is one module that defines a ``Kind`` plus one line under
``kinds:`` in ``bidflow.yaml`` (``my_kind: my_package.my_kind:KIND``).
"""

from bidflow.kinds.base import Kind
from bidflow.kinds.registry import BUILTIN, DEFAULT_KIND, kind, kind_names, load_object, registered_name

__all__ = ["BUILTIN", "DEFAULT_KIND", "Kind", "kind", "kind_names", "load_object", "registered_name"]
