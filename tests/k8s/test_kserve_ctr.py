"""The CTR kind's InferenceService canary and rollback against the real kube-apiserver, like the bid filter's.

The backend is built from a configuration whose ``canary.kind`` is ``ctr`` (what a user's bidflow.yaml says), so the
predictor it writes serves that kind, under the kind's registered model name.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from bidflow.config import Config
from bidflow.deploy.backend import ModelVersion
from bidflow.deploy.crd import GROUP, PLURAL, VERSION
from bidflow.deploy.kserve import KServeBackend
from bidflow.deploy.validation import validate_inference_service
from bidflow.kinds import registered_name
from tests.k8s.cluster import ApiServer
from tests.k8s.test_kserve_backend import crd_served, namespace

__all__ = ["crd_served", "namespace"]  # the fixtures, shared with the bid filter's tests

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

NAME = "ctr"
IMAGE = "bidflow/serving:0.1.0"


def test_a_ctr_canary_is_deployed_and_rolled_back(apiserver: ApiServer, namespace: str) -> None:
    config = Config.model_validate({"canary": {"kind": "ctr", "namespace": namespace, "inference_service": NAME}})
    model = registered_name(config, "ctr")
    backend = KServeBackend(
        apiserver.client, namespace=namespace, name=NAME, image=IMAGE, endpoint=model, kind=config.canary.kind
    )
    v1, v2 = (ModelVersion(model, str(n), f"s3://bidflow-models/{model}/{n}") for n in (1, 2))

    backend.deploy(v1, 20)
    state = backend.deploy(v2, 20)
    assert (state.champion, state.canary, state.canary_percent) == (v1, v2, 20)
    obj = _stored(apiserver, namespace)
    args = obj["spec"]["predictor"]["containers"][0]["args"]
    assert args[args.index("--kind") + 1] == "ctr" and args[args.index("--name") + 1] == model
    assert validate_inference_service(obj) == []

    state = backend.rollback()
    assert (state.champion, state.canary, state.canary_percent) == (v1, None, 0)
    assert state.detail["rolled_back"] == ["2"]
    assert _stored(apiserver, namespace)["spec"]["predictor"]["canaryTrafficPercent"] == 0


def _stored(apiserver: ApiServer, namespace: str) -> dict[str, Any]:
    found: dict[str, Any] = client.CustomObjectsApi(apiserver.client).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, NAME
    )
    return found
