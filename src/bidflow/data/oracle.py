"""The generator's ground truth for each partner call: what the best possible filter would know.

The generator decides a call's outcome by drawing from probabilities it computes (see
``bidflow.data.partners``): the partner wants the request with probability ``p_wants``, draws a
log-normal CPM around ``median`` with spread ``sigma`` and returns it only at or above the floor,
and independently the call times out or errors. The oracle is those probabilities, not the draw:

* ``p_bid``: P(the call returns a bid) = p_wants x (1 - P(timeout or error)) x P(CPM >= floor);
* ``bid_value``: E[price x 1{bid}], the CPM a call is worth before it is made.

Ranking calls by ``p_bid`` (or ``bid_value``) is the best any model can do on this market, so a
filter's calls saved at a bid recall, as a share of the oracle's, says how far from its limit it is.

The oracle is written beside each hourly log (``<name>.oracle.parquet``), keyed by auction id and
partner; ingest keeps it in its own columns (``ORACLE_COLUMNS``), and no feature service, model or
server reads them. Real logs have none: there the columns are null.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from scipy.special import ndtr

from bidflow.data.partners import PARTNER_IDS
from bidflow.errors import IngestError

if TYPE_CHECKING:
    from bidflow.data.simulate import Outcomes

ORACLE_SUFFIX: Final = ".oracle.parquet"
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
    with np.errstate(divide="ignore"):
        z = (np.log(floor) - np.log(median)) / sigma  # -inf without a floor: every price clears it
    # For a log-normal V = m exp(sigma Z): P(V >= f) = Phi(-z), E[V 1{V >= f}] = m exp(sigma^2 / 2) Phi(sigma - z).
    p_bid[:] = p_answers * ndtr(-z)
    bid_value[:] = p_answers * median * np.exp(0.5 * sigma * sigma) * ndtr(sigma - z)


def oracle_path(log: Path) -> Path:
    """Where the oracle of the log file ``log`` lies (``hour=../auctions.jsonl.gz`` -> ``auctions.oracle.parquet``)."""
    return log.with_name(log.name.split(".")[0] + ORACLE_SUFFIX)


def write_oracle(path: Path, id_prefix: str, outcomes: Outcomes) -> None:
    """Write one hour's oracle, keyed as the log renders its calls (auction id, partner)."""
    auction = np.repeat(np.arange(len(outcomes.offsets) - 1), np.diff(outcomes.offsets))
    ids = pc.binary_join_element_wise(id_prefix, pc.cast(pa.array(auction), pa.string()), "")
    partners = pa.DictionaryArray.from_arrays(pa.array(outcomes.partner, pa.int8()), pa.array(PARTNER_IDS))
    table = pa.table(
        {
            "auction_id": ids,
            "partner": partners,
            ORACLE_P_BID: pa.array(outcomes.p_bid, pa.float32()),
            ORACLE_BID_VALUE: pa.array(outcomes.bid_value, pa.float32()),
        }
    )
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)


def attach_oracle(calls: pa.Table, log: Path) -> pa.Table:
    """``calls`` (ingested rows of ``log``) with the oracle columns: from the file beside it, or null.

    Raises:
        IngestError: the oracle file exists but does not cover every call of the log.
    """
    path = oracle_path(log)
    if not path.exists():
        nulls = [pa.nulls(calls.num_rows, field.type) for field in ORACLE_SCHEMA]
        return _with_columns(calls, nulls)
    oracle = pq.read_table(path)
    oracle = oracle.set_column(1, "partner", oracle["partner"].cast(pa.string()))
    index = pa.table({"auction_id": calls["auction_id"], "partner": calls["partner"]}).append_column(
        "_row", pa.array(np.arange(calls.num_rows, dtype=np.int64))
    )
    joined = index.join(oracle, keys=["auction_id", "partner"], join_type="left outer").sort_by("_row")
    missing = joined[ORACLE_P_BID].null_count
    if missing:
        raise IngestError(
            "the oracle beside the log does not cover every partner call",
            where=path,
            expected=f"a row for each of the {calls.num_rows:,} calls",
            got=f"{missing:,} calls without one",
            hint="regenerate the hour with `bidflow simulate`, or delete the oracle file",
        )
    return _with_columns(calls, [joined[name].combine_chunks() for name in ORACLE_COLUMNS])


def _with_columns(calls: pa.Table, columns: list[pa.Array]) -> pa.Table:
    for field, column in zip(ORACLE_SCHEMA, columns, strict=True):
        calls = calls.append_column(field, column)
    return calls
