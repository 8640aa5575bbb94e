"""tests/k8s/pods.py on its own: it follows Kubernetes' rules, and refuses what a kubelet would refuse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.k8s.cluster import REPO
from tests.k8s.pods import IMAGES, PodRoot, image_config, workload


def deployment(container: dict[str, Any], volumes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec = {"automountServiceAccountToken": False, "containers": [container], "volumes": volumes or []}
    return {"kind": "Deployment", "metadata": {"name": "x"}, "spec": {"template": {"spec": spec}}}


OBJECTS = {("Secret", "s"): {"password": "p4ss", "url": "redis://h:1"}, ("ConfigMap", "c"): {"a.yaml": "x: 1"}}


def objects(kind: str, name: str) -> dict[str, str]:
    return OBJECTS[(kind, name)]


def test_the_serving_image_is_read_from_its_dockerfile() -> None:
    config = image_config(IMAGES["bidflow/serving"])
    assert config.entrypoint[:3] == ["python", "-m", "bidflow.serving"]
    assert config.workdir == "/app"
    assert config.copies["/app/feature_repo"] == REPO / "feature_repo"
    assert config.env["PATH"].startswith("/opt/venv/bin:/usr/local/sbin")


def test_paths_are_remapped_but_urls_and_secrets_are_not(tmp_path: Path) -> None:
    pod = PodRoot(tmp_path, {"/mnt/models": tmp_path / "models"})
    assert pod.rewrite("--model=/mnt/models") == f"--model={tmp_path / 'models'}"
    assert pod.rewrite("/mnt/models/x:/other") == f"{tmp_path / 'models' / 'x'}:{tmp_path / 'rootfs' / 'other'}"
    for untouched in ("http://svc.ns.svc.cluster.local:8090/?token=abc", "pvc://claim/path", "127.0.0.1:6379,db=1"):
        assert pod.rewrite(untouched) == untouched


def test_command_args_env_and_volumes_follow_kubernetes(tmp_path: Path) -> None:
    container = {
        "image": "registry.example/bidflow/serving:1.0",
        "args": ["--http-port=$(PORT)", "--model=/mnt/data/m"],
        "env": [
            {"name": "PORT", "value": "9000"},
            {"name": "REDIS", "valueFrom": {"secretKeyRef": {"name": "s", "key": "url"}}},
            {"name": "HOME", "value": "/tmp"},
        ],
        "envFrom": [{"secretRef": {"name": "s"}, "prefix": "S_"}],
        "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}, {"name": "tmp", "mountPath": "/tmp"}],
    }
    volumes = [{"name": "cfg", "configMap": {"name": "c"}}, {"name": "tmp", "emptyDir": {}}]
    found = workload(deployment(container, volumes), tmp_path, objects=objects, namespace="ns", claims={})
    # No command: the image's ENTRYPOINT, then args instead of its CMD; 0.0.0.0 becomes loopback.
    assert found.argv[0] == str(REPO / ".venv" / "bin" / "python")
    assert found.argv[1:] == ["-m", "bidflow.serving", "--host", "127.0.0.1", "--http-port=9000",
                              f"--model={tmp_path / 'rootfs' / 'mnt' / 'data' / 'm'}"]  # fmt: skip
    assert found.env["REDIS"] == "redis://h:1" and found.env["S_password"] == "p4ss"
    assert found.env["HOME"] == str(tmp_path / "volumes" / "tmp")
    assert (tmp_path / "volumes" / "cfg" / "a.yaml").read_text() == "x: 1"
    assert found.cwd == tmp_path / "rootfs" / "app"
    assert (found.cwd / "feature_repo" / "feature_store.yaml").is_file(), "the image's copy of the feature repository"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "nope"}}}]}, "has no key nope"),
        ({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}}]}, "does not exist"),
        ({"image": "docker.io/library/nginx:1"}, "no local equivalent of image"),
        ({"command": ["no-such-binary"]}, "is not on the image's PATH"),
    ],
)
def test_what_a_kubelet_would_refuse_fails(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    container = {"image": "bidflow/serving:1.0"} | change
    with pytest.raises(AssertionError, match=message):
        workload(deployment(container), tmp_path, objects=objects, namespace="ns", claims={})
