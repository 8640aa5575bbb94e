"""The KServe InferenceService CRD and a strict JSON Schema, generated from the installed kserve SDK.

Why generated: the kserve wheel ships typed model classes (``kserve.models``) but no CustomResourceDefinition, and
this project does not copy KServe's upstream CRD. The SDK's classes are generated from the same Go types as that
CRD, so walking their ``openapi_types`` (attribute -> type name) and ``attribute_map`` (attribute -> JSON key)
reproduces the field tree of the installed SDK version. Core Kubernetes types (``V1Container``, ...) come from
``kubernetes.client.models``.

Two outputs share one walk:

- :func:`inference_service_json_schema`: Draft 2020-12, one ``$defs`` entry per class, ``additionalProperties:
  false`` everywhere, for offline validation of the manifests we render (unknown fields are errors, as they are
  for ``kubectl --validate=strict``).
- :func:`inference_service_crd`: ``apiextensions.k8s.io/v1`` with a *structural* ``openAPIV3Schema`` (every
  ``$ref`` inlined, no ``additionalProperties`` beside ``properties``), which a real kube-apiserver accepts and
  enforces (types, required fields, quantity patterns); unknown fields are pruned there, not rejected.

What the SDK does not say, and how it is filled in:

- Which fields are required: probed by calling each property setter with ``None`` under client-side validation,
  which is exactly the check the generated classes carry.
- Quantities and int-or-string fields, which the Python client types as plain ``str``/``object``: the small
  tables below, checked against Kubernetes' own schemas by ``tests/k8s/test_crd.py``.
- Types the SDK names but neither package defines (Knative status types, core types newer than the installed
  client): left open (``x-kubernetes-preserve-unknown-fields``) and listed in :attr:`GeneratedSchemas.opaque`.

No schema limits ``canaryTrafficPercent`` to 0-100 (KServe's admission webhook does): see
:mod:`bidflow.deploy.validation`.
"""

from __future__ import annotations

import copy
import functools
import importlib
import re
import types
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Final, Protocol, cast

Schema = dict[str, Any]

GROUP: Final = "serving.kserve.io"
VERSION: Final = "v1beta1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "InferenceService"
PLURAL: Final = "inferenceservices"
SINGULAR: Final = "inferenceservice"
SHORT_NAME: Final = "isvc"
CRD_NAME: Final = f"{PLURAL}.{GROUP}"
ROOT_CLASS: Final = "V1beta1InferenceService"

# Kubernetes' resource.Quantity as CRDs declare it (an integer or a string such as "500m", "2Gi", "1e3").
QUANTITY_PATTERN: Final = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

# (class, attribute) pairs the Python client types as str / dict(str, str) but the API types as Quantity.
QUANTITY_FIELDS: Final = frozenset(
    {
        ("V1ResourceFieldSelector", "divisor"),
        ("V1ResourceRequirements", "limits"),
        ("V1ResourceRequirements", "requests"),
        ("V1EmptyDirVolumeSource", "size_limit"),
        ("V1VolumeResourceRequirements", "limits"),
        ("V1VolumeResourceRequirements", "requests"),
    }
)
# (class, attribute) pairs the Python client types as `object` but the API types as IntOrString.
INT_OR_STRING_FIELDS: Final = frozenset(
    {
        ("V1HTTPGetAction", "port"),
        ("V1TCPSocketAction", "port"),
        ("V1RollingUpdateDeployment", "max_surge"),
        ("V1RollingUpdateDeployment", "max_unavailable"),
    }
)
# Type names the kserve SDK uses without defining a class for them.
_SCALAR_ALIASES: Final[dict[str, Schema]] = {
    # resource.Quantity in Go; KServe's MetricQuantity wraps one and is declared int-or-string with the same pattern.
    "ResourceQuantity": {
        "type": ["integer", "string"],
        "pattern": QUANTITY_PATTERN,
        "x-kubernetes-int-or-string": True,
    },
    "V1beta1MetricQuantity": {
        "type": ["integer", "string"],
        "pattern": QUANTITY_PATTERN,
        "x-kubernetes-int-or-string": True,
    },
    "V1Time": {"type": "string", "format": "date-time"},
    "KnativeURL": {"type": "string"},
}
_PRIMITIVES: Final[dict[str, Schema]] = {
    "str": {"type": "string"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
    "datetime": {"type": "string", "format": "date-time"},
    "date": {"type": "string", "format": "date"},
    # A free-form JSON value (e.g. managedFields[].fieldsV1) unless the tables above say otherwise.
    "object": {"x-kubernetes-preserve-unknown-fields": True},
}
# kserve names some core types by their Go package ("K8sIoApiAppsV1DeploymentStrategy"); the Python client calls
# the same class "V1DeploymentStrategy".
_GO_PACKAGE_NAME: Final = re.compile(r"^K8sIoApi(?:[A-Z][a-z0-9]*)+?(V\d+(?:alpha\d+|beta\d+)?)([A-Z]\w*)$")
_LIST: Final = re.compile(r"^list\[(.+)\]$")
_DICT: Final = re.compile(r"^dict\(str, (.+)\)$")
_REF_PREFIX: Final = "#/$defs/"


class _ModelClass(Protocol):
    """What the walk uses of an OpenAPI-generated model class (kserve.models.*, kubernetes.client.models.*)."""

    __name__: str
    openapi_types: dict[str, str]
    attribute_map: dict[str, str]


@dataclass(frozen=True)
class GeneratedSchemas:
    """Both schemas, and what the walk could not pin down."""

    json_schema: Schema
    crd: Schema
    opaque: tuple[str, ...]
    """Type names that neither kserve.models nor kubernetes.client.models define; left open in both schemas."""
    source: str
    """The SDK versions the schemas were generated from, e.g. ``kserve 0.21.0, kubernetes 30.1.0``."""


def inference_service_json_schema() -> Schema:
    """Strict Draft 2020-12 JSON Schema of an InferenceService manifest (a fresh copy per call)."""
    return copy.deepcopy(generate().json_schema)


def inference_service_crd() -> Schema:
    """The v1beta1 InferenceService CustomResourceDefinition (a fresh copy per call)."""
    return copy.deepcopy(generate().crd)


@functools.cache
def generate() -> GeneratedSchemas:
    """Walk the installed SDK's model classes once and build both schemas. Pure apart from imports."""
    walker = _Walker(
        importlib.import_module("kserve.models"),
        importlib.import_module("kubernetes.client.models"),
    )
    root = walker.class_schema(ROOT_CLASS)
    json_schema = _manifest_schema(root, walker.defs)
    source = f"kserve {metadata.version('kserve')}, kubernetes {metadata.version('kubernetes')}"
    crd = _crd(_structural(root, walker.defs, root=True), source)
    return GeneratedSchemas(json_schema, crd, tuple(sorted(walker.opaque)), source)


class _Walker:
    """Turns SDK model classes into JSON Schema ``$defs`` entries, one per class."""

    def __init__(self, kserve_models: types.ModuleType, core_models: types.ModuleType) -> None:
        self._modules = (kserve_models, core_models)
        self.defs: dict[str, Schema] = {}
        self.opaque: set[str] = set()

    def find(self, name: str) -> _ModelClass | None:
        match = _GO_PACKAGE_NAME.match(name)
        candidates = [name, f"{match.group(1)}{match.group(2)}"] if match else [name]
        for candidate in candidates:
            for module in self._modules:
                cls = getattr(module, candidate, None)
                if isinstance(cls, type) and hasattr(cls, "openapi_types") and hasattr(cls, "attribute_map"):
                    model: _ModelClass = cls
                    return model
        return None

    def type_schema(self, type_name: str, owner: str = "", attribute: str = "") -> Schema:
        """Schema for a type name as written in ``openapi_types`` (``list[...]``, ``dict(str, ...)``, a class)."""
        if (match := _LIST.match(type_name)) is not None:
            return {"type": "array", "items": self.type_schema(match.group(1), owner, attribute)}
        if (match := _DICT.match(type_name)) is not None:
            return {"type": "object", "additionalProperties": self.type_schema(match.group(1), owner, attribute)}
        if (owner, attribute) in QUANTITY_FIELDS:
            return dict(_SCALAR_ALIASES["ResourceQuantity"])
        if (owner, attribute) in INT_OR_STRING_FIELDS:
            return {"type": ["integer", "string"], "x-kubernetes-int-or-string": True}
        if type_name in _PRIMITIVES:
            return dict(_PRIMITIVES[type_name])
        if type_name in _SCALAR_ALIASES:
            return dict(_SCALAR_ALIASES[type_name])
        return self.class_schema(type_name)

    def class_schema(self, name: str) -> Schema:
        """A ``$ref`` to the class's definition, adding the definition (and its fields') on first use."""
        cls = self.find(name)
        if cls is None:
            # An object we cannot describe: keep it (do not prune, do not reject), and report it.
            self.opaque.add(name)
            return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        key = cls.__name__
        if key not in self.defs:
            self.defs[key] = {}  # placeholder first: recursive types terminate
            openapi_types = cls.openapi_types
            attribute_map = cls.attribute_map
            properties = {
                attribute_map[attribute]: self.type_schema(type_name, key, attribute)
                for attribute, type_name in openapi_types.items()
            }
            definition: Schema = {"type": "object", "properties": properties, "additionalProperties": False}
            required = [attribute_map[a] for a in openapi_types if _is_required(cls, a)]
            if required:
                definition["required"] = required
            self.defs[key] = definition
        return {"$ref": _REF_PREFIX + key}


def _is_required(cls: _ModelClass, attribute: str) -> bool:
    """Whether the generated setter rejects ``None`` under client-side validation (how the SDK marks required)."""
    probe: Any = object.__new__(cast("type[Any]", cls))  # a bare instance: __init__ would run every setter
    probe.local_vars_configuration = types.SimpleNamespace(client_side_validation=True)
    try:
        setattr(probe, attribute, None)
    except ValueError:
        return True
    return False


def _manifest_schema(root: Schema, defs: dict[str, Schema]) -> Schema:
    """The root for manifests: our files must name their apiVersion/kind, a metadata.name and a spec."""
    root_def = copy.deepcopy(defs[root["$ref"].removeprefix(_REF_PREFIX)])
    properties = root_def["properties"]
    properties["apiVersion"] = {"type": "string", "const": API_VERSION}
    properties["kind"] = {"type": "string", "const": KIND}
    properties["metadata"] = {"$ref": properties["metadata"]["$ref"], "required": ["name"]}
    root_def["required"] = sorted({*root_def.get("required", []), "apiVersion", "kind", "metadata", "spec"})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:bidflow:schema:{PLURAL}.{GROUP}:{VERSION}",
        "title": f"{KIND} ({API_VERSION}), generated from the kserve SDK",
        **root_def,
        "$defs": dict(sorted(defs.items())),
    }


def _structural(schema: Schema, defs: dict[str, Schema], *, root: bool = False, path: tuple[str, ...] = ()) -> Schema:
    """Rewrite the JSON Schema form into a CRD structural schema: inline refs, CRD spelling of int-or-string."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix(_REF_PREFIX)
        if name in path:
            # A recursive type cannot be inlined; leave the inner occurrence open.
            return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        return _structural(defs[name], defs, root=root, path=(*path, name))
    if schema.get("x-kubernetes-int-or-string"):
        out: Schema = {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True}
        if "pattern" in schema:
            out["pattern"] = schema["pattern"]
        return out
    out = {k: v for k, v in schema.items() if k not in ("properties", "items", "additionalProperties", "const")}
    if "properties" in schema:
        properties = {}
        for key, sub in schema["properties"].items():
            if root and key == "metadata":
                # The API server owns the root metadata schema; a CRD may only say it is an object.
                properties[key] = {"type": "object"}
            else:
                properties[key] = _structural(sub, defs, path=path)
        out["properties"] = properties
    elif isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = _structural(schema["additionalProperties"], defs, path=path)
    if "items" in schema:
        out["items"] = _structural(schema["items"], defs, path=path)
    return out


def _crd(structural_root: Schema, source: str) -> Schema:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "annotations": {"bidflow/generated-from": source},
            "labels": {"app.kubernetes.io/part-of": "bidflow", "app.kubernetes.io/component": "crd"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": [SHORT_NAME],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "URL", "type": "string", "jsonPath": ".status.url"},
                        {
                            "name": "Ready",
                            "type": "string",
                            "jsonPath": ".status.conditions[?(@.type=='Ready')].status",
                        },
                        {"name": "Canary", "type": "integer", "jsonPath": ".spec.predictor.canaryTrafficPercent"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {"openAPIV3Schema": structural_root},
                }
            ],
        },
    }
