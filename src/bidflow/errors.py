"""One error hierarchy for bidflow.

Every error a user can cause says *what* went wrong, *where* (file, line, JSON path,
column), what was *expected* against what was *got*, and what to *do* about it. The CLI
prints these without a traceback; anything that is not a ``BidflowError`` is a bug.
"""

from __future__ import annotations

from pathlib import Path


class BidflowError(Exception):
    """Base class of every error bidflow raises on purpose."""

    exit_code: int = 1

    def __init__(
        self,
        what: str,
        *,
        where: str | Path | None = None,
        expected: str | None = None,
        got: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.what = what
        self.where = str(where) if where is not None else None
        self.expected = expected
        self.got = got
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        lines = [self.what]
        if self.where:
            lines.append(f"  where:    {self.where}")
        if self.expected is not None:
            lines.append(f"  expected: {self.expected}")
        if self.got is not None:
            lines.append(f"  got:      {self.got}")
        if self.hint:
            lines.append(f"  to fix:   {self.hint}")
        return "\n".join(lines)


class ConfigError(BidflowError):
    """The configuration file or an environment override is invalid."""

    exit_code = 2


class InputError(BidflowError):
    """A file or directory given on the command line is missing or unusable."""

    exit_code = 2


class OpenRTBError(BidflowError):
    """A bid request is not valid OpenRTB 2.5/2.6.

    ``path`` is the JSON path of the offending value (``$.imp[0].banner.w``) so that a
    caller (the CLI, the model server's 400 response) can name the field.
    """

    def __init__(
        self,
        what: str,
        *,
        path: str = "$",
        expected: str | None = None,
        got: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.path = path
        super().__init__(what, where=path, expected=expected, got=got, hint=hint)


class SimulationError(BidflowError):
    """The auction-log generator was asked for something it cannot produce."""


class IngestError(BidflowError):
    """Raw auction logs could not be turned into a usable parquet batch."""


class DataValidationError(BidflowError):
    """A data batch failed the validation gate; ``report_path`` says where the report is."""

    def __init__(self, what: str, *, report_path: Path | None = None, got: str | None = None) -> None:
        self.report_path = report_path
        hint = f"read the report at {report_path}" if report_path is not None else None
        super().__init__(what, where=report_path, got=got, hint=hint)


class FeatureStoreError(BidflowError):
    """The feature store (Feast repo, offline sources, registry or online store) is unusable."""


class ModelError(BidflowError):
    """A model cannot be trained, loaded or scored on the data it was given."""


class RegistryError(BidflowError):
    """The MLflow tracking server or model registry is unreachable, or lacks a model, version or alias."""


class GateFailed(BidflowError):
    """A release gate (champion/challenger, bias) rejected the candidate; ``report_path`` holds the why."""

    def __init__(self, what: str, *, report_path: Path | None = None, got: str | None = None) -> None:
        self.report_path = report_path
        hint = f"read the report at {report_path}" if report_path is not None else None
        super().__init__(what, where=report_path, got=got, hint=hint)


class DeploymentError(BidflowError):
    """A deployment backend cannot carry out a transition (no champion, server not ready, cluster refused)."""


class ConflictError(DeploymentError):
    """Someone else changed the deployment between our read and our write; re-read and decide again."""


class StateUnavailable(DeploymentError):
    """The deployment's state cannot be recorded (disk full, I/O error), so nothing moved; try again later."""


class MonitorError(BidflowError):
    """The drift monitor cannot fit, load or run its detectors."""


class BiddingError(BidflowError):
    """A bidder cannot be fitted, loaded or asked for a bid (unknown campaign, a policy that does not fit)."""


class EngineError(BidflowError):
    """A step cannot run on the engine it is set to (Spark missing, not startable, or a setting it lacks)."""
