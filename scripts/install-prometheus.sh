#!/usr/bin/env bash
# Debian's Prometheus for the rule checks (promtool check/test rules) and the end-to-end alert test, which runs a real
# Prometheus on a loopback port (tests/integration/observability, tests/e2e/test_prometheus_alerts.py).
# Installs only when missing; needs root (CI runs as root) or passwordless sudo. The package's service is never used:
# the tests start their own server with their own configuration and data folder.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi
run() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi; }
echo "installing Debian's prometheus (promtool and a server for the alert tests)"
export DEBIAN_FRONTEND=noninteractive
run apt-get update -q >/dev/null
run apt-get install -y -q --no-install-recommends prometheus >/dev/null
prometheus --version 2>&1 | head -1
