#!/usr/bin/env bash
# Install the validator of the chart's monitoring.coreos.com objects (PrometheusRule, ServiceMonitor, PodMonitor).
#
# Why npm: this project may only reach package registries, and no registry ships the Prometheus Operator's CRDs as
# files; @kubernetes-models/prometheus-operator (MIT) ships their schemas compiled into validators. The package and
# every dependency are pinned by monitoring-schemas/package-lock.json (versions and sha512 integrity; `npm ci` refuses
# other bytes). No file of the Prometheus Operator's repository is kept in this one.
#
# Idempotent: installed outside the work tree, keyed by the lock file's sha256,
#   ${BIDFLOW_K8S_CACHE:-$HOME/.cache/bidflow/k8s}/monitoring-schemas-<sha256 prefix>/
# and nothing is downloaded when it is there.
#
# Usage: fetch-monitoring-schemas.sh   install if needed; the last line on stdout is the directory holding
#                                      validate.mjs (run it there with node: JSON objects in, problems out)
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)/monitoring-schemas"
CACHE_ROOT="${BIDFLOW_K8S_CACHE:-$HOME/.cache/bidflow/k8s}"

log() { printf '[fetch-monitoring-schemas %3ss] %s\n' "$SECONDS" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for tool in node npm sha256sum flock; do
    command -v "$tool" >/dev/null || die "'$tool' not found"
done
KEY="$(cat "$HERE/package.json" "$HERE/package-lock.json" "$HERE/validate.mjs" | sha256sum | cut -c1-16)"
DEST="$CACHE_ROOT/monitoring-schemas-$KEY"

if [[ -f "$DEST/.installed" ]]; then
    log "cached: $DEST"
    echo "$DEST"
    exit 0
fi
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.fetch-monitoring-schemas.lock"
flock 9
if [[ -f "$DEST/.installed" ]]; then
    echo "$DEST"
    exit 0
fi

WORK="$(mktemp -d "$CACHE_ROOT/work.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
cp "$HERE/package.json" "$HERE/package-lock.json" "$HERE/validate.mjs" "$WORK/"
log "npm ci (@kubernetes-models/prometheus-operator, pinned by package-lock.json)"
# A private npm cache: nothing lands in ~/.npm. The packages ask for node >= 22 but run on Debian's 20 (tested).
(cd "$WORK" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error --cache "$WORK/.npm-cache" >&2)
rm -rf "$WORK/.npm-cache"
echo '[]' | (cd "$WORK" && node validate.mjs) | grep -qx '\[\]' || die "the validator does not run"
touch "$WORK/.installed"
rm -rf "$DEST"
mv "$WORK" "$DEST"
trap - EXIT
log "done: $DEST"
echo "$DEST"
