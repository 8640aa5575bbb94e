#!/usr/bin/env bash
# Judge a running KServe canary window by window, then promote it or roll it back: the analysis loop of
# .github/workflows/promote.yml, kept here so that tests can run it (tests/k8s/test_canary_promote.py) with a stand-in
# for the bidflow CLI.
#
# After each window of --window-seconds it runs `bidflow canary analyse --backend kserve --apply`, which prints its
# verdict with the reasons and carries it out. Its exit code is the verdict:
#   0  promote  (the canary now takes all traffic)           -> this script exits 0
#   3  rollback (the champion takes all traffic again)       -> exits 1: a rollback fails the job, visibly
#   4  continue (not enough evidence yet)                    -> wait another window; after --windows windows
#                                                               without a verdict: `bidflow canary rollback`, exit 1
#   anything else: the analysis itself failed. A canary nobody can judge must not keep its traffic: roll back
#   (`bidflow canary rollback --backend kserve`) and exit 1; if that fails too, say so loudly and exit 1.
#
# The analysis reads the drift monitor's /status. Outside the cluster (a CI runner) its Service is out of reach, so
# --port-forward NAMESPACE/SERVICE:PORT opens `kubectl port-forward` to it for each analysis (a fresh one each time:
# a forward held open for hours dies with the pod or the connection) and passes --monitor-url to the analysis. Not
# reaching the monitor after three tries counts as a failed analysis.
#
# Usage: canary-promote.sh --windows N --window-seconds S [--port-forward NAMESPACE/SERVICE:PORT]
# Environment: BIDFLOW              the CLI (default: .venv/bin/bidflow)
#              KUBECTL              kubectl (default: kubectl on PATH)
#              FORWARD_RETRY_SECONDS pause between port-forward tries (default 2)
#              GITHUB_OUTPUT        if set, gets decision=promote|rollback|error and windows=<windows used>
#              GITHUB_STEP_SUMMARY  if set, gets a Markdown record of every window's verdict
set -euo pipefail

BIDFLOW="${BIDFLOW:-.venv/bin/bidflow}"
KUBECTL="${KUBECTL:-kubectl}"
windows=""
window_seconds=""
forward=""

usage() { echo "usage: $0 --windows N --window-seconds S [--port-forward NAMESPACE/SERVICE:PORT]" >&2; exit 2; }
while (($#)); do
    case "$1" in
        --windows) windows="${2:-}"; shift 2 || usage ;;
        --window-seconds) window_seconds="${2:-}"; shift 2 || usage ;;
        --port-forward) forward="${2:-}"; shift 2 || usage ;;
        *) usage ;;
    esac
done
[[ "$windows" =~ ^[1-9][0-9]*$ ]] || { echo "--windows must be a positive integer, got '$windows'" >&2; usage; }
[[ "$window_seconds" =~ ^[0-9]+$ ]] || { echo "--window-seconds must be an integer, got '$window_seconds'" >&2; usage; }
if [[ -n "$forward" ]]; then
    [[ "$forward" =~ ^([a-z0-9-]+)/([a-z0-9-]+):([0-9]+)$ ]] \
        || { echo "--port-forward must be NAMESPACE/SERVICE:PORT, got '$forward'" >&2; usage; }
    forward_namespace="${BASH_REMATCH[1]}" forward_service="${BASH_REMATCH[2]}" forward_port="${BASH_REMATCH[3]}"
fi

output() { if [[ -n "${GITHUB_OUTPUT:-}" ]]; then echo "$1" >>"$GITHUB_OUTPUT"; fi; }
summary() { if [[ -n "${GITHUB_STEP_SUMMARY:-}" ]]; then printf '%s\n' "$@" >>"$GITHUB_STEP_SUMMARY"; fi; }

rollback() {  # reason
    echo "canary-promote: rolling back: $1"
    if "$BIDFLOW" canary rollback --backend kserve; then
        output "decision=rollback"
        summary "**Rolled back**: $1"
        echo "::error title=Canary rolled back::$1"
    else
        output "decision=error"
        summary "**Rollback FAILED** after: $1. The canary may still take traffic:" \
            "run \`bidflow canary rollback --backend kserve\`."
        echo "::error title=Canary rollback failed::$1; then 'bidflow canary rollback' failed too." \
            "The canary may still take traffic: roll it back by hand."
    fi
    exit 1
}

forward_pid=""
stop_forward() {
    if [[ -n "$forward_pid" ]]; then
        kill "$forward_pid" 2>/dev/null || true
        wait "$forward_pid" 2>/dev/null || true
        forward_pid=""
    fi
}
trap stop_forward EXIT

# Start `kubectl port-forward` to the monitor on a free local port and set monitor_url; fail after 3 tries.
# (Not in a $(...) subshell: this shell must keep the forward's pid to stop it.)
monitor_url=""
start_forward() {
    local try log local_port
    log="$(mktemp)"
    for try in 1 2 3; do
        "$KUBECTL" -n "$forward_namespace" port-forward "svc/$forward_service" ":$forward_port" >"$log" 2>&1 &
        forward_pid=$!
        for _ in $(seq 1 100); do  # up to 10 s for "Forwarding from 127.0.0.1:<port> -> <port>"
            local_port="$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9][0-9]*\) .*/\1/p' "$log" | head -n1)"
            if [[ -n "$local_port" ]]; then
                rm -f "$log"
                monitor_url="http://127.0.0.1:$local_port"
                return 0
            fi
            kill -0 "$forward_pid" 2>/dev/null || break
            sleep 0.1
        done
        echo "canary-promote: port-forward to svc/$forward_service (try $try/3) failed: $(tr '\n' ' ' <"$log")" >&2
        stop_forward
        sleep "${FORWARD_RETRY_SECONDS:-2}"
    done
    rm -f "$log"
    return 1
}

summary "### Canary analysis: up to $windows window(s) of ${window_seconds}s"
for ((window = 1; window <= windows; window++)); do
    echo "canary-promote: window $window/$windows: waiting ${window_seconds}s for traffic"
    sleep "$window_seconds"
    monitor=()
    if [[ -n "$forward" ]]; then
        start_forward || rollback "the drift monitor (svc/$forward_service in $forward_namespace) is out of reach"
        monitor=(--monitor-url "$monitor_url")
    fi
    set +e
    verdict="$("$BIDFLOW" canary analyse --backend kserve --apply "${monitor[@]}" 2>&1)"
    code=$?
    set -e
    stop_forward
    printf '%s\n' "$verdict"
    summary "" "Window $window/$windows: exit $code" '```' "$verdict" '```'
    output "windows=$window"
    case "$code" in
        0)
            output "decision=promote"
            summary "**Promoted** after window $window."
            echo "::notice title=Canary promoted::after window $window of $windows"
            exit 0
            ;;
        3)
            # analyse --apply has already rolled back; the job fails so that nobody misses it.
            output "decision=rollback"
            summary "**Rolled back** by the analysis in window $window."
            echo "::error title=Canary rolled back::the analysis of window $window said rollback (reasons above)"
            exit 1
            ;;
        4)
            echo "::notice title=Canary analysis::window $window/$windows: continue (not enough evidence yet)"
            ;;
        *)
            rollback "bidflow canary analyse failed with exit $code in window $window"
            ;;
    esac
done
rollback "no verdict after $windows window(s) of ${window_seconds}s"
