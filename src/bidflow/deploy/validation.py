"""Offline checks of an InferenceService manifest: the generated schema, plus the rules no schema carries.

The schema part walks :func:`bidflow.deploy.crd.inference_service_json_schema` with a small checker for exactly
the keywords that generator emits (``type``, ``properties``, ``additionalProperties``, ``items``, ``required``,
``const``, ``pattern``, ``$ref``), so the runtime needs no JSON Schema library; the tests run the same schema
through ``jsonschema`` and expect the same verdicts.

The rules part is what KServe's admission webhook enforces on a cluster and no OpenAPI schema expresses; without
it a bad value passes every offline check and ``kubectl apply``, and only fails (or misroutes traffic) on EKS.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, Final, TypeGuard

from bidflow.deploy.crd import Schema, inference_service_json_schema

# Percent fields of the v1beta1 API: ComponentExtensionSpec.canaryTrafficPercent (predictor, transformer,
# explainer) and, since kserve 0.21, CanarySpec.trafficPercent.
PERCENT_FIELDS: Final = frozenset({"canaryTrafficPercent", "trafficPercent"})
_COMPONENTS: Final = ("predictor", "transformer", "explainer")
_JSON_TYPES: Final[dict[str, str]] = {
    "object": "an object",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
}


def validate_inference_service(doc: Mapping[str, Any]) -> list[str]:
    """Every problem with an InferenceService manifest, as ``"path: message"`` lines; empty when it is valid.

    Checks the strict schema generated from the installed kserve SDK (types, unknown fields, required fields,
    quantity formats) and then the webhook rules: every traffic percentage within 0-100, and
    ``0 <= minReplicas <= maxReplicas`` for each component.
    """
    schema = inference_service_json_schema()
    problems = list(_check(doc, schema, schema["$defs"], ""))
    problems.extend(_webhook_rules(doc))
    return problems


def _webhook_rules(doc: Mapping[str, Any]) -> Iterator[str]:
    spec = doc.get("spec")
    if not isinstance(spec, Mapping):
        return
    yield from _percentages(spec, "spec")
    for component in _COMPONENTS:
        section = spec.get(component)
        if not isinstance(section, Mapping):
            continue
        low, high = section.get("minReplicas"), section.get("maxReplicas")
        if _is_int(low) and low < 0:
            yield f"spec.{component}.minReplicas: {low} is negative; use 0 (scale to zero) or more"
        if _is_int(low) and _is_int(high) and high < low:
            yield f"spec.{component}.maxReplicas: {high} is below minReplicas {low}"


def _percentages(node: Any, path: str) -> Iterator[str]:
    """Every percent field anywhere under ``node`` (canaries may sit in predictor, transformer, explainer, canary[])."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            where = f"{path}.{key}"
            if key in PERCENT_FIELDS and _is_int(value) and not 0 <= value <= 100:
                yield (
                    f"{where}: {value} is outside 0-100 (the percentage of traffic routed to the canary; "
                    "0 sends none, 100 promotes it)"
                )
            else:
                yield from _percentages(value, where)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _percentages(item, f"{path}[{index}]")


def _check(value: Any, schema: Schema, defs: Mapping[str, Schema], path: str) -> Iterator[str]:
    """Yield a message per violation of ``schema`` (the generator's keyword subset) at ``path``."""
    if "$ref" in schema:
        yield from _check(value, defs[schema["$ref"].removeprefix("#/$defs/")], defs, path)
    where = path or "(document)"
    expected = schema.get("type")
    if expected is not None:
        allowed = [expected] if isinstance(expected, str) else list(expected)
        if not any(_has_type(value, name) for name in allowed):
            wanted = " or ".join(_JSON_TYPES[name] for name in allowed)
            yield f"{where}: expected {wanted}, got {_describe(value)}"
            return
    if "const" in schema and value != schema["const"]:
        yield f"{where}: must be {schema['const']!r}, got {value!r}"
    if "pattern" in schema and isinstance(value, str) and re.search(schema["pattern"], value) is None:
        yield f"{where}: {value!r} is not a Kubernetes quantity (e.g. 500m, 2Gi, 1)"
    if isinstance(value, Mapping):
        properties: Mapping[str, Schema] = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                yield f"{_join(path, key)}: required field missing"
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                yield from _check(item, properties[key], defs, _join(path, key))
            elif extra is False:
                known = ", ".join(sorted(properties)) or "none"
                yield f"{_join(path, key)}: unknown field (known here: {known})"
            elif isinstance(extra, dict):
                yield from _check(item, extra, defs, _join(path, key))
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            yield from _check(item, schema["items"], defs, f"{path}[{index}]")


def _has_type(value: Any, name: str) -> bool:
    match name:
        case "object":
            return isinstance(value, Mapping)
        case "array":
            return isinstance(value, list)
        case "string":
            return isinstance(value, str)
        case "boolean":
            return isinstance(value, bool)
        case "integer":
            return _is_int(value) or (isinstance(value, float) and value.is_integer())
        case "number":
            return isinstance(value, int | float) and not isinstance(value, bool)
    return False


def _is_int(value: object) -> TypeGuard[int]:
    # bool is an int subclass in Python, but `true` is not an integer in JSON.
    return isinstance(value, int) and not isinstance(value, bool)


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    name = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )
    text = repr(value)
    return f"{name} {text if len(text) <= 40 else text[:37] + '...'}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
