"""Finding kinds by name: the built-in ones plus the ``kinds:`` section of ``bidflow.yaml``."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

from bidflow.errors import ConfigError

if TYPE_CHECKING:
    from bidflow.config import Config
    from bidflow.kinds.base import Kind

DEFAULT_KIND: Final = "bid_filter"  # what a command works on when no kind is named
BUILTIN: Final = {
    "bid_filter": "bidflow.kinds.bid_filter:KIND",
    "ctr": "bidflow.kinds.ctr:KIND",
    "bidder": "bidflow.kinds.bidder:KIND",
    "fraud": "bidflow.kinds.fraud:KIND",
}


def registered(config: Config | None) -> dict[str, str]:
    """Every kind's name and import path: the built-in ones, then the configuration's own."""
    return BUILTIN | (dict(config.kinds) if config is not None else {})


def kind_names(config: Config | None) -> tuple[str, ...]:
    """The registered kinds' names, built-in first."""
    return tuple(registered(config))


def kind(config: Config | None, name: str) -> Kind:
    """The kind called ``name``.

    Raises:
        ConfigError: no kind of that name, or its import path does not lead to a ``Kind`` of that name.
    """
    from bidflow.kinds.base import Kind

    paths = registered(config)
    if name not in paths:
        raise ConfigError(
            "unknown model kind",
            expected=", ".join(paths),
            got=name,
            hint="`bidflow kinds` lists them; a new kind is registered under `kinds:` in bidflow.yaml",
        )
    found = load_object(paths[name], where=f"kinds.{name}")
    if not isinstance(found, Kind):
        raise ConfigError("a registered kind is not a bidflow Kind", where=f"kinds.{name}", got=type(found).__name__)
    if found.name != name:
        raise ConfigError("a kind is registered under another name than its own", where=f"kinds.{name}",
                          expected=name, got=found.name)  # fmt: skip
    return found


def load_object(path: str, *, where: str) -> Any:
    """The object at ``module:attribute``.

    Raises:
        ConfigError: a malformed path, a module that does not import, or no such attribute.
    """
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError("not an import path", where=where, expected="module:attribute", got=path)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            "the module of a registered object does not import", where=where, got=f"{path}: {exc}"
        ) from exc
    try:
        return getattr(module, attribute)
    except AttributeError as exc:
        raise ConfigError("no such object in its module", where=where, got=path) from exc


def registered_name(config: Config, name: str) -> str:
    """The registered model name of kind ``name`` (``registry.models`` may rename it).

    Raises:
        ConfigError: no kind of that name.
    """
    return config.registry.models.get(name) or kind(config, name).registered_model
