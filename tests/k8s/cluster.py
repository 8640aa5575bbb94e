"""A real etcd + kube-apiserver on 127.0.0.1 for tests, and the helm/kubectl binaries, from the project's scripts.

The binaries come from ``scripts/k8s/build-apiserver.sh`` (kube-apiserver 1.20.2 built from Debian's source package,
etcd from Debian; cached outside the work tree) and ``scripts/k8s/fetch-helm.sh`` (helm 3.18.0 + kubectl 1.33.0,
pinned by sha256). A missing binary after the script ran is a failure, never a skip: CI must not go green by not
testing.

Everything a run writes (etcd data, certificates, kubeconfig, helm and kubectl caches) lies under one pytest tmp
directory; the processes are stopped at the end of the session, and die with the test process if it is killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts" / "k8s"
READY_TIMEOUT_S = 60.0


def run_script(name: str, *args: str) -> tuple[Path, str]:
    """Run one of scripts/k8s/*.sh; return the bin directory it prints last, and its log. Fail loudly with the log."""
    script = SCRIPTS / name
    started = time.monotonic()
    done = subprocess.run(["bash", str(script), *args], capture_output=True, text=True, check=False)
    log = f"{done.stderr[-6000:]}{done.stdout[-2000:]}"
    if done.returncode != 0:
        pytest.fail(
            f"{script.relative_to(REPO)} failed (exit {done.returncode}) "
            f"after {time.monotonic() - started:.0f}s:\n{log}",
            pytrace=False,
        )
    lines = done.stdout.strip().splitlines()
    if not lines:
        pytest.fail(f"{script.relative_to(REPO)} printed no bin directory:\n{log}", pytrace=False)
    return Path(lines[-1]), log


def require_binaries(directory: Path, *names: str, producer: str, log: str = "") -> dict[str, Path]:
    """The named executables in ``directory``; a missing one fails the test (in CI and locally), never skips."""
    found = {name: directory / name for name in names}
    missing = [str(path) for path in found.values() if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail(
            f"scripts/k8s/{producer} finished but these binaries are missing: {', '.join(missing)} "
            f"(CI={os.environ.get('CI', '')!r}: this is never a skip). Its output:\n{log}",
            pytrace=False,
        )
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the test process dies, so a killed pytest leaves no servers behind."""
    with contextlib.suppress(OSError, AttributeError):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass
class Tools:
    """helm and kubectl, run with HOME and caches inside the session's tmp directory."""

    helm: Path
    kubectl: Path
    home: Path
    kubeconfig: Path | None = None

    @property
    def env(self) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "HELM_CACHE_HOME": str(self.home / "helm-cache"),
            "HELM_CONFIG_HOME": str(self.home / "helm-config"),
            "HELM_DATA_HOME": str(self.home / "helm-data"),
            "KUBECACHEDIR": str(self.home / "kube-cache"),
        }
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def run(
        self, tool: str, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        binary = {"helm": self.helm, "kubectl": self.kubectl}[tool]
        done = subprocess.run(
            [str(binary), *args], input=input, capture_output=True, text=True, env=self.env, timeout=timeout
        )
        if check and done.returncode != 0:
            pytest.fail(
                f"{tool} {' '.join(args)} failed ({done.returncode}):\n{done.stderr}{done.stdout}", pytrace=False
            )
        return done

    def with_kubeconfig(self, kubeconfig: Path) -> Tools:
        return Tools(self.helm, self.kubectl, self.home, kubeconfig)


@dataclass
class ApiServer:
    """A running kube-apiserver: what a test needs to talk to it."""

    url: str
    token: str
    kubeconfig: Path
    ca_file: Path
    client: Any  # kubernetes.client.ApiClient
    ready_after_s: float
    logs: dict[str, Path] = field(default_factory=dict)


@contextlib.contextmanager
def running_apiserver(bin_dir: Path, workdir: Path, build_log: str = "") -> Iterator[ApiServer]:
    """Start etcd and kube-apiserver on free loopback ports; yield once /readyz says ok; stop both."""
    binaries = require_binaries(bin_dir, "kube-apiserver", "etcd", producer="build-apiserver.sh", log=build_log)
    workdir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(24)
    (workdir / "tokens.csv").write_text(f'{token},admin,admin,"system:masters"\n', encoding="utf-8")
    sa_key = workdir / "sa.key"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(sa_key)],
        check=True,
        capture_output=True,
    )
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    processes: list[subprocess.Popen[bytes]] = []
    logs = {name: workdir / f"{name}.log" for name in ("etcd", "kube-apiserver")}

    def start(name: str, command: Sequence[str]) -> subprocess.Popen[bytes]:
        with logs[name].open("wb") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                preexec_fn=_die_with_parent,  # the session is single-threaded when the servers start
            )
        processes.append(process)
        return process

    try:
        start(
            "etcd",
            [
                str(binaries["etcd"]),
                "--name=test",
                f"--data-dir={workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=test={peer_url}",
                "--log-level=warn",
            ],
        )
        started = time.monotonic()
        apiserver = start(
            "kube-apiserver",
            [
                str(binaries["kube-apiserver"]),
                "--bind-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={workdir / 'certs'}",
                f"--etcd-servers={etcd_url}",
                "--authorization-mode=RBAC",
                f"--token-auth-file={workdir / 'tokens.csv'}",
                f"--service-account-key-file={sa_key}",
                f"--service-account-signing-key-file={sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--service-cluster-ip-range=10.96.0.0/16",
                # No controllers or nodes exist: nothing would maintain the endpoints of the `kubernetes` service.
                "--endpoint-reconciler-type=none",
                "--enable-priority-and-fairness=false",
                "--v=1",
            ],
        )
        url = f"https://127.0.0.1:{api_port}"
        ca_file = workdir / "certs" / "apiserver.crt"
        _wait_ready(url, token, ca_file, apiserver, processes, logs)
        ready_after = time.monotonic() - started
        kubeconfig = _write_kubeconfig(workdir / "kubeconfig", url, ca_file, token)

        from kubernetes import config

        client = config.new_client_from_config(config_file=str(kubeconfig))
        try:
            yield ApiServer(url, token, kubeconfig, ca_file, client, ready_after, logs)
        finally:
            client.close()
    finally:
        for process in reversed(processes):
            _stop(process)


def _wait_ready(
    url: str,
    token: str,
    ca_file: Path,
    apiserver: subprocess.Popen[bytes],
    processes: list[subprocess.Popen[bytes]],
    logs: dict[str, Path],
) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = "not started"
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                name = "etcd" if process is processes[0] else "kube-apiserver"
                pytest.fail(f"{name} exited with {process.returncode}:\n{_tail(logs[name])}", pytrace=False)
        if ca_file.is_file():
            try:
                context = ssl.create_default_context(cafile=str(ca_file))
                request = urllib.request.Request(f"{url}/readyz", headers={"Authorization": f"Bearer {token}"})
                with urllib.request.urlopen(request, context=context, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError, ssl.SSLError) as exc:
                last = str(exc)
        time.sleep(0.2)
    pytest.fail(
        f"kube-apiserver not ready after {READY_TIMEOUT_S:.0f}s ({last}):\n{_tail(logs['kube-apiserver'])}",
        pytrace=False,
    )


def _write_kubeconfig(path: Path, url: str, ca_file: Path, token: str) -> Path:
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": url, "certificate-authority": str(ca_file)}}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
        "current-context": "test",
    }
    path.write_text(yaml.safe_dump(kubeconfig), encoding="utf-8")
    path.chmod(0o600)
    return path


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _tail(path: Path, lines: int = 40) -> str:
    if not path.is_file():
        return "(no log)"
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
