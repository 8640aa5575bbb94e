#!/usr/bin/env bash
# Build a real kube-apiserver (Kubernetes 1.20.2) from Debian's `kubernetes` source package and take etcd from
# Debian's `etcd-server`, so tests can run the chart, the CRD and RBAC against a real API server on 127.0.0.1.
#
# Why Debian: no registry ships a prebuilt kube-apiserver, and this project may only reach package registries.
# The recipe (and the two fixes below) is recorded in ../shared/design/K8S-TESTING.md.
#
# Idempotent: the binaries are cached OUTSIDE the work tree, keyed by the Debian source version,
#   ${BIDFLOW_K8S_CACHE:-$HOME/.cache/bidflow/k8s}/<debian-source-version>/bin/{kube-apiserver,etcd}
# and the slow build (3-4 minutes on 2 cores) only runs when one of them is missing. Nothing under /etc changes:
# apt runs with a private config, list and cache directory.
#
# Usage: build-apiserver.sh             build if needed; the last line on stdout is the bin directory
#        build-apiserver.sh --print-dir print the bin directory and exit (no network, no build)
# Environment: BIDFLOW_K8S_CACHE           cache root (default $HOME/.cache/bidflow/k8s)
#              BIDFLOW_KUBE_DEB_VERSION    Debian source version of `kubernetes` to build (pinned below)
#              BIDFLOW_APT_SOURCES         deb822 .sources file to derive deb-src entries from
#              BIDFLOW_K8S_KEEP_WORK=1     keep the work directory (source tree, Go cache) for debugging
set -euo pipefail

# Pinned so the cache key is known without asking apt (the fast path works offline). When Debian replaces this
# security update the download fails with a message saying how to move the pin.
KUBE_DEB_VERSION="${BIDFLOW_KUBE_DEB_VERSION:-1.20.5+really1.20.2-1.1+deb12u1}"
GO_PKG="golang-1.19"                 # the newest Go that Debian 12 ships which still builds 1.20's vendored tree
CACHE_ROOT="${BIDFLOW_K8S_CACHE:-$HOME/.cache/bidflow/k8s}"
DEST="$CACHE_ROOT/$KUBE_DEB_VERSION"
BIN="$DEST/bin"

# "1.20.5+really1.20.2-1.1+deb12u1" -> "1.20.2": the upstream tree really is 1.20.2 (Debian reverted 1.20.5).
upstream="${KUBE_DEB_VERSION%%-*}"
upstream="${upstream##*really}"
GIT_VERSION="v$upstream"

log() { printf '[build-apiserver %4ss] %s\n' "$SECONDS" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

cached() {
    local version
    [[ -x "$BIN/kube-apiserver" && -x "$BIN/etcd" ]] || return 1
    version="$("$BIN/kube-apiserver" --version 2>/dev/null)" || return 1
    [[ "$version" == "Kubernetes $GIT_VERSION" ]] && "$BIN/etcd" --version >/dev/null 2>&1
}

case "${1:-}" in
    --print-dir) echo "$BIN"; exit 0 ;;
    "") ;;
    *) die "unknown argument '$1' (usage: $0 [--print-dir])" ;;
esac

if cached; then
    log "cached: $BIN (kube-apiserver $GIT_VERSION, etcd)"
    echo "$BIN"
    exit 0
fi

for tool in apt-get dpkg-source dpkg-deb flock; do
    command -v "$tool" >/dev/null || die "'$tool' not found: this script needs a Debian-based machine (apt, dpkg-dev)"
done

mkdir -p "$CACHE_ROOT"
# Two people (or two pytest sessions) may start the build at once: one builds, the other waits and reuses it.
exec 9>"$CACHE_ROOT/.build-$KUBE_DEB_VERSION.lock"
if ! flock -n 9; then
    log "another build of $KUBE_DEB_VERSION is running; waiting for it"
    flock 9
fi
if cached; then
    log "built by the other process: $BIN"
    echo "$BIN"
    exit 0
fi

log "building kube-apiserver $GIT_VERSION from Debian source $KUBE_DEB_VERSION into $DEST"
WORK="$(mktemp -d "$CACHE_ROOT/work.XXXXXX")"
cleanup() {
    if [[ "${BIDFLOW_K8S_KEEP_WORK:-0}" == 1 ]]; then
        log "kept work directory $WORK"
    else
        chmod -R u+w "$WORK" 2>/dev/null || true
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# --- apt with a private configuration: deb-src entries without touching /etc/apt ---------------------------------
APT="$WORK/apt"
mkdir -p "$APT/sources.list.d" "$APT/lists/partial" "$APT/cache/archives/partial"
sources="${BIDFLOW_APT_SOURCES:-/etc/apt/sources.list.d/debian.sources}"
if [[ -f "$sources" ]]; then
    # The machine's own entries (its mirror, its keyring), with source packages enabled.
    sed -E 's/^Types:.*$/Types: deb deb-src/' "$sources" >"$APT/sources.list.d/debian.sources"
else
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    [[ -f "$keyring" ]] || die "$sources not found and no $keyring: set BIDFLOW_APT_SOURCES to a Debian 12 .sources file"
    log "$sources not found: using deb.debian.org bookworm"
    cat >"$APT/sources.list.d/debian.sources" <<EOF
Types: deb deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: $keyring

Types: deb deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: $keyring
EOF
fi
apt_opts=(
    -o "Dir::Etc::SourceList=/dev/null"
    -o "Dir::Etc::SourceParts=$APT/sources.list.d"
    -o "Dir::State::Lists=$APT/lists"
    -o "Dir::Cache=$APT/cache"
    # Our lists and cache are private, so apt's global lock is not needed (and would block on other apt users).
    -o "Debug::NoLocking=1"
    # Files land in our own directories, which the unprivileged _apt user cannot always enter.
    -o "APT::Sandbox::User=root"
    -q
)
log "apt-get update (private lists under the work directory)"
apt-get "${apt_opts[@]}" update >"$WORK/apt-update.log" 2>&1 || { cat "$WORK/apt-update.log" >&2; die "apt-get update failed"; }

log "downloading source package kubernetes=$KUBE_DEB_VERSION"
mkdir -p "$WORK/dl"
if ! (cd "$WORK/dl" && apt-get "${apt_opts[@]}" source --download-only "kubernetes=$KUBE_DEB_VERSION" >&2); then
    available="$(apt-cache "${apt_opts[@]}" showsrc kubernetes 2>/dev/null | sed -n 's/^Version: //p' | paste -sd ' ' -)"
    die "kubernetes=$KUBE_DEB_VERSION is not downloadable; available: ${available:-none}. \
Set BIDFLOW_KUBE_DEB_VERSION to one of them (and update the pin in this script)."
fi

log "downloading $GO_PKG-go, $GO_PKG-src, etcd-server, golang-github-modern-go-reflect2-dev"
(cd "$WORK/dl" && apt-get "${apt_opts[@]}" download "$GO_PKG-go" "$GO_PKG-src" etcd-server \
    golang-github-modern-go-reflect2-dev >&2)

# --- unpack: the toolchain and etcd into a private root, the source tree into a GOPATH --------------------------
ROOT="$WORK/root"
mkdir -p "$ROOT"
versions="$WORK/VERSIONS"
{
    echo "kubernetes (Debian source) $KUBE_DEB_VERSION -> $GIT_VERSION"
    for deb in "$WORK"/dl/*.deb; do
        dpkg-deb -x "$deb" "$ROOT"
        echo "$(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)"
    done
} >"$versions"

export GOPATH="$WORK/gopath"
SRC="$GOPATH/src/k8s.io/kubernetes"
mkdir -p "$(dirname "$SRC")"
log "unpacking the source tree (with Debian's patches)"
dpkg-source -x "$WORK"/dl/kubernetes_*.dsc "$SRC" >"$WORK/dpkg-source.log" 2>&1 \
    || { cat "$WORK/dpkg-source.log" >&2; die "dpkg-source -x failed"; }

# Fix 2 of K8S-TESTING.md: the vendored reflect2 1.0.1 reads Go runtime internals that changed in Go 1.18, and the
# server dies with SIGSEGV on the first custom-resource write. Debian's 1.0.2 is API-compatible and fixed.
reflect2="$ROOT/usr/share/gocode/src/github.com/modern-go/reflect2"
[[ -f "$reflect2/reflect2.go" ]] || die "reflect2 sources not found in golang-github-modern-go-reflect2-dev"
rm -rf "$SRC/vendor/github.com/modern-go/reflect2"
cp -r "$reflect2" "$SRC/vendor/github.com/modern-go/reflect2"

export GOROOT="$ROOT/usr/lib/go-1.19"
export PATH="$GOROOT/bin:$PATH"
export GO111MODULE=off GOPROXY=off GOFLAGS='' CGO_ENABLED=0 GOCACHE="$WORK/gocache" GOTMPDIR="$WORK"
# The machine is shared: two parallel compiles at most, and a lower priority.
export GOMAXPROCS=2
go version >&2
cd "$SRC"

# Fix 1: pkg/generated/openapi/zz_generated.openapi.go is not in the tarball (upstream generates it in `make`).
# Reproduce Makefile.generated_files' KUBE_OPENAPI target: every Go package (staging/src named as vendor/) with a
# file carrying a +k8s: tag and `+k8s:openapi-gen=`, except code-generator and sample-apiserver.
log "building openapi-gen"
nice -n 10 go build -p 2 -o "$WORK/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
log "generating pkg/generated/openapi/zz_generated.openapi.go"
mapfile -t openapi_dirs < <(
    find -H . -not \( \( -path './_*' -o -path './.*' -o -path ./vendor \) -prune \) -type f -name '*.go' \
        | sed -e 's|^\./staging/src|vendor|' -e 's|^\./||' -e 's|/[^/]*$||' \
        | LC_ALL=C sort -u \
        | while read -r dir; do printf '%s\n' "$dir"/*.go; done \
        | xargs grep -l '^// *+k8s:' \
        | xargs grep -l '+k8s:openapi-gen=' \
        | sed 's|/[^/]*$||' \
        | LC_ALL=C sort -u \
        | grep -v -e '^vendor/k8s.io/code-generator/' -e '^vendor/k8s.io/sample-apiserver/'
)
((${#openapi_dirs[@]} > 50)) || die "found only ${#openapi_dirs[@]} packages with +k8s:openapi-gen tags"
inputs="$(printf 'k8s.io/kubernetes/%s,' "${openapi_dirs[@]}")"
# The report lists API-rule violations (upstream diffs it against a known list); we only need the Go file.
"$WORK/openapi-gen" \
    -i "${inputs%,}" \
    -p k8s.io/kubernetes/pkg/generated/openapi \
    -O zz_generated.openapi \
    -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt \
    -r "$WORK/openapi-violations.report" >"$WORK/openapi-gen.log" 2>&1 \
    || { tail -50 "$WORK/openapi-gen.log" >&2; die "openapi-gen failed"; }
[[ -s pkg/generated/openapi/zz_generated.openapi.go ]] || die "openapi-gen wrote no zz_generated.openapi.go"

# Without these the server (and `kubectl version`) reports an empty version, and clients that gate on it misbehave.
build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
ldflags="-s -w"
for pkg in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$GIT_VERSION -X $pkg.gitMajor=${upstream%%.*}"
    minor="${upstream#*.}"
    ldflags+=" -X $pkg.gitMinor=${minor%%.*} -X $pkg.gitTreeState=archive -X $pkg.buildDate=$build_date"
done
log "go build -p 2 ./cmd/kube-apiserver (the slow step: about 3 minutes on 2 cores)"
nice -n 10 go build -p 2 -trimpath -ldflags "$ldflags" -o "$WORK/out/kube-apiserver" ./cmd/kube-apiserver

built_version="$("$WORK/out/kube-apiserver" --version)"
[[ "$built_version" == "Kubernetes $GIT_VERSION" ]] \
    || die "the built kube-apiserver reports '$built_version', expected $GIT_VERSION"
"$ROOT/usr/bin/etcd" --version >/dev/null || die "Debian's etcd does not run on this machine"

# Install atomically: a reader never sees a half-copied binary.
mkdir -p "$BIN"
for pair in "$WORK/out/kube-apiserver:kube-apiserver" "$ROOT/usr/bin/etcd:etcd"; do
    cp "${pair%%:*}" "$BIN/.${pair##*:}.tmp"
    chmod 0755 "$BIN/.${pair##*:}.tmp"
    mv -f "$BIN/.${pair##*:}.tmp" "$BIN/${pair##*:}"
done
{ cat "$versions"; echo "built $build_date in ${SECONDS}s"; } >"$DEST/VERSIONS"
log "done in ${SECONDS}s: $BIN (versions in $DEST/VERSIONS)"
echo "$BIN"
