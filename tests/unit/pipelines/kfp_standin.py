"""A stand-in for the Kubeflow Pipelines v2beta1 REST API on 127.0.0.1: it records and checks requests.

It is NOT Kubeflow: it implements just the endpoints ``kfp.Client`` calls to upload a pipeline or a
pipeline version, find or create an experiment, and create a run or a recurring run, keeps what
they create in memory, and answers with the fields the client reads. Every request is recorded
(method, path, query, JSON body or uploaded file) so a test can check what the client sent; a
request the stand-in does not know is answered 404 and recorded too, so a test sees it.
"""

from __future__ import annotations

import email
import itertools
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

API = "/apis/v2beta1"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any = None  # parsed JSON
    upload: str | None = None  # text of an uploaded pipeline file


@dataclass
class KfpStandIn:
    """What the stand-in holds: requests in order, and the objects they created."""

    url: str = ""
    requests: list[Request] = field(default_factory=list)
    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    recurring_runs: list[dict[str, Any]] = field(default_factory=list)
    unknown: list[Request] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def calls(self) -> list[tuple[str, str]]:
        """(method, path) of every request, in order."""
        return [(r.method, r.path) for r in self.requests]

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    def handle(self, request: Request) -> tuple[int, dict[str, Any]]:
        self.requests.append(request)
        method, path = request.method, request.path
        if (method, path) == ("GET", f"{API}/healthz"):
            return 200, {"multi_user": False}
        if (method, path) == ("GET", f"{API}/pipelines"):
            wanted = _equals(request.query.get("filter"), "display_name")
            found = [p for p in self.pipelines.values() if wanted is None or p["display_name"] == wanted]
            return 200, {"pipelines": found, "total_size": len(found)}
        if (method, path) == ("POST", f"{API}/pipelines/upload"):
            pipeline = {"pipeline_id": self.new_id("pipeline"), "display_name": request.query["name"]}
            self.pipelines[pipeline["pipeline_id"]] = pipeline
            self.versions[pipeline["pipeline_id"]] = [
                self._version(pipeline["pipeline_id"], request.query["name"], request)
            ]
            return 200, pipeline
        if method == "GET" and path.startswith(f"{API}/pipelines/") and path.endswith("/versions"):
            pipeline_id = path.split("/")[4]
            wanted = _equals(request.query.get("filter"), "display_name")
            found = [v for v in self.versions.get(pipeline_id, []) if wanted is None or v["display_name"] == wanted]
            return 200, {"pipeline_versions": found, "total_size": len(found)}
        if (method, path) == ("POST", f"{API}/pipelines/upload_version"):
            pipeline_id = request.query["pipelineid"]
            version = self._version(pipeline_id, request.query["name"], request)
            self.versions[pipeline_id].append(version)
            return 200, version
        if (method, path) == ("GET", f"{API}/experiments"):
            wanted = _equals(request.query.get("filter"), "display_name")
            found = [e for e in self.experiments.values() if wanted is None or e["display_name"] == wanted]
            return 200, {"experiments": found, "total_size": len(found)}
        if (method, path) == ("POST", f"{API}/experiments"):
            experiment = {"experiment_id": self.new_id("experiment"), "display_name": request.body["display_name"]}
            self.experiments[experiment["experiment_id"]] = experiment
            return 200, experiment
        if (method, path) == ("POST", f"{API}/runs"):
            run = dict(request.body) | {"run_id": self.new_id("run"), "state": "PENDING"}
            self.runs.append(run)
            return 200, run
        if (method, path) == ("POST", f"{API}/recurringruns"):
            job = dict(request.body) | {"recurring_run_id": self.new_id("recurring"), "status": "ENABLED"}
            self.recurring_runs.append(job)
            return 200, job
        self.unknown.append(request)
        return 404, {"error": f"the stand-in does not implement {method} {path}", "code": 5}

    def _version(self, pipeline_id: str, name: str, request: Request) -> dict[str, Any]:
        if not request.upload:
            raise ValueError("an upload without a pipeline file")
        return {
            "pipeline_id": pipeline_id,
            "pipeline_version_id": self.new_id("version"),
            "display_name": name,
            "pipeline_spec_text": request.upload,  # kept for the test; not an API field
        }


def _equals(raw: str | None, key: str) -> str | None:
    """The value an EQUALS predicate on ``key`` asks for (operation given as 1 or "EQUALS")."""
    if not raw:
        return None
    for predicate in json.loads(raw).get("predicates", []):
        if predicate.get("key") == key and predicate.get("operation") in (1, "EQUALS"):
            return str(predicate.get("stringValue", predicate.get("string_value")))
    return None


def _parse(handler: BaseHTTPRequestHandler) -> Request:
    parts = urlsplit(handler.path)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    length = int(handler.headers.get("Content-Length") or 0)
    raw = handler.rfile.read(length) if length else b""
    content_type = handler.headers.get("Content-Type", "")
    body: Any = None
    upload = None
    if raw and content_type.startswith("multipart/form-data"):
        message = email.message_from_bytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
        for part in message.walk():
            if part.get_param("name", header="content-disposition") == "uploadfile":
                payload = part.get_payload(decode=True)
                upload = payload.decode() if isinstance(payload, bytes) else None
    elif raw:
        body = json.loads(raw)
    return Request(handler.command, parts.path, query, body, upload)


@contextmanager
def serve() -> Iterator[KfpStandIn]:
    """Run a stand-in on a free port of 127.0.0.1 for the duration of the block."""
    state = KfpStandIn()

    class Handler(BaseHTTPRequestHandler):
        def _respond(self) -> None:
            status, payload = state.handle(_parse(self))
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = do_PATCH = _respond

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
