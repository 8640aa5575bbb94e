"""The generator's ground truth for each partner call: what the best possible filter would know.

The generator decides a call's outcome by drawing from probabilities it computes (see
``bidflow.data.partners``): the partner wants the request with probability ``p_wants``, draws a
log-normal CPM around ``median`` with spread ``sigma`` and returns it only at or above the floor,
and independently the call times out or errors. The oracle is those probabilities, not the draw:

* ``p_bid``: P(the call returns a bid) = p_wants x (1 - P(timeout or error)) x P(CPM >= floor);
* ``bid_value``: E[price x 1{bid}], the CPM a call is worth before it is made.

Ranking calls by ``p_bid`` (or ``bid_value``) is the best any model can do on this market, so a
filter's calls saved at a bid recall, as a share of the oracle's, says how far from its limit it is.

The oracle is written beside each hourly log (``<name>.oracle.arrow``, an Arrow IPC file), keyed by the auction's
line in the log and the partner; ingest keeps it in its own columns (``ORACLE_COLUMNS``), and no
feature service, model or server reads them. Real logs have none: there the columns are null.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from pyarrow import feather

from bidflow.data.partners import PARTNER_IDS
from bidflow.errors import IngestError

if TYPE_CHECKING:
    from bidflow.data.simulate import Outcomes

ORACLE_SUFFIX: Final = ".oracle.arrow"
ORACLE_P_BID: Final = "oracle_p_bid"
ORACLE_BID_VALUE: Final = "oracle_bid_value"
ORACLE_COLUMNS: Final = (ORACLE_P_BID, ORACLE_BID_VALUE)
ORACLE_SCHEMA: Final = pa.schema([(ORACLE_P_BID, pa.float32()), (ORACLE_BID_VALUE, pa.float32())])


def answer_oracle(
    p_answers: npt.NDArray[np.float64],
    median: npt.NDArray[np.float64],
    sigma: npt.NDArray[np.float64],
    floor: npt.NDArray[np.float64],
    p_bid: npt.NDArray[np.float32],
    bid_value: npt.NDArray[np.float32],
) -> None:
    """Fill ``p_bid`` and ``bid_value`` of a block of calls.

    Args:
        p_answers: P(the partner wants the request and the call neither times out nor errors).
        median: the median of the partner's log-normal CPM for this request.
        sigma: the log-normal's spread.
        floor: the request's floor (0: none); a CPM below it is not returned.
    """
    from scipy.special import ndtr  # here, not at the top: ingest imports this module and never calls it

    with np.errstate(divide="ignore"):
        z = np.log(floor / median) / sigma  # -inf without a floor: every price clears it
    # For a log-normal V = m exp(sigma Z): P(V >= f) = Phi(-z), E[V 1{V >= f}] = m exp(sigma^2 / 2) Phi(sigma - z).
    p_bid[:] = p_answers * ndtr(-z)
    bid_value[:] = p_answers * median * np.exp(0.5 * sigma * sigma) * ndtr(sigma - z)


def oracle_path(log: Path) -> Path:
    """Where the oracle of the log file ``log`` lies (``hour=../auctions.jsonl.gz`` -> ``auctions.oracle.arrow``)."""
    return log.with_name(log.name.split(".")[0] + ORACLE_SUFFIX)


def write_oracle(path: Path, outcomes: Outcomes) -> None:
    """Write one hour's oracle: a row per partner call, in the order the log renders them.

    Calls are keyed by their auction's line in the log (0-based) and the partner, not by auction
    id: the ids would cost the generator more to write than the oracle itself.
    """
    auction = np.repeat(np.arange(len(outcomes.offsets) - 1, dtype=np.int32), np.diff(outcomes.offsets))
    partners = pa.DictionaryArray.from_arrays(pa.array(outcomes.partner, pa.int8()), pa.array(PARTNER_IDS))
    table = pa.table(
        {
            "line": pa.array(auction, pa.int32()),
            "partner": partners,
            ORACLE_P_BID: pa.array(outcomes.p_bid, pa.float32()),
            ORACLE_BID_VALUE: pa.array(outcomes.bid_value, pa.float32()),
        }
    )
    tmp = path.with_suffix(".tmp")
    # Arrow's IPC file, not parquet: the generator writes it at a fraction of parquet's cost (no encodings to choose).
    feather.write_feather(table, tmp, compression="lz4")
    tmp.replace(path)


def attach_oracle(
    calls: pa.Table, log: Path, lines: npt.NDArray[np.int64], calls_per_line: npt.NDArray[np.int64]
) -> pa.Table:
    """``calls`` (ingested rows of ``log``) with the oracle columns: from the file beside it, or null.

    Args:
        calls: the log's ingested calls, auction by auction in the log's order.
        log: the log file.
        lines: the 0-based line of each ingested auction (quarantined lines are absent).
        calls_per_line: how many calls each of those auctions has.

    Raises:
        IngestError: the oracle file exists but does not match the log's calls.
    """
    path = oracle_path(log)
    if not path.exists():
        nulls = [pa.nulls(calls.num_rows, field.type) for field in ORACLE_SCHEMA]
        return _with_columns(calls, nulls)
    oracle = feather.read_table(path)
    line = oracle["line"].to_numpy()
    starts = np.searchsorted(line, lines, side="left")
    stops = np.searchsorted(line, lines, side="right")
    # Auction k's calls are the oracle's rows starts[k] .. stops[k] - 1, in the order ingest holds them.
    offsets = np.cumsum(calls_per_line) - calls_per_line
    rows = pa.array(np.repeat(starts - offsets, calls_per_line) + np.arange(calls.num_rows))
    matched = np.array_equal(stops - starts, calls_per_line) and (
        oracle["partner"].take(rows).cast(pa.string()).combine_chunks().equals(calls["partner"].combine_chunks())
    )
    if not matched:
        raise IngestError(
            "the oracle beside the log does not match its partner calls",
            where=path,
            expected=f"a row for each of the {calls.num_rows:,} calls, line by line and partner by partner",
            got=f"{oracle.num_rows:,} rows that do not line up with them",
            hint="regenerate the hour with `bidflow simulate`, or delete the oracle file",
        )
    return _with_columns(calls, [oracle[name].take(rows).combine_chunks() for name in ORACLE_COLUMNS])


def _with_columns(calls: pa.Table, columns: list[pa.Array]) -> pa.Table:
    for field, column in zip(ORACLE_SCHEMA, columns, strict=True):
        calls = calls.append_column(field, column)
    return calls
