"""The Spark Operator's SparkApplication CRD kept in tests/k8s/crds/, and a strict JSON Schema made from it.

The CRD's schema accepts unknown fields (a structural schema prunes them on the server, silently), so the strict
variant adds ``additionalProperties: false`` to every object that lists its properties and keeps no unknown fields:
a misspelt field fails offline instead of vanishing on the cluster.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CRD_FILE = Path(__file__).parent / "crds" / "sparkoperator.k8s.io_sparkapplications.yaml"
HEADER_SHA256 = re.compile(r"^#\s+sha256 of the upstream file: ([0-9a-f]{64})$", re.M)


def header_and_body() -> tuple[str, str]:
    """The file's leading comment block (what it is, where from, which licence) and the upstream text below it."""
    text = CRD_FILE.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    count = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    return "".join(lines[:count]), "".join(lines[count:])


def recorded_sha256() -> str:
    header, _ = header_and_body()
    match = HEADER_SHA256.search(header)
    assert match, f"{CRD_FILE.name}: no 'sha256 of the upstream file' line in its header"
    return match.group(1)


def body_sha256() -> str:
    return hashlib.sha256(header_and_body()[1].encode()).hexdigest()


@functools.cache
def _crd() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CRD_FILE.read_text(encoding="utf-8"))
    return loaded


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition (a copy)."""
    return copy.deepcopy(_crd())


def for_apiserver_1_20() -> tuple[dict[str, Any], int]:
    """The CRD as the tests' kube-apiserver 1.20 accepts it, and how many defaults were dropped for that.

    Kubernetes 1.20 refuses an empty-string ``default`` (it reads it as null: "in body must be of type string:
    \"null\""); later releases, every EKS version included, accept the upstream file as it is. The CRD carries
    ``default: ""`` only on core types' optional ``name`` fields (configMapKeyRef.name, ...), which bidflow's
    manifests never leave out, so dropping those defaults changes nothing the tests look at.
    """
    dropped = 0

    def walk(node: Any) -> Any:
        nonlocal dropped
        if isinstance(node, dict):
            if node.get("type") == "string" and node.get("default") == "":
                node = {key: value for key, value in node.items() if key != "default"}
                dropped += 1
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    adapted: dict[str, Any] = walk(crd())
    return adapted, dropped


def version_schema(version: str = "v1beta2") -> dict[str, Any]:
    """The openAPIV3Schema of ``version`` as the CRD declares it."""
    (found,) = [v for v in _crd()["spec"]["versions"] if v["name"] == version]
    return copy.deepcopy(found["schema"]["openAPIV3Schema"])


def _closed(node: Any) -> Any:
    if isinstance(node, dict):
        node = {key: _closed(value) for key, value in node.items()}
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [_closed(item) for item in node]
    return node


def strict_validator() -> jsonschema.Draft7Validator:
    """jsonschema over the CRD's schema with unknown fields rejected; metadata is the API server's to check."""
    schema = _closed(version_schema())
    schema["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft7Validator(schema)


def problems(doc: dict[str, Any]) -> list[str]:
    return [
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in strict_validator().iter_errors(doc)
    ]
