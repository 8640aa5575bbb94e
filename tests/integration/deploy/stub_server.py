"""A stand-in model server for the deployment fault tests: answers readiness and predictions at once.

The fault tests are about processes, ports, the journal and the router, not about models: a real
``python -m bidflow.serving`` takes seconds to load one, this answers as soon as it listens. Every
answer names the process that gave it (``pid``) and the model it was started for.

    python -m tests.integration.deploy.stub_server --host 127.0.0.1 --port 8081 --name bid_filter --model URI
"""

from __future__ import annotations

import argparse
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--model", required=True)
    args = parser.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, body: dict[str, Any]) -> None:
            data = json.dumps(body | {"pid": os.getpid(), "model": args.model}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer({"name": args.name, "ready": True})

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self._answer({"predictions": [0.5]})

        def log_message(self, *_: Any) -> None:
            pass

    ThreadingHTTPServer.allow_reuse_address = True  # as uvicorn binds
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
