"""The value function of bidding with a budget (RLB: Cai et al., WSDM 2017).

``V[n][b]`` is the expected number of clicks still to win with ``n`` auctions left and ``b`` budget
left, bidding optimally. With the market-price distribution ``m`` and the value ``theta`` of an
auction (its click probability):

    V[n][b] = V[n-1][b] + E_theta[ max_a sum_{d <= a} m(d) (theta + V[n-1][b-d] - V[n-1][b]) ]

and the optimal bid with ``n`` auctions left, budget ``b`` and an auction of value ``theta`` is the
largest ``a <= min(b, max_bid)`` with ``theta + V[n-1][b-a] - V[n-1][b] >= 0``: bid up to the
price at which winning costs more future clicks than this auction brings.

RLB takes the expectation over ``theta`` at the campaign's average CTR alone (its ``approx_i``);
here it may run over a distribution of ``theta`` (quantile bins of a pCTR sample), which is the
recursion without that approximation. The function is kept as its differences
``D[n][b] = V[n][b+1] - V[n][b]`` in float32: the bid only needs sums of consecutive differences,
and float32 halves the memory of the largest budgets.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

SATURATED = 1e-10  # V within this of its ceiling: a larger budget adds nothing


@njit(cache=True, nogil=True)
def value_differences(
    pdf: npt.NDArray[np.float64],
    thetas: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64],
    auctions: int,
    budget: int,
    max_bid: int,
) -> npt.NDArray[np.float32]:
    """``D[n][b] = V[n][b+1] - V[n][b]`` for n = 0..auctions-1 and b = 0..budget-1.

    Args:
        pdf: market-price probabilities, index = price.
        thetas: auction values, ascending.
        weights: their probabilities (sum 1).
        auctions: the episode length T.
        budget: the episode budget B (whole price units).
        max_bid: the highest bid.
    """
    out = np.zeros((auctions, budget), dtype=np.float32)
    v = np.zeros(budget + 1)
    nv = np.zeros(budget + 1)
    top = min(max_bid, len(pdf) - 1)
    win_all = 0.0
    for d in range(top + 1):
        win_all += pdf[d]
    mean_theta = 0.0
    for k in range(len(thetas)):
        mean_theta += weights[k] * thetas[k]
    ceiling = 0.0
    for n in range(1, auctions):
        ceiling += mean_theta * win_all
        b = 0
        while b <= budget:
            cap = min(b, top)
            d = 0
            gain = 0.0
            mass = 0.0
            total = 0.0
            for k in range(len(thetas)):
                theta = thetas[k]
                while d <= cap and theta + v[b - d] - v[b] >= 0.0:
                    gain += pdf[d] * (v[b - d] - v[b])
                    mass += pdf[d]
                    d += 1
                total += weights[k] * (theta * mass + gain)
            nv[b] = v[b] + total
            if abs(nv[b] - ceiling) < SATURATED:
                for rest in range(b + 1, budget + 1):
                    nv[rest] = ceiling
                break
            b += 1
        for i in range(budget + 1):
            v[i] = nv[i]
        for i in range(budget):
            out[n, i] = v[i + 1] - v[i]
    return out


@njit(cache=True, nogil=True)
def optimal_bid(differences: npt.NDArray[np.float32], left: int, budget: int, theta: float, max_bid: int) -> int:
    """The optimal bid with ``left`` auctions left (this one included) and ``budget`` left.

    The largest ``a <= min(budget, max_bid)`` with ``theta - (V[left-1][budget] - V[left-1][budget-a]) >= 0``.
    Budgets beyond the table (a replica that was given more than the plan) use its last column.
    """
    n = min(max(left, 1), differences.shape[0]) - 1
    width = differences.shape[1]
    cap = min(budget, max_bid)
    value = theta
    a = 0
    for d in range(1, cap + 1):
        j = min(budget - d, width - 1)
        value -= differences[n, j]
        if value >= 0.0:
            a = d
        else:
            break
    return a


def theta_bins(sample: npt.ArrayLike, bins: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """A pCTR sample as ``bins`` equal-mass values (each bin's mean) and their weights, ascending."""
    values = np.sort(np.asarray(sample, dtype=np.float64))
    if len(values) == 0:
        raise ValueError("an empty pCTR sample")
    parts = np.array_split(values, min(bins, len(values)))
    thetas = np.array([p.mean() for p in parts])
    weights = np.array([len(p) for p in parts], dtype=np.float64) / len(values)
    return thetas, weights
