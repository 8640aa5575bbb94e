"""Fixtures for the Kubernetes tests: helm/kubectl, the generated CRD, and a real kube-apiserver on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bidflow.deploy.crd import inference_service_crd
from tests.k8s.cluster import ApiServer, Tools, require_binaries, run_script, running_apiserver


@pytest.fixture(scope="session")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Tools:
    """helm 3.18.0 and kubectl 1.33.0 (fetched once per machine by scripts/k8s/fetch-helm.sh)."""
    bin_dir, log = run_script("fetch-helm.sh")
    found = require_binaries(bin_dir, "helm", "kubectl", producer="fetch-helm.sh", log=log)
    return Tools(found["helm"], found["kubectl"], tmp_path_factory.mktemp("tool-home"))


@pytest.fixture(scope="session")
def crd_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The InferenceService CRD generated from the installed kserve SDK, as JSON (kubectl reads it as YAML)."""
    path = tmp_path_factory.mktemp("crd") / "inferenceservices.serving.kserve.io.json"
    path.write_text(json.dumps(inference_service_crd()), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """etcd + kube-apiserver 1.20.2 on free loopback ports with a static admin token, for the whole session.

    The first run on a machine builds kube-apiserver (minutes; cached afterwards). A failed build fails the
    tests, with the script's output.
    """
    bin_dir, log = run_script("build-apiserver.sh")
    with running_apiserver(bin_dir, tmp_path_factory.mktemp("apiserver"), log) as server:
        yield server


@pytest.fixture(scope="session")
def kube(tools: Tools, apiserver: ApiServer) -> Tools:
    """helm and kubectl pointed at the test apiserver."""
    return tools.with_kubeconfig(apiserver.kubeconfig)
