"""A rendered workload's container as a local process: what a kubelet would start, started on this machine.

No kubelet runs in the tests. This module stands in for the part of one that decides what a container sees, so that a
test can start the chart's workloads as processes and catch what exists in no pod: a variable nobody sets, a file no
volume provides, a Secret key that is not there. It follows the rendered spec and nothing else:

* argv: the container's ``command`` (else the image's ENTRYPOINT), then its ``args`` (else, without a ``command``,
  the image's CMD), as Kubernetes combines them.
* env: the image's ENV, then ``envFrom`` (Secrets, ConfigMaps), then ``env`` (``value`` with ``$(VAR)`` references,
  ``valueFrom`` secretKeyRef / configMapKeyRef / fieldRef ``metadata.namespace``), read from the objects the
  apiserver holds (a missing object or key fails, as the kubelet refuses to start such a container).
* volumes: ConfigMap and Secret volumes written out (``items``, else every key), an emptyDir as an empty folder, a
  PersistentVolumeClaim as the test's folder for that claim (``subPath`` below it). An InferenceService predictor
  with STORAGE_URI also gets /mnt/models, as KServe's storage initializer gives it; for ``pvc://claim/path`` KServe
  mounts the claim, so the folder is the claim's folder's ``path``.
* a pod that mounts its ServiceAccount token gets ``KUBECONFIG`` naming a kubeconfig with a token of that
  ServiceAccount (TokenRequest): the Kubernetes client's in-cluster loader reads fixed paths that a process cannot be
  given, so this is the one variable that is not in the spec.

Container paths become local ones by one mapping (``PodRoot.local``), longest prefix first:

* a volume's ``mountPath`` -> its folder (above);
* what the image's Dockerfile copies from the repository (``COPY <src> <dst>`` in its last stage) -> a copy of
  ``<repo>/<src>`` at ``<root>/rootfs/<dst>``, made per pod;
* the image's environment (``/opt/venv``) -> the local environment that the image's lock describes (``IMAGES``);
* the base image's system folders (``SYSTEM``: /usr, /bin, ...) -> this machine's;
* any other absolute path -> ``<root>/rootfs/<path>``, an empty image root (as good as absent).

Arguments and plain ``value`` variables are rewritten where a path starts them or follows ``=`` or ``:``; values read
from Secrets and ConfigMaps, and files written from them, are never rewritten. ``0.0.0.0`` in an argument becomes
``127.0.0.1``: a pod has its own network namespace, a process shares the machine's.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.k8s.cluster import REPO


@dataclass(frozen=True)
class Image:
    """What the tests know of an image: its Dockerfile (None: not built from this repository) and its environment."""

    dockerfile: Path | None
    venv: Path
    # For an image without a Dockerfile here: paths it holds from the repository, and its ENV.
    copies: Mapping[str, Path] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)


# python:3.11-slim's PATH, which the Dockerfiles extend.
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The chart's images, by repository name (without registry or tag): the local environment stands for /opt/venv.
IMAGES: dict[str, Image] = {
    "bidflow/serving": Image(REPO / "serving" / "Dockerfile", REPO / ".venv"),
    "bidflow-monitor": Image(REPO / "monitor" / "Dockerfile", REPO / ".venv-monitor"),
    # Built by users from the feature repository with Feast installed (the chart's command names /app/feature_repo).
    "bidflow/feature-server": Image(
        None, REPO / ".venv", {"/app/feature_repo": REPO / "feature_repo"}, {"PATH": "/opt/venv/bin:" + BASE_PATH}
    ),
}
# The base image's system folders: this machine's stand for them.
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib64")
MODEL_MOUNT = "/mnt/models"


@dataclass
class ImageConfig:
    """The last stage of a Dockerfile: what a container of it starts with."""

    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    copies: dict[str, Path] = field(default_factory=dict)  # container path -> repository path


def image_config(image: Image) -> ImageConfig:
    """Read the last stage of ``image``'s Dockerfile (ENTRYPOINT, CMD, ENV, WORKDIR, COPY from the build context)."""
    found = ImageConfig(copies=dict(image.copies), env={"PATH": BASE_PATH, **image.env})
    if image.dockerfile is None:
        return found
    text = re.sub(r"\\\n\s*", " ", image.dockerfile.read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    last_from = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    for line in lines[last_from + 1 :]:
        op, _, rest = line.partition(" ")
        op = op.upper()
        if op == "ENTRYPOINT":
            found.entrypoint = json.loads(rest)
        elif op == "CMD":
            found.cmd = json.loads(rest)
        elif op == "WORKDIR":
            found.workdir = rest.strip()
        elif op == "ENV":
            for pair in shlex.split(rest):
                name, _, value = pair.partition("=")
                found.env[name] = re.sub(r"\$\{?(\w+)\}?", lambda m: found.env.get(m.group(1), ""), value)
        elif op == "COPY" and not rest.startswith("--from"):
            *sources, target = rest.split()
            if len(sources) == 1:
                found.copies[target.rstrip("/")] = REPO / sources[0]
    return found


def image_of(reference: str) -> Image:
    """The ``IMAGES`` entry of an image reference (``registry/repository:tag`` or ``...@sha256:...``)."""
    repository = reference.split("@", 1)[0].rsplit(":", 1)[0]
    for name, image in IMAGES.items():
        if repository == name or repository.endswith("/" + name):
            return image
    raise AssertionError(f"no local equivalent of image {reference}: add it to tests/k8s/pods.py IMAGES")


def pod_spec(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    """The pod spec of a Deployment, or of an InferenceService's predictor."""
    if doc["kind"] == "Deployment":
        return doc["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    if doc["kind"] == "InferenceService":
        return doc["spec"]["predictor"]  # type: ignore[no-any-return]
    raise AssertionError(f"not a workload: {doc['kind']}")


@dataclass
class PodRoot:
    """Where one pod's container paths live on this machine (see the module docstring)."""

    root: Path
    mounts: dict[str, Path] = field(default_factory=dict)

    def local(self, path: str) -> Path:
        """The local path of container path ``path``."""
        for prefix in sorted(self.mounts, key=len, reverse=True):
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return self.mounts[prefix] / path[len(prefix) :].lstrip("/")
        return self.root / "rootfs" / path.lstrip("/")

    def rewrite(self, value: str) -> str:
        """``value`` with every absolute path that starts it or follows ``=`` or ``:`` made local (not ``//``)."""
        return re.sub(r"(?:^|(?<=[=:]))/(?!/)[^\s:=,]*", lambda m: str(self.local(m.group(0))), value)


@dataclass
class Workload:
    """One container of a rendered workload, ready to start as a local process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    ports: dict[str, int]  # container port names (and numbers as strings) -> port
    readiness: str | None  # the readinessProbe's URL on 127.0.0.1
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process with exactly ``env`` (a container inherits nothing of the test's environment)."""
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                self.argv, cwd=self.cwd, env=self.env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
            )

    def output(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


# Reads a Secret's or ConfigMap's data, decoded: (kind, name) -> {key: text}. Raises KeyError when there is none.
ObjectData = Callable[[str, str], Mapping[str, str]]


def workload(
    doc: Mapping[str, Any],
    root: Path,
    *,
    objects: ObjectData,
    namespace: str,
    claims: Mapping[str, Path],
    kubeconfig: Callable[[str], Path] | None = None,
) -> Workload:
    """The first container of ``doc`` (a Deployment or an InferenceService) as a local process in ``root``.

    Args:
        objects: the namespace's Secrets and ConfigMaps, as the kubelet reads them.
        claims: a folder per PersistentVolumeClaim name.
        kubeconfig: a kubeconfig file with a token of the named ServiceAccount, for a pod that mounts its token.
    """
    spec = pod_spec(doc)
    container = spec["containers"][0]
    name = f"{doc['kind']}/{doc['metadata']['name']}"
    image = image_of(container["image"])
    config = image_config(image)
    pod = PodRoot(root)
    for path, source in config.copies.items():
        # A copy per pod: what a process writes there never reaches the repository (a read-only root filesystem
        # cannot be enforced for a process of root's).
        copy = pod.local(path)
        copy.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, copy)
    pod.mounts["/opt/venv"] = image.venv
    pod.mounts.update({path: Path(path) for path in SYSTEM})
    volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        pod.mounts[mount["mountPath"]] = _volume(volumes[mount["name"]], mount, root, objects, claims)
    declared = {e["name"]: e for e in container.get("env", [])}
    storage = declared.get("STORAGE_URI", {}).get("value")
    if doc["kind"] == "InferenceService" and storage:
        pod.mounts[MODEL_MOUNT] = _storage(storage, claims)

    env = {key: pod.rewrite(value) for key, value in config.env.items()}
    for source in container.get("envFrom", []):
        kind, ref = ("Secret", source["secretRef"]) if "secretRef" in source else ("ConfigMap", source["configMapRef"])
        prefix = source.get("prefix", "")
        env.update({prefix + key: value for key, value in _data(objects, kind, ref["name"], name).items()})
    for entry in container.get("env", []):
        env[entry["name"]] = _env_value(entry, env, pod, objects, namespace, name)
    automount = spec.get("automountServiceAccountToken", True)
    if automount:
        assert kubeconfig is not None, f"{name} mounts its ServiceAccount token: the test must give a kubeconfig"
        env["KUBECONFIG"] = str(kubeconfig(spec.get("serviceAccountName", "default")))

    # Kubernetes: a command replaces the ENTRYPOINT and drops the CMD; args alone replace the CMD.
    command, args = container.get("command"), container.get("args")
    argv = [*command, *(args or [])] if command else [*config.entrypoint, *(config.cmd if args is None else args)]
    argv = [_expand(arg, env) for arg in argv]
    argv = [pod.rewrite(arg).replace("0.0.0.0", "127.0.0.1") for arg in argv]
    found = shutil.which(argv[0], path=env["PATH"])
    assert found, f"{name}: {argv[0]} is not on the image's PATH ({env['PATH']})"
    argv[0] = found
    cwd = pod.local(container.get("workingDir") or config.workdir)
    cwd.mkdir(parents=True, exist_ok=True)

    ports = {}
    for port in container.get("ports", []):
        ports[str(port["containerPort"])] = port["containerPort"]
        if "name" in port:
            ports[port["name"]] = port["containerPort"]
    probe = container.get("readinessProbe", {}).get("httpGet")
    readiness = f"http://127.0.0.1:{ports.get(str(probe['port']), probe['port'])}{probe['path']}" if probe else None
    log = root / "container.log"
    return Workload(name, argv, env, cwd, ports, readiness, log)


def _volume(
    volume: Mapping[str, Any], mount: Mapping[str, Any], root: Path, objects: ObjectData, claims: Mapping[str, Path]
) -> Path:
    """The local folder of one volume mount (written out for ConfigMaps and Secrets)."""
    folder = root / "volumes" / volume["name"]
    if "emptyDir" in volume:
        folder.mkdir(parents=True, exist_ok=True)
    elif "configMap" in volume or "secret" in volume:
        kind, source = ("ConfigMap", volume["configMap"]) if "configMap" in volume else ("Secret", volume["secret"])
        data = _data(objects, kind, source.get("name") or source.get("secretName"), volume["name"])
        items = source.get("items") or [{"key": key, "path": key} for key in data]
        folder.mkdir(parents=True, exist_ok=True)
        for item in items:
            assert item["key"] in data, f"volume {volume['name']}: {kind} has no key {item['key']}"
            target = folder / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(data[item["key"]], encoding="utf-8")
    elif "persistentVolumeClaim" in volume:
        claim = volume["persistentVolumeClaim"]["claimName"]
        assert claim in claims, f"volume {volume['name']}: the test gives no folder for claim {claim}"
        folder = claims[claim]
    else:
        raise AssertionError(f"volume {volume['name']}: a kind of volume tests/k8s/pods.py does not emulate")
    sub = mount.get("subPath")
    return folder / sub if sub else folder


def _storage(uri: str, claims: Mapping[str, Path]) -> Path:
    """/mnt/models for STORAGE_URI ``uri``: KServe mounts a pvc:// claim (any other scheme is downloaded)."""
    assert uri.startswith("pvc://"), f"STORAGE_URI {uri}: the tests give models on claims only (pvc://)"
    claim, _, path = uri.removeprefix("pvc://").partition("/")
    assert claim in claims, f"STORAGE_URI {uri}: the test gives no folder for claim {claim}"
    return claims[claim] / path


def _data(objects: ObjectData, kind: str, name: str, where: str) -> Mapping[str, str]:
    try:
        return objects(kind, name)
    except KeyError as exc:
        raise AssertionError(f"{where}: {kind} {name} does not exist (the kubelet would not start it)") from exc


def _env_value(
    entry: Mapping[str, Any], env: Mapping[str, str], pod: PodRoot, objects: ObjectData, namespace: str, where: str
) -> str:
    if "value" in entry:
        return pod.rewrite(_expand(str(entry["value"]), env))
    source = entry.get("valueFrom", {})
    for kind, key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
        if key in source:
            ref = source[key]
            data = _data(objects, kind, ref["name"], f"{where} env {entry['name']}")
            assert ref["key"] in data, f"{where} env {entry['name']}: {kind} {ref['name']} has no key {ref['key']}"
            return data[ref["key"]]
    if source.get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
        return namespace
    if not source:  # a name alone: the empty string
        return ""
    raise AssertionError(f"{where} env {entry['name']}: a valueFrom tests/k8s/pods.py does not emulate: {source}")


def _expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` references to variables defined before (``$$`` escapes)."""
    return re.sub(r"\$\$|\$\((\w+)\)", lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), value)


def decoded(data: Mapping[str, str] | None, string_data: Mapping[str, str] | None = None) -> dict[str, str]:
    """A Secret's ``data`` (base64) and ``stringData`` as text."""
    found = {key: base64.b64decode(value).decode() for key, value in (data or {}).items()}
    return found | dict(string_data or {})


__all__ = ["IMAGES", "PodRoot", "Workload", "decoded", "image_config", "pod_spec", "workload"]
