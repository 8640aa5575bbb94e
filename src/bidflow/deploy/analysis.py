"""Canary analysis: continue, promote or roll back, decided from champion vs canary metrics.

A pure function over one window of metrics, so every rule is a unit test and the monitor, the CLI
and CI decide the same way. Rules, in order of severity:

* **Roll back** when the canary's traffic drifted (the drift monitor), its error rate breaks the SLO,
  its p99 latency is worse than the champion's measured over the same window (above
  ``max_p99_ratio`` times it and by more than ``min_p99_gap_ms``), its score distribution moved away
  from the champion's (PSI), or its online bid recall on the exploration share fell below the
  champion's by more than allowed. Every failing rule is a reason.
* **Alert, never roll back**, when the canary's p99 is above the absolute ``max_p99_ms``: a busy
  machine (a replay client, a noisy neighbour, cold caches) slows the champion as much as the
  canary, and only the comparison over the same window can tell a slow canary from a slow machine.
  The verdict carries such findings in ``alerts``.
* **Continue** while the canary has not seen ``min_requests`` requests (or, with labels,
  ``min_explored_bids`` explored bids): too little evidence to promote.
* **Promote** otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from bidflow.config import CanaryConfig

Outcome = Literal["continue", "promote", "rollback"]


@dataclass(frozen=True)
class RoleMetrics:
    """What one side served in the window.

    Attributes:
        requests: requests answered (any status).
        errors: requests that failed (5xx, connection errors).
        p99_ms: 99th percentile latency in milliseconds (None without requests).
        explored_bids: bids seen on explored auctions (the labels online recall is computed from).
        recall: share of those bids the model would have kept (None without labels).
    """

    requests: int = 0
    errors: int = 0
    p99_ms: float | None = None
    explored_bids: int = 0
    recall: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class WindowMetrics:
    """Champion and canary over the same window, plus what the drift monitor found.

    Attributes:
        champion: the champion's figures.
        canary: the canary's figures.
        score_psi: population stability index of canary vs champion scores (None if unknown).
        drifted_features: features whose drift test failed on the canary's traffic.
    """

    champion: RoleMetrics
    canary: RoleMetrics
    score_psi: float | None = None
    drifted_features: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        def side(m: RoleMetrics) -> dict[str, Any]:
            return {
                "requests": m.requests,
                "errors": m.errors,
                "error_rate": round(m.error_rate, 6),
                "p99_ms": m.p99_ms,
                "explored_bids": m.explored_bids,
                "recall": m.recall,
            }

        return {
            "champion": side(self.champion),
            "canary": side(self.canary),
            "score_psi": self.score_psi,
            "drifted_features": list(self.drifted_features),
        }


@dataclass(frozen=True)
class Verdict:
    """The outcome and every reason behind it."""

    outcome: Outcome
    reasons: tuple[str, ...] = field(default_factory=tuple)
    alerts: tuple[str, ...] = field(default_factory=tuple)  # worth a page, not a rollback

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "reasons": list(self.reasons), "alerts": list(self.alerts)}


def analyse(window: WindowMetrics, cfg: CanaryConfig, *, labelled: bool = True) -> Verdict:
    """The verdict on the canary for ``window`` under the limits in ``cfg``.

    Args:
        window: champion and canary over the same window.
        cfg: the limits.
        labelled: the kind's traffic yields online labels (the bid filter's explored auctions);
            False for kinds without them, which are then promoted on requests alone.
    """
    failures, alerts = _failures(window, cfg), tuple(_alerts(window, cfg))
    if failures:
        return Verdict("rollback", tuple(failures), alerts)
    canary = window.canary
    waiting = []
    if canary.requests < cfg.min_requests:
        waiting.append(f"canary served {canary.requests} requests, {cfg.min_requests} needed to judge")
    if labelled and (canary.recall is None or canary.explored_bids < cfg.min_explored_bids):
        waiting.append(
            f"canary saw {canary.explored_bids} bids on explored auctions, {cfg.min_explored_bids} needed "
            "to judge online recall"
        )
    if waiting:
        return Verdict("continue", tuple(waiting), alerts)
    return Verdict("promote", (f"canary within every limit over {canary.requests} requests",), alerts)


def _failures(window: WindowMetrics, cfg: CanaryConfig) -> list[str]:
    champion, canary = window.champion, window.canary
    found = []
    if window.drifted_features:
        found.append(f"drift in the canary's traffic: {', '.join(window.drifted_features)}")
    if canary.requests and canary.error_rate > cfg.max_error_rate:
        found.append(f"canary error rate {canary.error_rate:.2%} above {cfg.max_error_rate:.2%}")
    if (
        canary.p99_ms is not None
        and champion.p99_ms
        and canary.p99_ms > cfg.max_p99_ratio * champion.p99_ms
        and canary.p99_ms - champion.p99_ms > cfg.min_p99_gap_ms
    ):
        found.append(
            f"canary p99 latency {canary.p99_ms:.1f} ms above {cfg.max_p99_ratio:g}x the champion's "
            f"{champion.p99_ms:.1f} ms"
        )
    if window.score_psi is not None and window.score_psi > cfg.max_score_psi:
        found.append(f"canary scores moved away from the champion's (PSI {window.score_psi:.3f} > {cfg.max_score_psi})")
    if (
        canary.recall is not None
        and champion.recall is not None
        and canary.explored_bids >= cfg.min_explored_bids
        and champion.explored_bids >= cfg.min_explored_bids
        and canary.recall < champion.recall - cfg.max_recall_drop
    ):
        found.append(
            f"canary online bid recall {canary.recall:.1%} below the champion's {champion.recall:.1%} "
            f"by more than {cfg.max_recall_drop:.1%}"
        )
    return found


def _alerts(window: WindowMetrics, cfg: CanaryConfig) -> list[str]:
    champion, canary = window.champion, window.canary
    if canary.p99_ms is not None and canary.p99_ms > cfg.max_p99_ms:
        return [
            f"canary p99 latency {canary.p99_ms:.1f} ms above {cfg.max_p99_ms:.1f} ms "
            f"(the champion's {_ms(champion.p99_ms)} over the same window)"
        ]
    return []


def _ms(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.1f} ms"
