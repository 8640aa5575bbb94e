"""The pipelines by name, compiling them to IR YAML, and typing their parameters from the compiled spec."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from bidflow.errors import ConfigError

if TYPE_CHECKING:
    from bidflow.config import Config


@dataclass(frozen=True)
class Parameter:
    """One pipeline parameter as the compiled spec declares it."""

    name: str
    kind: str  # STRING | NUMBER_INTEGER | NUMBER_DOUBLE | BOOLEAN | LIST | STRUCT
    default: Any = None


def pipeline_names(config: Config | None = None) -> tuple[str, ...]:
    """The kinds that have a training pipeline (a pipeline is named after its kind)."""
    from bidflow.kinds import kind, kind_names

    return tuple(name for name in kind_names(config) if kind(config, name).pipeline is not None)


def pipeline(name: str, config: Config | None = None) -> Any:
    """The ``@dsl.pipeline`` function of kind ``name``.

    Raises:
        ConfigError: no such kind, or the kind has no pipeline.
    """
    from bidflow.kinds import kind, load_object

    path = kind(config, name).pipeline
    if path is None:
        raise ConfigError(f"model kind '{name}' has no training pipeline", expected=", ".join(pipeline_names(config)))
    return load_object(path, where=f"the pipeline of kind '{name}'")


def compile_pipeline(name: str, path: Path, image: str | None = None, config: Config | None = None) -> Path:
    """Compile pipeline ``name`` to IR YAML at ``path``.

    Args:
        name: a registered kind with a pipeline (``pipeline_names``).
        path: the YAML file to write (its folder is created).
        image: the component image instead of ``bidflow.components.COMPONENT_IMAGE`` (another
            registry or tag); every task of the pipeline runs on it.
        config: where kinds beyond the built-in ones are registered (``kinds:``).

    Returns:
        ``path``.
    """
    from kfp import compiler

    from bidflow.components import COMPONENT_IMAGE

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / path.name
        compiler.Compiler().compile(pipeline_func=pipeline(name, config), package_path=str(staged))
        text = staged.read_text(encoding="utf-8")
    if image and image != COMPONENT_IMAGE:
        text = text.replace(f"image: {COMPONENT_IMAGE}\n", f"image: {image}\n")
    path.write_text(text, encoding="utf-8")
    return path


def compile_all(out_dir: Path, image: str | None = None, config: Config | None = None) -> list[Path]:
    """Compile every kind's pipeline to ``out_dir/<name>.yaml``."""
    return [compile_pipeline(name, out_dir / f"{name}.yaml", image, config) for name in pipeline_names(config)]


def parameters(spec: Path) -> dict[str, Parameter]:
    """The root parameters a compiled pipeline declares, with their types and defaults."""
    document = next(iter(yaml.safe_load_all(spec.read_text(encoding="utf-8"))))
    declared = document["root"].get("inputDefinitions", {}).get("parameters", {})
    return {
        name: Parameter(name, entry["parameterType"], entry.get("defaultValue"))
        for name, entry in sorted(declared.items())
    }


def declared_parameters(name: str, config: Config | None = None) -> dict[str, Parameter]:
    """The parameters of pipeline ``name`` (compiled to a temporary file to read them)."""
    with tempfile.TemporaryDirectory() as tmp:
        return parameters(compile_pipeline(name, Path(tmp) / f"{name}.yaml", config=config))


def parse_arguments(declared: Mapping[str, Parameter], pairs: Iterable[str]) -> dict[str, Any]:
    """``key=value`` strings as typed pipeline arguments (a list or a struct is given as JSON).

    Raises:
        ConfigError: no ``=``, an unknown name, or a value that is not of the parameter's type.
    """
    arguments: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise ConfigError("a pipeline parameter must be given as key=value", got=pair)
        if key not in declared:
            raise ConfigError("unknown pipeline parameter", expected=", ".join(declared), got=key)
        arguments[key] = _typed(declared[key], raw)
    return arguments


def _typed(parameter: Parameter, raw: str) -> Any:
    try:
        if parameter.kind == "NUMBER_INTEGER":
            return int(raw)
        if parameter.kind == "NUMBER_DOUBLE":
            return float(raw)
        if parameter.kind == "BOOLEAN":
            if raw.lower() not in {"true", "false"}:
                raise ValueError(raw)
            return raw.lower() == "true"
        if parameter.kind in {"LIST", "STRUCT"}:
            value = json.loads(raw)
            if not isinstance(value, list if parameter.kind == "LIST" else dict):
                raise ValueError(raw)
            return value
    except ValueError as exc:
        raise ConfigError(
            f"pipeline parameter '{parameter.name}' has the wrong type",
            expected=parameter.kind.lower().replace("_", " ")
            + (" (JSON)" if parameter.kind in {"LIST", "STRUCT"} else ""),
            got=raw,
        ) from exc
    return raw
