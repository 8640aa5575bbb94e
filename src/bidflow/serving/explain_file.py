"""``bidflow explain``: explain logged requests from a file, through the kind's model server in-process.

Each line of the file is one request as a model server received it: a v1 predict body
(``{"instances": [...]}``) or one bare instance (wrapped into a body of one). Kinds whose traffic is
replayed from auction logs (``Kind.replay == "openrtb"``, the bid filter) also take the records
``bidflow simulate`` writes (``request``, ``ts_ms``, ``outcomes``): the called partners are the
outcomes' partners. Plain or gzip files (told apart by the gzip magic bytes).

The model is built as ``python -m bidflow.serving`` builds it (``bidflow.serving.__main__.build``:
the kind's served-model class, the same ``ModelSource`` and ``ServeOptions``) and each line goes
through its ``preprocess`` and ``explain``, the two stages of the ``:explain`` route. So a line is
checked as the server checks it (a line it refuses is one the route answers with a 400; it is
counted and named, and the run goes on), its online features come from the configured store and
its categories are decoded as the route decodes them. The online store answers with what is
materialized now (``ts_ms`` only decides the ttl), as a server asked today would: a request logged
before the last materialization may have been scored with other features.

Every row is explained with all of its contributions (the route's ``top`` 0), so that the mean
|contribution| over the explained rows covers every feature; a row keeps its ``top`` largest, the
ones the route would have answered with ``top``.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec

from bidflow.errors import InputError, ModelError
from bidflow.serving.bodies import json_body, type_name
from bidflow.serving.errors import RequestError
from bidflow.serving.explanations import MAX_TOP, TOP_HEADER

if TYPE_CHECKING:
    from bidflow.config import Config
    from bidflow.serving.base import ServedModel

Progress = Callable[[int], None]  # bytes of the file read since the last call

# How long an online-store read may take before the row fails open. A server's short default
# guards an auction's latency; a command reading a file has no auction waiting on it.
DEFAULT_FEATURE_TIMEOUT_MS: Final = 1_000.0
_GZIP_MAGIC: Final = b"\x1f\x8b"
_INSTANCE: Final = "$.instances[0]"  # where a wrapped line sits in the body the server reads


@dataclass(frozen=True)
class Refusal:
    """A line the server refused (or that is not JSON): what the route would answer with a 400.

    Attributes:
        line: 1-based line number in the file.
        error: the server's message.
        field: JSON path of the offending value in the line as written (``$``: the whole line).
        expected: what the server expected, when it says.
        got: what it got, when it says.
    """

    line: int
    error: str
    field: str
    expected: str | None = None
    got: str | None = None

    def describe(self) -> str:
        """``line 3: $.request.imp[0].banner.w: <message> (expected ..., got ...)``."""
        details = [f"{k} {v}" for k, v in (("expected", self.expected), ("got", self.got)) if v is not None]
        return f"line {self.line}: {self.field}: {self.error}" + (f" ({'; '.join(details)})" if details else "")

    def to_json(self) -> dict[str, Any]:
        return {"line": self.line, "error": self.error, "field": self.field, "expected": self.expected,
                "got": self.got}  # fmt: skip


@dataclass(frozen=True)
class ExplainedRow:
    """One scored row of an answer: a partner of an auction, or one instance.

    Attributes:
        line: the line the row's request was on.
        label: how the row is named (``auction A / partner P``; ``line 3``, ``line 3, row 2``).
        score: the score predict gives (None: the row failed open, nothing to explain).
        base_value: the model's expected margin (log-odds).
        margin: the row's margin; the base value plus every contribution.
        contributions: the ``top`` largest (``feature``, ``value``, ``contribution``), largest first.
        decision: ``call``/``skip`` where the kind decides per partner.
        threshold: the partner's threshold, where the kind has them.
        fail_open_reason: why the online features were missing (defaults used, or no score).
    """

    line: int
    label: str
    score: float | None
    base_value: float | None
    margin: float | None
    contributions: tuple[Mapping[str, Any], ...]
    decision: str | None = None
    threshold: float | None = None
    fail_open_reason: str | None = None


@dataclass
class FileExplanations:
    """Everything ``bidflow explain`` found in one file.

    Attributes:
        source: the file read.
        model: the endpoint name of the model (its registered name).
        version: the model version label the server reports.
        top: contributions kept per row (0: all).
        lines: non-blank lines read.
        answers: per line the server answered, ``{"line": n, **its :explain answer}`` (contributions cut to
            ``top``); a line whose rows all failed open is answered with nothing to explain.
        rows: every row of those answers, in file order.
        refused: the lines refused, in file order.
    """

    source: str
    model: str
    version: str | None
    top: int
    lines: int = 0
    answers: list[dict[str, Any]] = field(default_factory=list)
    rows: list[ExplainedRow] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    _abs_sums: dict[str, float] = field(default_factory=dict, repr=False)
    _scored: int = field(default=0, repr=False)
    _scored_lines: int = field(default=0, repr=False)

    @property
    def explained_rows(self) -> int:
        """Rows with a score and its contributions."""
        return self._scored

    @property
    def explained_lines(self) -> int:
        """Lines with at least one explained row."""
        return self._scored_lines

    @property
    def fail_open_rows(self) -> list[ExplainedRow]:
        """Rows whose online features were missing (scored with defaults, or not at all)."""
        return [row for row in self.rows if row.fail_open_reason is not None]

    def mean_abs(self) -> dict[str, float]:
        """Mean |contribution| per feature over the explained rows, largest first."""
        if not self._scored:
            return {}
        means = {name: total / self._scored for name, total in self._abs_sums.items()}
        return dict(sorted(means.items(), key=lambda item: -item[1]))

    def add(self, line: int, answer: Mapping[str, Any]) -> None:
        """Record a line's ``:explain`` answer (every contribution of each row; ``top`` of them are kept).

        Thresholded kinds answer per auction, each of its ``partners`` a row; the others answer a row
        per entry. The answer's shape tells them apart, not the kind's name.
        """
        scored = self._scored
        entries = answer.get("explanations") or []
        kept = []
        for k, entry in enumerate(entries):
            if "partners" in entry:
                reason = entry.get("fail_open_reason")
                partners = [
                    self._row(line, f"auction {entry.get('id')} / partner {p.get('partner')}", p, reason)
                    for p in entry["partners"]
                ]
                kept.append({**entry, "partners": partners})
            else:
                label = f"line {line}" if len(entries) == 1 else f"line {line}, row {k + 1}"
                kept.append(self._row(line, label, entry, answer.get("fail_open_reason")))
        self.answers.append({"line": line, **answer, "explanations": kept})
        if self._scored > scored:
            self._scored_lines += 1

    def _row(self, line: int, label: str, found: Mapping[str, Any], reason: str | None) -> dict[str, Any]:
        every = found.get("contributions") or []
        score = found.get("score")
        if score is not None:
            self._scored += 1
            for c in every:
                self._abs_sums[c["feature"]] = self._abs_sums.get(c["feature"], 0.0) + abs(c["contribution"])
        kept = list(every[: self.top] if self.top else every)
        self.rows.append(
            ExplainedRow(
                line=line,
                label=label,
                score=score,
                base_value=found.get("base_value"),
                margin=found.get("margin"),
                contributions=tuple(kept),
                decision=found.get("decision"),
                threshold=found.get("threshold"),
                fail_open_reason=reason,
            )
        )
        return {**found, "contributions": kept}


def explain_requests(
    config: Config,
    path: Path,
    *,
    kind_name: str,
    model_ref: str = "champion",
    top: int | None = None,
    auction_entry: bool = False,
    feature_timeout_ms: float = DEFAULT_FEATURE_TIMEOUT_MS,
    on_progress: Progress | None = None,
) -> FileExplanations:
    """Explain every line of ``path`` with the model of ``kind_name`` that ``model_ref`` names.

    Args:
        config: bidflow's configuration (registry, feature store, ``explain.top``).
        path: JSON lines, plain or gzip (see the module docstring).
        kind_name: the model kind (``bidflow kinds``).
        model_ref: alias or version in the registry, an MLflow URI or a model folder (as ``bidflow serve --model``).
        top: contributions kept per row (0: all; default ``explain.top``).
        auction_entry: check requests by Prebid's auction-endpoint rules (``bidflow serve --auction-entry``).
        feature_timeout_ms: the longest an online-store read may wait before the row fails open.
        on_progress: called with the bytes of the file read as it goes.

    Raises:
        InputError: the file is missing or unreadable, or ``top`` is out of range.
        ConfigError: no kind of that name.
        ModelError: the model cannot be loaded (the server's not-ready reason), or its kind has no explanations.
        RegistryError: the registry lacks the model, version or alias.
    """
    from bidflow.kinds import kind

    _check_file(path)
    top = config.explain.top if top is None else top
    if not 0 <= top <= MAX_TOP:
        raise InputError("top is how many contributions to show per row", expected=f"0 (all) to {MAX_TOP}",
                         got=str(top))  # fmt: skip
    served = kind(config, kind_name)
    model = open_served_model(
        config, served.name, model_ref, auction_entry=auction_entry, feature_timeout_ms=feature_timeout_ms
    )
    try:
        return explain_file(model, path, top=top, auction_logs=served.replay == "openrtb", on_progress=on_progress)
    finally:
        model.stop()  # closes the online reader


def open_served_model(
    config: Config,
    kind_name: str,
    model_ref: str,
    *,
    auction_entry: bool = False,
    feature_timeout_ms: float = DEFAULT_FEATURE_TIMEOUT_MS,
) -> ServedModel:
    """The kind's served model, built from the model server's own options and loaded.

    Raises:
        ModelError: the model did not load (the reason a server would answer its 503s with).
    """
    from bidflow.serving.__main__ import build, parser

    argv = ["--kind", kind_name, "--model", model_ref, "--feature-timeout-ms", str(feature_timeout_ms)]
    model, _ = build(parser().parse_args([*argv, *(["--auction-entry"] if auction_entry else [])]), config)
    if not _load_quietly(model):
        raise ModelError(
            f"the {kind_name} model is not ready",
            where=model.source.describe(),
            got=model.not_ready_reason,
            hint="`bidflow models --model KIND` lists the registered versions; --model also takes a model folder",
        )
    return model


def explain_file(
    model: ServedModel, path: Path, *, top: int, auction_logs: bool = False, on_progress: Progress | None = None
) -> FileExplanations:
    """Explain every line of ``path`` with a loaded served model (see the module docstring).

    Args:
        model: a loaded ``ServedModel``.
        path: JSON lines, plain or gzip.
        top: contributions kept per row (0: all).
        auction_logs: lines holding ``outcomes`` are auction-log records (kinds replayed from auction logs).
        on_progress: called with the bytes of the file read as it goes.

    Raises:
        InputError: the file is missing, unreadable or its gzip stream is corrupt.
        ModelError: the model's kind has no explanations.
    """
    from kserve.errors import InvalidInput

    state = model.state
    result = FileExplanations(str(path), model.name, state.version if state is not None else None, top)
    headers = {TOP_HEADER: "0"}  # every contribution: the mean |contribution| needs them all
    for number, raw in read_lines(path, on_progress):
        if not raw.strip():
            continue
        result.lines += 1
        wrapped = False
        try:
            body, wrapped = request_body(raw, auction_logs=auction_logs)
            answer = model.explain(model.preprocess(body, headers), headers)
        except RequestError as exc:
            result.refused.append(Refusal(number, exc.what, _field_in_line(exc.field, wrapped), exc.expected, exc.got))
            continue
        except InvalidInput as exc:  # ServedModel.explain: the kind's server has no explanations
            raise ModelError(f"model {model.name} cannot explain its scores", got=str(exc.reason)) from exc
        result.add(number, answer)
    return result


def request_body(raw: bytes, *, auction_logs: bool = False) -> tuple[bytes, bool]:
    """A line as the v1 body the server reads, and whether it was wrapped (a bare instance or a log record).

    A v1 body is passed on as it is, bytes and all, as the server receives it.

    Raises:
        RequestError: the line is not JSON (the server's message), or a log record's outcomes name no partners.
    """
    value = json_body(raw)
    if isinstance(value, dict) and "instances" in value:
        return raw, False
    if auction_logs and isinstance(value, dict) and "outcomes" in value:
        value = _logged_auction(value)
    return msgspec.json.encode({"instances": [value]}), True


def read_lines(path: Path, on_progress: Progress | None = None) -> Iterator[tuple[int, bytes]]:
    """(1-based number, bytes) of each line of a plain or gzip file.

    Raises:
        InputError: the file is missing or unreadable, or its gzip stream is corrupt.
    """
    _check_file(path)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot read the file: {exc.strerror}", where=path) from exc
    with handle:
        gzipped = handle.read(2) == _GZIP_MAGIC
        handle.seek(0)
        lines = gzip.GzipFile(fileobj=handle, mode="rb") if gzipped else handle
        number, seen = 0, 0
        try:
            for number, line in enumerate(lines, 1):
                yield number, line
                if on_progress is not None:
                    at = handle.tell()  # of the compressed file: what the progress total counts
                    on_progress(at - seen)
                    seen = at
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(
                f"could not read past line {number}: {exc}",
                where=path,
                hint="the file is truncated or corrupt; re-copy or re-compress it",
            ) from exc


def _logged_auction(record: dict[str, Any]) -> dict[str, Any]:
    """An auction-log record as the instance it stands for: its request, time and called partners."""
    outcomes = record["outcomes"]
    if not isinstance(outcomes, list):
        raise RequestError("'outcomes' must be a list of partner outcomes", field="$.outcomes",
                           got=type_name(outcomes))  # fmt: skip
    partners = []
    for k, outcome in enumerate(outcomes):
        partner = outcome.get("partner") if isinstance(outcome, dict) else None
        if not isinstance(partner, str):
            raise RequestError("an outcome names its partner", field=f"$.outcomes[{k}].partner",
                               got=type_name(partner))  # fmt: skip
        partners.append(partner)
    instance: dict[str, Any] = {"partners": partners}
    instance.update({key: record[key] for key in ("request", "ts_ms") if key in record})
    return instance


def _field_in_line(field: str, wrapped: bool) -> str:
    """The server's JSON path, as a path in the line as written (a wrapped line sits at ``$.instances[0]``)."""
    if not wrapped or not field.startswith(_INSTANCE):
        return field
    inner = "$" + field.removeprefix(_INSTANCE)
    # A log record's partners are its outcomes' partners.
    return "$.outcomes" + inner.removeprefix("$.partners") if inner.startswith("$.partners") else inner


def _load_quietly(model: ServedModel) -> bool:
    """``model.load()`` without the server's log of a failure: the command reports it as its error."""
    from bidflow.serving import base

    logger = logging.getLogger(base.__name__)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        return model.load()
    finally:
        logger.setLevel(level)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError("request file not found", where=path, hint="a JSON-lines file (plain or gzip) of requests")
    if not path.is_file():
        raise InputError("expected a JSON-lines file", where=path, got="a directory or special file")
