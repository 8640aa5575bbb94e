"""The modeling steps as the CLI and the pipeline components run them: load, compute, report, log.

Each step wires the pure functions (``train``, ``evaluate``, ``fairness``) to their inputs (parquet or
the iPinYou sample, Feast) and outputs (reports on disk, MLflow), and returns a small summary.
A failing gate raises ``GateFailed`` *after* its report is written and logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from bidflow.errors import GateFailed, ModelError
from bidflow.kinds import kind as kind_of
from bidflow.kinds import registered_name
from bidflow.modeling import inputs, registry
from bidflow.modeling.inputs import FeatureSource

if TYPE_CHECKING:
    import pandas as pd

    from bidflow.config import Config
    from bidflow.modeling.evaluate import EvaluationReport
    from bidflow.modeling.explain_window import SliceExplanations
    from bidflow.modeling.fairness import FairnessReport
    from bidflow.modeling.train import TrainedModel
    from bidflow.monitoring.attribution import ReferenceContributions


@dataclass(frozen=True)
class TrainOutcome:
    """What ``train_step`` produced."""

    model: TrainedModel
    run_id: str
    version: registry.ModelRef | None
    data_version: str
    rows: int
    saved_to: Path | None = None


@dataclass(frozen=True)
class GateOutcome:
    """A gate step's verdict and where its report went."""

    passed: bool
    json_path: Path
    html_path: Path
    candidate: registry.ModelRef
    champion: registry.ModelRef | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def train_step(
    config: Config,
    kind: str,
    *,
    source: Path | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    feature_source: FeatureSource | None = None,
    register: bool = True,
    out_dir: Path | None = None,
) -> TrainOutcome:
    """Train ``kind`` on its data, log the run to MLflow and register it as the new ``candidate``.

    Without ``until`` the latest ``evaluate.holdout_hours`` hours are left out, so that ``evaluate``'s
    default window is traffic the model has never seen.

    Args:
        config: the configuration.
        kind: a registered model kind (``bidflow kinds``).
        source: the kind's data (default: its ``default_source``).
        since: first UTC time to train on.
        until: end (exclusive) of the training window.
        feature_source: ``feast`` or ``request`` (default ``train.feature_source``).
        register: create a registered version and point ``candidate`` at it.
        out_dir: also save the model bundle (booster + bidflow_model.json) there.
    """
    from bidflow.modeling import train
    from bidflow.modeling.dataset import latest_hours

    kind_of(config, kind).require_tabular("train")
    path = _source(config, kind, source)
    settings = config.train.for_kind(kind)
    if settings.engine == "spark":  # the rows stay in Spark: read, joined and trained there
        from bidflow.engines import spark_train_step

        return spark_train_step.train_step(
            config,
            kind,
            source=path,
            since=since,
            until=until,
            feature_source=feature_source,
            register=register,
            out_dir=out_dir,
        )
    rows = inputs.load_rows(config, kind, source=path, since=since, until=until)
    if until is None:
        rows, _ = inputs.split_holdout(rows, config.evaluate.for_kind(kind).holdout_hours)
    frame, spec = inputs.with_features(rows, config, kind, feature_source or settings.feature_source)
    policy = config.evaluate.for_kind(kind) if kind_of(config, kind).thresholded else None
    model = train.fit(
        frame,
        spec,
        settings,
        time_column=inputs.TIME,
        policy=policy,
        refit=settings.refit,
        category_order=settings.category_order,
    )
    valid = frame[latest_hours(frame[inputs.TIME], settings.validation_hours)]
    return record_training(config, kind, model, valid, data=path, rows=len(frame), register=register, out_dir=out_dir)


def record_training(
    config: Config,
    kind: str,
    model: TrainedModel,
    valid: pd.DataFrame,
    *,
    data: str | Path,
    rows: int,
    register: bool,
    out_dir: Path | None,
) -> TrainOutcome:
    """Log a trained model to MLflow with its validation figures, register it, and save its bundle.

    Args:
        config: the configuration.
        kind: the model kind.
        model: the trained model.
        valid: its validation rows (the latest ``validation_hours``), as the model's frame holds them.
        data: the data it was trained on (a folder, a file or a URI), whose version the run records.
        rows: the rows it was trained and validated on.
        register: create a registered version and point ``candidate`` at it.
        out_dir: also save the model bundle there.
    """
    from bidflow.modeling import plots, train
    from bidflow.modeling.economics import economics_curve
    from bidflow.modeling.lineage import data_version

    spec, settings = model.spec, config.train.for_kind(kind)
    y, p = valid[spec.label].to_numpy(np.float64), model.predict(valid)
    # A refitted model has learned from these rows: its curves on them are in-sample, and say so.
    label = "validation (in-sample: refitted on it)" if settings.refit else "validation"
    figures = {
        "roc_validation": plots.roc_figure({label: (y, p)}),
        "calibration_validation": plots.calibration_figure({label: (y, p)}, config.evaluate.calibration_bins),
    }
    partner = kind_of(config, kind).partner_column
    if model.policy is not None and partner is not None:
        curve = economics_curve(
            valid["auction_id"].astype(str).to_numpy(),
            valid[partner].astype(str).to_numpy(),
            y,
            p,
            valid["price"].to_numpy(np.float64, na_value=np.nan),
            exploration_share=config.evaluate.exploration_share,
        )
        figures["economics_validation"] = plots.economics_figure(
            {"validation": curve}, config.evaluate.target_bid_recall
        )
    version = data_version(data)
    run_id, ref = registry.log_training(
        config.registry,
        model,
        model_name=registered_name(config, kind),
        data=version,
        example=valid[list(spec.names)].head(5),
        figures=figures,
        run_name=f"train-{kind}",
        register=register,
    )
    saved = train.save_model(model, out_dir) if out_dir is not None else None
    return TrainOutcome(model, run_id, ref, version.value, rows, saved)


def evaluate_step(
    config: Config,
    kind: str,
    *,
    source: Path | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    candidate: str = registry.CANDIDATE,
    champion: str | None = registry.CHAMPION,
    report_dir: Path | None = None,
    enforce: bool = True,
) -> tuple[GateOutcome, EvaluationReport]:
    """Candidate vs champion on the held-out window; reports; raises ``GateFailed`` if the gate fails.

    Args:
        config: the configuration.
        kind: a registered model kind (``bidflow kinds``).
        source: the data (default from the configuration).
        since: window start (default: the latest ``evaluate.holdout_hours`` hours of the data).
        until: window end (exclusive).
        candidate: alias or version of the candidate, or the ``runs:/`` URI of a model not registered
            yet (``registry.run_uri``): its verdict is then tagged on its run only.
        champion: alias or version of the champion; None compares with nothing. The ``champion``
            alias that is not set yet is the first-model case: the gate passes with a note.
        report_dir: where evaluation.json / evaluation.html go (default ``paths.reports/evaluation-<kind>``).
        enforce: raise ``GateFailed`` on a failed gate; False returns the failed outcome instead
            (a pipeline branches on it and keeps the report as an artifact).
    """
    from bidflow.modeling import plots
    from bidflow.modeling.report import economics_curves, evaluation_html, write_html, write_json

    kind_of(config, kind).require_tabular("evaluate")
    name = registered_name(config, kind)
    cand_ref, champ_ref, report = evaluation_of(
        config, kind, source=source, since=since, until=until, candidate=candidate, champion=champion
    )
    curves = {"candidate": (report.y, report.candidate.scores)}
    if report.champion is not None:
        curves["champion"] = (report.y, report.champion.scores)
    figures = {
        "roc": plots.roc_figure(curves),
        "calibration": plots.calibration_figure(curves, config.evaluate.calibration_bins),
    }
    if report.candidate.curve:
        figures["economics"] = plots.economics_figure(economics_curves(report), config.evaluate.target_bid_recall)
    for evaluated in (report.candidate, report.champion):
        if evaluated is not None and evaluated.explanation is not None:
            figures[f"shap_{evaluated.role}"] = evaluated.explanation.figure(config.explain.plot_features)
    out = report_dir or config.paths.reports / f"evaluation-{kind}"
    payload = report.to_json() | {"model": name, "candidate_version": cand_ref.version}
    json_path = write_json(payload, out / "evaluation.json")
    html_path = write_html(evaluation_html(report, figures), out / "evaluation.html")
    verdict = "passed" if report.gate.passed else "failed"
    _log_gate(config, cand_ref, "evaluation", verdict, report.candidate.metrics, [json_path, html_path])
    outcome = GateOutcome(report.gate.passed, json_path, html_path, cand_ref, champ_ref)
    if enforce and not report.gate.passed:
        raise GateFailed(
            f"candidate {cand_ref.label} failed the champion/challenger gate",
            report_path=html_path,
            got="; ".join(f"{c.name} {c.value:.4f} vs limit {c.limit:.4f}" for c in report.gate.failed),
        )
    return outcome, report


def fairness_step(
    config: Config,
    kind: str,
    *,
    source: Path | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    candidate: str = registry.CANDIDATE,
    slices: tuple[str, ...] | None = None,
    report_dir: Path | None = None,
    enforce: bool = True,
) -> tuple[GateOutcome, FairnessReport]:
    """The bias gate for the candidate on the held-out window; raises ``GateFailed`` naming failing slices.

    Args:
        config: the configuration.
        kind: a registered model kind (``bidflow kinds``).
        source: the data (default from the configuration).
        since: window start (default: the latest ``evaluate.holdout_hours`` hours).
        until: window end (exclusive).
        candidate: alias or version of the model to check, or a ``runs:/`` URI (see ``evaluate_step``).
        slices: slice columns instead of the kind's own (its ``bias_slices``, else ``fairness.slices``).
        report_dir: where fairness.json / fairness.html go (default ``paths.reports/fairness-<kind>``).
        enforce: raise ``GateFailed`` on a failed gate; False returns the failed outcome instead.
    """
    from bidflow.modeling.report import fairness_html, write_html, write_json

    kind_of(config, kind).require_tabular("fairness")
    name = registered_name(config, kind)
    cand_ref, bias = bias_of(config, kind, source=source, since=since, until=until, candidate=candidate, slices=slices)
    report = bias.report
    figures = _failing_calibration(bias.frame, bias.y, bias.scores, report)
    out = report_dir or config.paths.reports / f"fairness-{kind}"
    payload = report.to_json() | {
        "model": name,
        "candidate_version": cand_ref.version,
        "explanations": bias.explanations.to_json(),
    }
    json_path = write_json(payload, out / "fairness.json")
    html = fairness_html(report, cand_ref.label, figures, bias.explanations)
    html_path = write_html(html, out / "fairness.html")
    verdict = "passed" if report.passed else "failed"
    metrics = {f"fairness_{k}": v for k, v in report.overall.items()} | {"fairness_failing_slices": len(report.failing)}
    _log_gate(config, cand_ref, "fairness", verdict, metrics, [json_path, html_path])
    if enforce and not report.passed:
        raise GateFailed(
            f"candidate {cand_ref.label} failed the bias gate on {len(report.failing)} slice(s)",
            report_path=html_path,
            got="; ".join(f"{s.name}: {s.failures[0]}" for s in report.failing[:5]),
        )
    return GateOutcome(report.passed, json_path, html_path, cand_ref), report


def evaluation_of(
    config: Config,
    kind: str,
    *,
    source: Path | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    candidate: str = registry.CANDIDATE,
    champion: str | None = registry.CHAMPION,
) -> tuple[registry.ModelRef, registry.ModelRef | None, EvaluationReport]:
    """The champion/challenger comparison alone: nothing written, nothing logged (``evaluate_step`` does both).

    Returns the candidate's and the champion's references (None: no champion) and the report,
    which carries the labels, both models' scores for plots and their explanations (``explain``).
    """
    from bidflow.modeling.evaluate import evaluate

    name = registered_name(config, kind)
    cand_ref, cand = registry.load(config.registry, name, candidate)
    champ_ref, champ = _champion(config, name, champion)
    frame = _window(config, kind, source, since, until, [cand.spec.feature_service, *_services(champ)])
    report = evaluate(
        frame,
        cand,
        champ,
        config.evaluate.for_kind(kind),
        candidate_ref=cand_ref.label,
        champion_ref=champ_ref.label if champ_ref else "none",
        time_column=inputs.TIME,
        explain=config.explain,
    )
    return cand_ref, champ_ref, report


@dataclass(frozen=True)
class BiasCheck:
    """What the bias gate judged: the rows, labels and scores it saw, its report, and what sets slices apart."""

    frame: pd.DataFrame
    y: npt.NDArray[Any]
    scores: npt.NDArray[np.float64]
    report: FairnessReport
    explanations: SliceExplanations


def bias_of(
    config: Config,
    kind: str,
    *,
    source: Path | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    candidate: str = registry.CANDIDATE,
    slices: tuple[str, ...] | None = None,
) -> tuple[registry.ModelRef, BiasCheck]:
    """The bias check per slice alone: nothing written, nothing logged (``fairness_step`` does both).

    Its failing slices (when none fails, ``explain.slices`` worst ones) are explained by the
    contributions that set them apart from all rows (``bidflow.modeling.explain_window``).
    """
    from bidflow.modeling.dataset import labels
    from bidflow.modeling.explain_window import explain_slices
    from bidflow.modeling.fairness import fairness_report

    name = registered_name(config, kind)
    cand_ref, cand = registry.load(config.registry, name, candidate)
    frame = _window(config, kind, source, since, until, [cand.spec.feature_service])
    y, scores = labels(frame, cand.spec), cand.predict(frame)
    called = None
    partner = kind_of(config, kind).partner_column
    if cand.policy is not None and partner is not None:
        from bidflow.modeling.economics import estimate_from

        estimate = estimate_from(frame) if cand.policy.ranking == "expected_value" else None
        ids = frame["auction_id"].astype(str).to_numpy()
        called = cand.policy.call_mask(ids, frame[partner].to_numpy(), scores, estimate)
    slices = slices or kind_of(config, kind).bias_slices
    fairness = config.fairness.for_kind(kind)
    cfg = fairness if slices is None else fairness.model_copy(update={"slices": slices})
    report = fairness_report(frame, y, scores, called, cfg, calibration_bins=config.evaluate.calibration_bins)
    explained = explain_slices(cand, frame, report, config.explain)
    return cand_ref, BiasCheck(frame, np.asarray(y), np.asarray(scores), report, explained)


def register_step(
    config: Config,
    kind: str,
    run_id: str,
    *,
    gates: tuple[str, ...] | None = None,
    alias: str = registry.CANDIDATE,
) -> registry.ModelRef:
    """Register the model of training run ``run_id`` and point ``alias`` at it, once its gates passed.

    The pipeline's order: ``train_step(register=False)`` logs the run, ``evaluate_step`` and
    ``fairness_step`` judge its ``runs:/`` model and tag the run, and only then is a version created.

    Args:
        config: the configuration.
        kind: a registered model kind (``bidflow kinds``).
        run_id: the MLflow run that logged the model.
        gates: gate names whose ``gate.<name>`` run tag must read ``passed`` (default: the kind's own,
            ``Kind.gates``).
        alias: the alias the new version gets.

    Raises:
        GateFailed: a gate has not run or has not passed (nothing is registered).
    """
    name = registered_name(config, kind)
    run = registry.resolve(config.registry, name, registry.run_uri(run_id))
    required = kind_of(config, kind).gates if gates is None else gates
    missing = [g for g in required if run.tags.get(f"gate.{g}") != "passed"]
    if missing:
        raise GateFailed(
            f"{run.label} has not passed its gates; nothing was registered",
            got=", ".join(f"gate.{g}={run.tags.get(f'gate.{g}', 'not run')}" for g in missing),
        )
    return registry.register_run(config.registry, name, run_id, alias=alias)


def _failing_calibration(frame: pd.DataFrame, y: Any, scores: Any, report: FairnessReport) -> dict[str, Any]:
    """Calibration curves of up to four failing slices against all rows."""
    from bidflow.modeling import plots
    from bidflow.modeling.fairness import slice_frame

    if not report.failing:
        return {}
    columns, _ = slice_frame(frame, [s.feature for s in report.failing])
    curves = {"all rows": (y, scores)}
    for s in report.failing[:4]:
        mask = (columns[s.feature] == s.value).to_numpy()
        curves[s.name] = (y[mask], scores[mask])
    return {"calibration_failing_slices": plots.calibration_figure(curves)}


def _log_gate(
    config: Config,
    ref: registry.ModelRef,
    gate: str,
    verdict: str,
    metrics: dict[str, float],
    files: list[Path],
) -> None:
    tags = {f"gate.{gate}": verdict}
    if ref.registered:
        registry.set_version_tags(config.registry, ref.name, ref.version, tags)
    if ref.run_id:
        prefix = "eval_" if gate == "evaluation" else ""
        registry.log_run_results(
            config.registry,
            ref.run_id,
            metrics={f"{prefix}{k}": v for k, v in metrics.items()},
            files={p.name: p for p in files},
            tags=tags,
        )


def _champion(config: Config, name: str, champion: str | None) -> tuple[registry.ModelRef | None, TrainedModel | None]:
    if champion is None:
        return None, None
    if champion == registry.CHAMPION and registry.champion(config.registry, name) is None:
        return None, None  # the first model: nothing to compare with (the gate says so in a note)
    ref, model = registry.load(config.registry, name, champion)
    return ref, model


def _services(model: TrainedModel | None) -> list[str | None]:
    return [model.spec.feature_service] if model is not None else []


def _window(
    config: Config,
    kind: str,
    source: Path | None,
    since: datetime | None,
    until: datetime | None,
    services: list[str | None],
) -> pd.DataFrame:
    rows = inputs.load_rows(config, kind, source=_source(config, kind, source), since=since, until=until)
    if since is None and until is None:
        _, rows = inputs.split_holdout(rows, config.evaluate.for_kind(kind).holdout_hours)
    if len(rows) == 0:
        raise ModelError("evaluation window has no rows")
    return inputs.with_service(rows, config, services)


def _source(config: Config, kind: str, source: Path | None) -> Path:
    return inputs.source_of(config, kind, source)


def drift_reference_step(
    config: Config,
    *,
    kind: str | None = None,
    model: str = registry.CANDIDATE,
    source: Path | None = None,
    out: Path | None = None,
) -> tuple[registry.ModelRef, Path, int]:
    """The drift monitor's reference for a model version: held-out rows as the monitor sees them.

    The kind's drift shape maps the held-out window, scored by the model, onto the monitored rows
    (the bid filter: one row per auction, its request features and the mean score over its
    partners, exactly the row its served mapping builds from a payload; a kind served as instances:
    one row per instance, its drift fields and its score), at most ``monitor.reference_rows`` (a
    fixed-seed sample). The file names its columns, and the monitor's environment fits its
    detectors on it (``python -m bidflow.monitoring fit``).

    Args:
        config: the configuration.
        kind: the model kind (default ``canary.kind``); it must have a drift shape.
        model: alias or version.
        source: the kind's data (default: its ``default_source``).
        out: the parquet file (default ``canary.state/reference/<version>.parquet``).

    Returns:
        the model version, the parquet path and the number of rows in it.

    Raises:
        ModelError: the kind has no drift shape (the monitor does not watch it).
    """
    from bidflow.kinds.base import SCORE
    from bidflow.monitoring.drift import Columns
    from bidflow.monitoring.fit import write_reference

    kind = kind or config.canary.kind
    kind_of(config, kind).require_tabular("canary reference")
    shape = kind_of(config, kind).drift
    if shape is None:
        raise ModelError(
            f"kind '{kind}' has no drift shape, so it has no drift reference",
            hint="give the kind a `drift` (bidflow.kinds.base.DriftShape) to have it watched",
        )
    name = registered_name(config, kind)
    ref, trained = registry.load(config.registry, name, model)
    frame = _window(config, kind, source, None, None, [trained.spec.feature_service])
    reference = shape.reference(frame.assign(**{SCORE: trained.predict(frame)}))
    if len(reference) == 0:
        raise ModelError("the held-out window has no rows the monitor can watch", where=str(source or kind))
    if len(reference) > config.monitor.reference_rows:
        reference = reference.sample(config.monitor.reference_rows, random_state=0)
    path = out or config.canary.state / "reference" / f"{ref.version or 'run'}.parquet"
    write_reference(reference, path, Columns.of(shape), _reference_contributions(trained, frame, config))
    return ref, path, len(reference)


def _reference_contributions(model: TrainedModel, frame: pd.DataFrame, config: Config) -> ReferenceContributions:
    """The model's mean contribution per feature over (a sample of) the held-out rows, for drift attribution."""
    from bidflow.modeling.explain import contributions, sample_rows
    from bidflow.monitoring.attribution import ReferenceContributions

    rows = sample_rows(len(frame), config.explain.max_rows)
    found = contributions(model, model.matrix(frame.iloc[rows]))
    means = found.means()
    named = {feature: float(mean) for feature, mean in zip(found.features, means, strict=True)}
    return ReferenceContributions(len(rows), found.base, named)
