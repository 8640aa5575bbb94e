"""The InferenceService CRD and JSON Schema generated from the kserve SDK, and the checks no schema carries.

Offline: no apiserver, no network. The apiserver side is in test_apiserver.py.
"""

from __future__ import annotations

import copy
import importlib
import json
import re
from collections.abc import Iterator
from importlib import resources
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from bidflow.deploy import crd
from bidflow.deploy.validation import validate_inference_service

EKS_VERSION = "1.31"


def valid_isvc() -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "bid-filter", "labels": {"app.kubernetes.io/part-of": "bidflow"}},
        "spec": {
            "predictor": {
                "canaryTrafficPercent": 10,
                "minReplicas": 1,
                "maxReplicas": 3,
                "serviceAccountName": "bidflow-bid-filter",
                "containers": [
                    {
                        "name": "kserve-container",
                        "image": "bidflow/serving:0.1.0",
                        "env": [{"name": "STORAGE_URI", "value": "s3://models/bid-filter"}],
                        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": 8080}},
                        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": 2}},
                        "securityContext": {"capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True},
                    }
                ],
            }
        },
    }


def jsonschema_errors(doc: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(crd.inference_service_json_schema())
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def with_value(path: str, value: Any) -> dict[str, Any]:
    """A valid InferenceService with one value replaced, by dotted path (list indexes as numbers)."""
    doc = valid_isvc()
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node: Any = doc
    for part in parents:
        node = node[part]
    node[last] = value
    return doc


# --- the SDK the generator walks ------------------------------------------------------------------------------


def test_the_kserve_sdk_classes_the_generator_starts_from_exist() -> None:
    """Names verified by introspection of the installed kserve 0.21 SDK, not from memory."""
    models = importlib.import_module("kserve.models")
    root = models.V1beta1InferenceService
    assert root.attribute_map["api_version"] == "apiVersion"
    assert root.openapi_types["spec"] == "V1beta1InferenceServiceSpec"
    assert models.V1beta1InferenceServiceSpec.openapi_types["predictor"] == "V1beta1PredictorSpec"
    assert models.V1beta1PredictorSpec.attribute_map["canary_traffic_percent"] == "canaryTrafficPercent"
    assert models.V1beta1PredictorSpec.openapi_types["canary_traffic_percent"] == "int"


def test_generation_is_deterministic_and_says_where_it_came_from() -> None:
    generated = crd.generate()
    assert crd.inference_service_crd() == generated.crd
    assert crd.inference_service_crd() is not crd.inference_service_crd()  # callers get their own copy
    assert generated.source.startswith("kserve 0.21")
    assert generated.crd["metadata"]["annotations"]["bidflow/generated-from"] == generated.source
    assert json.dumps(generated.crd, sort_keys=True) == json.dumps(crd.inference_service_crd(), sort_keys=True)


def test_only_status_types_and_core_types_newer_than_the_client_are_left_open() -> None:
    """A new SDK type the walk cannot resolve must be looked at, not silently accepted as anything."""
    assert set(crd.generate().opaque) == {
        # Knative types in the status, which the apiserver never validates for us anyway.
        "KnativeAddressable",
        "KnativeCondition",
        "KnativeDevServingPkgApisServingV1TrafficTarget",
        # Core types newer than the kubernetes 30.1 client (Kubernetes 1.30).
        "V1ContainerRestartRule",
        "V1PodSchedulingGroup",
    }


# --- the strict JSON Schema -------------------------------------------------------------------------------------


def test_the_json_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(crd.inference_service_json_schema())


def test_a_valid_inference_service_is_accepted() -> None:
    assert jsonschema_errors(valid_isvc()) == []
    assert validate_inference_service(valid_isvc()) == []


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("spec.predictor.canaryTrafficPercent", "ten", "spec.predictor.canaryTrafficPercent: expected an integer"),
        ("spec.predictor.canaryTrafficPercent", True, "spec.predictor.canaryTrafficPercent: expected an integer"),
        ("spec.predictor.minReplicas", 1.5, "spec.predictor.minReplicas: expected an integer"),
        ("spec.predictor.containers", {"name": "x"}, "spec.predictor.containers: expected a list"),
        ("spec.predictor.containers.0.ports.0.containerPort", "8080", "containerPort: expected an integer"),
        ("spec.predictor.containers.0.resources.requests.memory", "1 GB", "is not a Kubernetes quantity"),
        ("spec.predictor.containers.0.readinessProbe.httpGet.port", [8080], "expected an integer or a string"),
        ("spec.predictor.canaryTraficPercent", 10, "spec.predictor.canaryTraficPercent: unknown field"),
        ("kind", "Deployment", "kind: must be 'InferenceService'"),
    ],
)
def test_a_wrong_type_or_unknown_field_is_rejected_by_both_checkers(path: str, value: Any, message: str) -> None:
    doc = with_value(path, value)
    assert jsonschema_errors(doc), f"jsonschema accepted {path}={value!r}"
    problems = validate_inference_service(doc)
    assert any(message in problem for problem in problems), problems


def test_required_fields_are_enforced() -> None:
    doc = valid_isvc()
    del doc["spec"]["predictor"]["containers"][0]["name"]
    del doc["metadata"]["name"]
    assert len(jsonschema_errors(doc)) == 2
    assert sorted(validate_inference_service(doc)) == [
        "metadata.name: required field missing",
        "spec.predictor.containers[0].name: required field missing",
    ]


def test_int_or_string_fields_take_both() -> None:
    for port in (8080, "http"):
        doc = with_value("spec.predictor.containers.0.readinessProbe.httpGet.port", port)
        assert jsonschema_errors(doc) == []
        assert validate_inference_service(doc) == []


# --- what no schema says --------------------------------------------------------------------------------------


@pytest.mark.parametrize("percent", [-1, 101, 150])
def test_canary_traffic_outside_0_to_100_passes_the_schema_but_not_our_check(percent: int) -> None:
    doc = with_value("spec.predictor.canaryTrafficPercent", percent)
    assert jsonschema_errors(doc) == [], "the generated schema unexpectedly limits the range"
    assert validate_inference_service(doc) == [
        f"spec.predictor.canaryTrafficPercent: {percent} is outside 0-100 (the percentage of traffic routed to the "
        "canary; 0 sends none, 100 promotes it)"
    ]


@pytest.mark.parametrize("percent", [0, 1, 50, 100])
def test_canary_traffic_within_0_to_100_is_fine(percent: int) -> None:
    assert validate_inference_service(with_value("spec.predictor.canaryTrafficPercent", percent)) == []


def test_the_canary_list_of_kserve_0_21_is_range_checked_too() -> None:
    doc = valid_isvc()
    doc["spec"]["canary"] = [{"trafficPercent": 120, "predictor": copy.deepcopy(doc["spec"]["predictor"])}]
    assert jsonschema_errors(doc) == []
    assert [p.split(":")[0] for p in validate_inference_service(doc)] == ["spec.canary[0].trafficPercent"]


def test_min_replicas_above_max_replicas_is_rejected() -> None:
    doc = with_value("spec.predictor.minReplicas", 5)
    assert validate_inference_service(doc) == ["spec.predictor.maxReplicas: 3 is below minReplicas 5"]


# --- the core-type facts the Python client does not carry, against Kubernetes' own schemas ---------------------


def kubernetes_definitions() -> dict[str, Any]:
    path = resources.files("kubernetes_validate") / f"kubernetes-json-schema/v{EKS_VERSION}.0-local-strict"
    definitions: dict[str, Any] = json.loads((path / "_definitions.json").read_text())["$defs"]
    return definitions


def core_definitions() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(client class name, our definition, Kubernetes' definition) for each core class in the walk."""
    definitions = kubernetes_definitions()
    core = importlib.import_module("kubernetes.client.models")
    for name, ours in crd.inference_service_json_schema()["$defs"].items():
        if not hasattr(core, name):
            continue
        version, kind = re.fullmatch(r"(V\d+(?:alpha\d+|beta\d+)?)(\w+)", name).groups()  # type: ignore[union-attr]
        keys = [k for k in definitions if k.endswith(f".{version.lower()}.{kind}")]
        if len(keys) == 1:
            yield name, ours, definitions[keys[0]]


def test_quantity_and_int_or_string_tables_match_kubernetes() -> None:
    """Every Quantity / IntOrString field Kubernetes declares in the walked core types is in crd.py's tables."""
    expected_quantity, expected_int_or_string = set(), set()
    core = importlib.import_module("kubernetes.client.models")
    for name, _, theirs in core_definitions():
        reverse = {json_name: attr for attr, json_name in getattr(core, name).attribute_map.items()}
        for json_name, prop in theirs.get("properties", {}).items():
            text = json.dumps(prop)
            if json_name not in reverse:
                continue  # a field newer than the client; the client cannot produce it either
            if "resource.Quantity" in text:
                expected_quantity.add((name, reverse[json_name]))
            elif "intstr.IntOrString" in text:
                expected_int_or_string.add((name, reverse[json_name]))
    assert expected_quantity == crd.QUANTITY_FIELDS
    assert expected_int_or_string == crd.INT_OR_STRING_FIELDS


def test_required_fields_match_kubernetes() -> None:
    checked = 0
    for name, ours, theirs in core_definitions():
        assert set(ours.get("required", [])) == set(theirs.get("required", [])), name
        checked += 1
    assert checked > 100


# --- the CRD ----------------------------------------------------------------------------------------------------


def structural_problems(node: dict[str, Any], path: str) -> Iterator[str]:
    """The structural-schema rules of apiextensions.k8s.io/v1 that a generator can get wrong."""
    if "$ref" in node:
        yield f"{path}: $ref is not allowed in a CRD"
    if (
        not node.get("type")
        and not node.get("x-kubernetes-int-or-string")
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        yield f"{path}: no type"
    if "properties" in node and "additionalProperties" in node:
        yield f"{path}: properties and additionalProperties together"
    for key, child in node.get("properties", {}).items():
        yield from structural_problems(child, f"{path}.{key}")
    if isinstance(node.get("additionalProperties"), dict):
        yield from structural_problems(node["additionalProperties"], f"{path}.*")
    if "items" in node:
        yield from structural_problems(node["items"], f"{path}[]")


def test_the_crd_schema_is_structural() -> None:
    definition = crd.inference_service_crd()
    root = definition["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert list(structural_problems(root, "")) == []
    assert root["properties"]["metadata"] == {"type": "object"}
    predictor = root["properties"]["spec"]["properties"]["predictor"]["properties"]
    assert predictor["canaryTrafficPercent"] == {"type": "integer"}
    port = predictor["containers"]["items"]["properties"]["ports"]["items"]
    assert port["required"] == ["containerPort"]


def test_the_crd_itself_is_a_valid_kubernetes_object_at_the_eks_version() -> None:
    kubernetes_validate.validate(crd.inference_service_crd(), EKS_VERSION, strict=True)


def test_the_crd_fits_in_etcd() -> None:
    """etcd refuses requests over 1.5 MiB by default (--max-request-bytes); EKS does not let you raise it."""
    size = len(json.dumps(crd.inference_service_crd(), separators=(",", ":")))
    assert size < 1_000_000, f"{size} bytes"
