"""The drift reference file, and fitting the drift detectors on it.

Training (main environment) writes a parquet file of a kind's monitored rows (``write_reference``):
held-out rows mapped by the kind's drift shape, with the model's score, and the monitored columns
(categorical, numeric) in the file's metadata, so the file says what to test. The monitor's
environment fits alibi-detect detectors on it (``python -m bidflow.monitoring fit``) and saves them
where the monitor loads them (``monitor.detector``). A reference without that metadata (written
before kinds had drift shapes) holds the bid filter's columns.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

import pandas as pd

from bidflow.errors import MonitorError
from bidflow.monitoring.attribution import (
    REFERENCE_FILE,
    ReferenceContributions,
    write_reference_contributions,
)
from bidflow.monitoring.drift import BID_FILTER, Backend, Columns, DriftDetector, fit_detector, save_detector

COLUMNS_KEY: Final = b"bidflow.drift.columns"
# The model's mean contributions over the held-out rows: they travel inside the reference file (a
# pipeline artifact) and are written beside the detector, for the monitor's attribution of a drifted window.
CONTRIBUTIONS_KEY: Final = b"bidflow.drift.contributions"


def write_reference(
    frame: pd.DataFrame, path: Path, columns: Columns, contributions: ReferenceContributions | None = None
) -> None:
    """Write the monitored ``columns`` (and ``score``) of ``frame`` to ``path``, the columns named in its metadata
    (and the model's reference ``contributions``, when given)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame[list(columns.all)].reset_index(drop=True), preserve_index=False)
    described = {"categorical": list(columns.categorical), "numeric": list(columns.numeric)}
    metadata = dict(table.schema.metadata or {}) | {COLUMNS_KEY: json.dumps(described).encode()}
    if contributions is not None:
        metadata[CONTRIBUTIONS_KEY] = json.dumps(contributions.to_json()).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata(metadata), path)


def reference_columns(reference: Path) -> Columns:
    """The monitored columns a reference file declares (the bid filter's when it declares none)."""
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(reference).metadata or {}
        described = json.loads(metadata[COLUMNS_KEY]) if COLUMNS_KEY in metadata else None
        if described is None:
            return BID_FILTER
        return Columns(tuple(described["categorical"]), tuple(described["numeric"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:  # pyarrow's errors derive from these
        raise MonitorError(
            "drift reference is not a readable parquet file", where=reference, got=f"{type(exc).__name__}: {exc}"
        ) from exc


def read_reference(reference: Path) -> tuple[pd.DataFrame, Columns]:
    """The reference rows and the columns they declare."""
    reference = Path(reference)
    if not reference.exists():
        raise MonitorError(
            "drift reference not found",
            where=reference,
            hint="deploying a version writes it (`bidflow canary reference` writes one by hand)",
        )
    columns = reference_columns(reference)
    try:
        frame = pd.read_parquet(reference, columns=list(columns.all))
    except (OSError, ValueError, KeyError) as exc:  # pyarrow's errors derive from these
        raise MonitorError(
            "drift reference is not a readable parquet file with the monitored columns",
            where=reference,
            expected=", ".join(columns.all),
            got=f"{type(exc).__name__}: {str(exc)[:200]}",
        ) from exc
    return frame, columns


def fit_from_reference(reference: Path, out: Path, p_value: float, backend: Backend = "alibi") -> DriftDetector:
    """Read ``reference`` (parquet from ``write_reference``), fit a detector at ``p_value`` over its columns,
    save it to ``out``."""
    frame, columns = read_reference(reference)
    detector = fit_detector(frame, p_value, backend=backend, columns=columns)
    save_detector(detector, Path(out))
    contributions = reference_contributions(Path(reference))
    if contributions is not None:
        write_reference_contributions(contributions, Path(out) / REFERENCE_FILE)
    return detector


def reference_contributions(reference: Path) -> ReferenceContributions | None:
    """The model's reference contributions a reference file carries (None: written without them)."""
    import pyarrow.parquet as pq

    metadata = pq.read_schema(reference).metadata or {}
    if CONTRIBUTIONS_KEY not in metadata:
        return None
    try:
        return ReferenceContributions.from_json(json.loads(metadata[CONTRIBUTIONS_KEY]))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise MonitorError("a drift reference's contributions are not readable", where=reference,
                           got=repr(exc)[:200]) from exc  # fmt: skip
