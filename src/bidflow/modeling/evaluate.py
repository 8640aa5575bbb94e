"""Evaluation on a held-out window and the champion/challenger gate.

Both models are scored on the *same* rows. Reported per model: AUC, log loss, expected calibration
error, and for a bid filter the economics twice over:

* ``realized``: the model's own filter policy (per-partner thresholds chosen on its validation
  window at training time, plus exploration) applied to the held-out rows -- what serving would
  have done on that traffic, out of sample;
* ``at_target``: thresholds re-chosen on the held-out rows for the target recall -- a pure ranking
  measure (calls saved at equal bid recall) that compares two models independently of where their
  thresholds were chosen; ``at_value_target`` the same at the target share of bid value kept. The
  gate compares models on the one of the configured ``objective``.

Where the rows carry the generator's oracle (``bidflow.data.oracle``: each call's true probability
of a bid and its expected bid value), the oracle is scored beside the models: ranked by its true
probability for the recall curve and by its expected value for the value curve, it is the best any
filter can do on these rows, and each model's calls saved at the target as a share of the oracle's
(``oracle_share_at_target``, ``oracle_share_at_value_target``) says how close to that limit it is.
The oracle never enters the gate: real traffic has none.

The gate passes when the candidate is not worse than the champion beyond the configured tolerances
and its realized bid recall is not short of the target by more than allowed. Without a champion the
comparisons are skipped with a note (the first model has nothing to be compared with); the
candidate's own recall check still applies.

Given the ``explain`` settings, each model's TreeSHAP contributions on (a sample of) the same rows
are reported beside its metrics (``bidflow.modeling.explain_window``); they never enter the gate.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from bidflow.data.oracle import ORACLE_BID_VALUE, ORACLE_P_BID
from bidflow.errors import ModelError
from bidflow.modeling.dataset import labels, window_bounds
from bidflow.modeling.economics import (
    Economics,
    FilterPolicy,
    FloatArray,
    choose_policy,
    economics_curve,
    estimate_from,
    policy_economics,
    reads_prices,
)
from bidflow.modeling.explain_window import ModelExplanation, explain_model
from bidflow.modeling.metrics import classification_metrics

if TYPE_CHECKING:
    from bidflow.config import EvaluateSettings, ExplainConfig, FilterObjective
    from bidflow.modeling.train import TrainedModel

BID_COLUMNS = ("auction_id", "partner", "price")
# Stands for "thresholds chosen at the target on the scored rows themselves" (the oracle's policy).
_AT_TARGET: Final = FilterPolicy({}, exploration_share=0.0, target_recall=0.0)


@dataclass(frozen=True)
class ModelEvaluation:
    """One model's results on the held-out rows."""

    role: str  # "candidate" | "champion"
    ref: str  # e.g. "bid_filter v3"
    metrics: dict[str, float]
    realized: Economics | None = None
    at_target: Economics | None = None
    curve: list[tuple[float, Economics]] = field(default_factory=list)
    at_value_target: Economics | None = None
    value_curve: list[tuple[float, Economics]] = field(default_factory=list)
    scores: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0), repr=False)
    explanation: ModelExplanation | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "metrics": self.metrics,
            "realized": self.realized.to_json() if self.realized else None,
            "at_target": self.at_target.to_json() if self.at_target else None,
            "curve": [{"target_recall": t, **e.to_json()} for t, e in self.curve],
            "at_value_target": self.at_value_target.to_json() if self.at_value_target else None,
            "value_curve": [{"target_value_kept": t, **e.to_json()} for t, e in self.value_curve],
        }

    def at(self, objective: FilterObjective) -> Economics | None:
        """Economics at the target share of the objective, thresholds chosen on these rows."""
        return self.at_value_target if objective == "value" else self.at_target


@dataclass(frozen=True)
class Check:
    """One gate condition: ``value`` against ``limit``."""

    name: str
    passed: bool
    value: float
    limit: float
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "value": self.value,
            "limit": self.limit,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class GateResult:
    """The gate's verdict, every check it made and notes (e.g. 'no champion')."""

    passed: bool
    checks: tuple[Check, ...]
    notes: tuple[str, ...] = ()

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": [c.to_json() for c in self.checks], "notes": list(self.notes)}


@dataclass(frozen=True)
class PartnerGap:
    """One partner's calls saved at the target bid recall by the candidate and by the oracle (no exploration)."""

    partner: str
    calls: int
    saved: int
    oracle_saved: int

    def to_json(self) -> dict[str, Any]:
        return {"partner": self.partner, "calls": self.calls, "saved": self.saved, "oracle_saved": self.oracle_saved}


def partner_gaps(
    partners: npt.NDArray[Any], y: npt.NDArray[np.float32], scores: FloatArray, oracle: FloatArray, target: float
) -> tuple[PartnerGap, ...]:
    """Where a model loses against the oracle: per partner, largest gap first (thresholds chosen on these rows)."""
    saved = {}
    for name, values in (("model", scores), ("oracle", oracle)):
        policy = choose_policy(partners, y, values, target_recall=target, exploration_share=0.0)
        saved[name] = pd.Series(~policy.model_mask(partners, values)).groupby(partners).sum()
    calls = pd.Series(partners).value_counts()
    gaps = [PartnerGap(str(p), int(calls[p]), int(saved["model"][p]), int(saved["oracle"][p])) for p in calls.index]
    return tuple(sorted(gaps, key=lambda g: (g.saved - g.oracle_saved, g.partner)))


@dataclass(frozen=True)
class EvaluationReport:
    """Candidate vs champion on one window, and the gate."""

    window: tuple[str, str]
    rows: int
    target_recall: float
    exploration_share: float
    candidate: ModelEvaluation
    champion: ModelEvaluation | None
    gate: GateResult
    y: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)
    oracle: ModelEvaluation | None = None
    objective: FilterObjective = "recall"
    oracle_gaps: tuple[PartnerGap, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "window": {"from": self.window[0], "until": self.window[1]},
            "rows": self.rows,
            "target_bid_recall": self.target_recall,
            "exploration_share": self.exploration_share,
            "candidate": self.candidate.to_json(),
            "champion": self.champion.to_json() if self.champion else None,
            "oracle": self.oracle.to_json() if self.oracle else None,
            "oracle_gaps": [gap.to_json() for gap in self.oracle_gaps],
            "objective": self.objective,
            "gate": self.gate.to_json(),
            "explanations": self._explanations(),
        }

    def _explanations(self) -> dict[str, Any] | None:
        """Mean |SHAP| per model, or None when the evaluation explained nothing."""
        if self.candidate.explanation is None:
            return None
        champion = self.champion.explanation if self.champion is not None else None
        return {
            "candidate": self.candidate.explanation.to_json(),
            "champion": champion.to_json() if champion is not None else None,
        }


def evaluate_scores(
    frame: pd.DataFrame,
    y: npt.NDArray[np.float32],
    scores: npt.NDArray[np.float64],
    policy: FilterPolicy | None,
    cfg: EvaluateSettings,
    *,
    role: str,
    ref: str,
    value_scores: npt.NDArray[np.float64] | None = None,
    estimate: npt.NDArray[np.float64] | None = None,
) -> ModelEvaluation:
    """Metrics (and, with a filter policy, economics) of ``scores`` on ``frame``'s rows.

    Args:
        frame: the held-out rows; a bid filter's need ``auction_id``, ``partner`` and ``price``.
        y: their labels.
        scores: the model's probabilities for them.
        policy: the model's filter policy (None: not a bid filter, no economics).
        cfg: the ``evaluate`` configuration section.
        role: "candidate", "champion" or "oracle".
        ref: how the report names the model.
        value_scores: what the value curve ranks calls by (default ``scores``).
        estimate: each row's CPM estimate, for a policy that ranks by expected bid value.
    """
    metrics = classification_metrics(y, scores, cfg.calibration_bins)
    if policy is None:
        return ModelEvaluation(role, ref, metrics, scores=scores)
    missing = [c for c in BID_COLUMNS if c not in frame.columns]
    if missing:
        raise ModelError("bid-filter evaluation needs the call columns", got=f"missing {missing}")
    ids = frame["auction_id"].astype(str).to_numpy()
    partners = frame["partner"].astype(str).to_numpy()
    price = frame["price"].to_numpy(np.float64, na_value=np.nan)
    if value_scores is None:
        value_scores = scores
    curve, at_target = _curve(ids, partners, y, scores, price, cfg, "recall")
    value_curve, at_value_target = _curve(ids, partners, y, value_scores, price, cfg, "value")
    if policy is _AT_TARGET:  # the oracle's own policy: thresholds at the target on these rows
        realized = at_value_target if cfg.objective == "value" else at_target
    else:
        realized = policy_economics(policy, ids, partners, y, scores, price, estimate)
    metrics |= {
        "calls_saved_share": realized.calls_saved_share,
        "bid_recall": realized.bid_recall,
        "value_kept_share": realized.value_kept_share,
        "calls_saved_share_at_target": at_target.calls_saved_share,
        "value_kept_share_at_target": at_target.value_kept_share,
        "calls_saved_share_at_value_target": at_value_target.calls_saved_share,
    }
    return ModelEvaluation(role, ref, metrics, realized, at_target, curve, at_value_target, value_curve, scores)


CURVE_TARGETS: Final = (0.5, 0.7, 0.8, 0.9, 0.95, 0.975, 0.99, 1.0)


def _curve(
    ids: npt.NDArray[Any],
    partners: npt.NDArray[Any],
    y: npt.NDArray[np.float32],
    scores: npt.NDArray[np.float64],
    price: npt.NDArray[np.float64],
    cfg: EvaluateSettings,
    objective: FilterObjective,
) -> tuple[list[tuple[float, Economics]], Economics]:
    targets = sorted({*CURVE_TARGETS, cfg.target_bid_recall})
    curve = economics_curve(
        ids, partners, y, scores, price, exploration_share=cfg.exploration_share, targets=targets, objective=objective
    )
    return curve, next(e for t, e in curve if t == cfg.target_bid_recall)


def evaluate_oracle(frame: pd.DataFrame, y: npt.NDArray[np.float32], cfg: EvaluateSettings) -> ModelEvaluation | None:
    """The generator's oracle scored like a model on ``frame`` (None: the rows carry no oracle)."""
    if ORACLE_P_BID not in frame.columns or frame[ORACLE_P_BID].isna().any():
        return None
    p_bid = frame[ORACLE_P_BID].to_numpy(np.float64)
    bid_value = frame[ORACLE_BID_VALUE].to_numpy(np.float64)
    # The oracle follows its true probability, so its own policy is the thresholds at target on these rows.
    ref = "oracle: the generator's true P(bid)"
    return evaluate_scores(frame, y, p_bid, _AT_TARGET, cfg, role="oracle", ref=ref, value_scores=bid_value)


def gate(candidate: ModelEvaluation, champion: ModelEvaluation | None, cfg: EvaluateSettings) -> GateResult:
    """The champion/challenger verdict (see the module docstring)."""
    checks: list[Check] = []
    notes: list[str] = []
    c = candidate.metrics
    if candidate.realized is not None:
        limit = cfg.target_bid_recall - cfg.max_recall_shortfall
        kept = "bid value kept" if cfg.objective == "value" else "bid recall"
        value = candidate.realized.value_kept_share if cfg.objective == "value" else candidate.realized.bid_recall
        checks.append(
            Check(
                "realized_value_kept" if cfg.objective == "value" else "realized_bid_recall",
                bool(value >= limit),
                value,
                limit,
                f"{kept} at the candidate's own thresholds (with exploration) >= target "
                f"{cfg.target_bid_recall:.3f} - {cfg.max_recall_shortfall:.3f}",
            )
        )
    if champion is None:
        notes.append("no champion yet: the comparison checks are skipped and the gate passes on them")
    else:
        h = champion.metrics
        checks.append(
            Check(
                "auc",
                bool(c["auc"] >= h["auc"] - cfg.max_auc_drop),
                c["auc"],
                h["auc"] - cfg.max_auc_drop,
                f"candidate AUC >= champion {h['auc']:.4f} - {cfg.max_auc_drop}",
            )
        )
        if cfg.max_pr_auc_drop is not None:
            checks.append(
                Check(
                    "pr_auc",
                    bool(c["pr_auc"] >= h["pr_auc"] - cfg.max_pr_auc_drop),
                    c["pr_auc"],
                    h["pr_auc"] - cfg.max_pr_auc_drop,
                    f"candidate PR-AUC >= champion {h['pr_auc']:.4f} - {cfg.max_pr_auc_drop}",
                )
            )
        checks.append(
            Check(
                "logloss",
                bool(c["logloss"] <= h["logloss"] * (1 + cfg.max_logloss_increase)),
                c["logloss"],
                h["logloss"] * (1 + cfg.max_logloss_increase),
                f"candidate log loss <= champion {h['logloss']:.5f} x (1 + {cfg.max_logloss_increase})",
            )
        )
        checks.append(
            Check(
                "ece",
                bool(c["ece"] <= h["ece"] + cfg.max_ece_increase),
                c["ece"],
                h["ece"] + cfg.max_ece_increase,
                f"candidate calibration error <= champion {h['ece']:.4f} + {cfg.max_ece_increase}",
            )
        )
        mine, theirs = candidate.at(cfg.objective), champion.at(cfg.objective)
        if mine is not None and theirs is not None:
            ref = theirs.calls_saved_share
            kept = "of bid value kept" if cfg.objective == "value" else "bid recall"
            checks.append(
                Check(
                    "calls_saved_at_target",
                    bool(mine.calls_saved_share >= ref * cfg.min_calls_saved_ratio),
                    mine.calls_saved_share,
                    ref * cfg.min_calls_saved_ratio,
                    f"calls saved at {cfg.target_bid_recall:.0%} {kept} >= champion {ref:.4f} x "
                    f"{cfg.min_calls_saved_ratio}",
                )
            )
    return GateResult(all(check.passed for check in checks), tuple(checks), tuple(notes))


def evaluate(
    frame: pd.DataFrame,
    candidate: TrainedModel,
    champion: TrainedModel | None,
    cfg: EvaluateSettings,
    *,
    candidate_ref: str = "candidate",
    champion_ref: str = "champion",
    time_column: str = "ts",
    explain: ExplainConfig | None = None,
) -> EvaluationReport:
    """Score candidate and champion on ``frame`` (the held-out window) and apply the gate.

    Args:
        frame: held-out rows with both models' feature columns, the label and ``time_column``.
        candidate: the model under review.
        champion: the current champion, or None.
        cfg: the ``evaluate`` configuration section.
        candidate_ref: how the report names the candidate (e.g. "bid_filter v4").
        champion_ref: how the report names the champion.
        time_column: the rows' timestamps (for the window shown in the report).
        explain: the ``explain`` section: also explain both models on the rows (None: no explanations).
    """
    if len(frame) == 0:
        raise ModelError("evaluation window has no rows")
    y = labels(frame, candidate.spec)
    cand = _scored(frame, y, candidate, cfg, explain, role="candidate", ref=candidate_ref)
    champ = None
    if champion is not None:
        if champion.spec.label != candidate.spec.label:
            raise ModelError(
                "champion and candidate predict different labels",
                expected=candidate.spec.label,
                got=champion.spec.label,
            )
        champ = _scored(frame, y, champion, cfg, explain, role="champion", ref=champion_ref)
    window = window_bounds(frame[time_column]) if time_column in frame.columns else ("?", "?")
    oracle = evaluate_oracle(frame, y, cfg) if cand.realized is not None else None
    gaps: tuple[PartnerGap, ...] = ()
    if oracle is not None:
        for model in (cand, champ):
            if model is not None:
                model.metrics.update(oracle_shares(model, oracle))
        partners = frame["partner"].astype(str).to_numpy()
        gaps = partner_gaps(partners, y, cand.scores, oracle.scores, cfg.target_bid_recall)
    return EvaluationReport(
        window=window,
        rows=len(frame),
        target_recall=cfg.target_bid_recall,
        exploration_share=cfg.exploration_share,
        candidate=cand,
        champion=champ,
        gate=gate(cand, champ, cfg),
        y=y,
        oracle=oracle,
        objective=cfg.objective,
        oracle_gaps=gaps,
    )


def oracle_shares(model: ModelEvaluation, oracle: ModelEvaluation) -> dict[str, float]:
    """The model's calls saved at the target (recall and value) as a share of the oracle's."""
    shares = {}
    named: tuple[tuple[str, FilterObjective], ...] = (
        ("oracle_share_at_target", "recall"),
        ("oracle_share_at_value_target", "value"),
    )
    for name, objective in named:
        mine, best = model.at(objective), oracle.at(objective)
        if mine is not None and best is not None and best.calls_saved_share > 0:
            shares[name] = mine.calls_saved_share / best.calls_saved_share
    return shares


def _scored(
    frame: pd.DataFrame,
    y: npt.NDArray[np.float32],
    model: TrainedModel,
    cfg: EvaluateSettings,
    explain: ExplainConfig | None,
    *,
    role: str,
    ref: str,
) -> ModelEvaluation:
    """``evaluate_scores`` of ``model`` on ``frame``, with its explanation when ``explain`` is given."""
    x = model.matrix(frame)  # encoded once for the scores and the explanation
    scores = model.predict_matrix(x)
    # A model that reads the partners' prices is ranked by expected bid value on the value curve.
    estimate = estimate_from(frame) if model.policy is not None and reads_prices(model.spec.names) else None
    value_scores = scores * estimate if estimate is not None else None
    evaluation = evaluate_scores(
        frame, y, scores, model.policy, cfg, role=role, ref=ref, value_scores=value_scores, estimate=estimate
    )
    if explain is None:
        return evaluation
    return replace(evaluation, explanation=explain_model(model, x, explain, role=role, ref=ref))
