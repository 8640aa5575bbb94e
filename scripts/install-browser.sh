#!/usr/bin/env bash
# Debian's Chromium for the report check (tests/e2e/test_demo.py opens the demo's report headless).
# Installs only when missing; needs root (CI runs as root) or passwordless sudo.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
run() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi; }
echo "installing Debian's chromium (headless report check)"
export DEBIAN_FRONTEND=noninteractive
run apt-get update -q >/dev/null
run apt-get install -y -q --no-install-recommends chromium >/dev/null
chromium --version
