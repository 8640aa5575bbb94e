"""The capacity plan (docs/CAPACITY.md), computed from measured benchmark rows and stated assumptions.

Every figure of the plan is either a row of bench/README.md's results table (named below, read by its
benchmark name) or one of the ``Assumptions`` here, so the plan is rewritten, never edited: rerun the
benchmarks it reads (``make bench-crossover`` runs the crossover and the online-memory rows and then
this), and ``python -m bench.capacity`` writes docs/CAPACITY.md again.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "bench" / "README.md"
OUT = ROOT / "docs" / "CAPACITY.md"

# The rows the plan reads (bench/README.md, column "benchmark").
SERVING_ROW: Final = "serving bidflow redis, 30 partners, default-trained model, 2 workers, 4,000/s offered"
FLOOR_ROW: Final = "serving kserve no-op model, 4,000/s offered"
BID_MEMORY_ROW: Final = "online memory: bid_filter bytes per entity key (Redis)"
FRAUD_MEMORY_ROW: Final = "online memory: fraud bytes per entity key (Redis)"
FRAUD_SERVING_ROW: Final = "fraud serving, 1 click per request c=8"


@dataclass(frozen=True)
class Assumptions:
    """What the plan assumes (each printed in the plan beside the figures it drives)."""

    impressions_per_month: float = 7e9  # the figure a user gave; one auction per impression
    partners_per_auction: float = 20.0  # partner calls per auction: the middle of the 10-30 users report
    peak_to_average: float = 2.5  # the busiest hour's traffic over the day's average
    target_utilization: float = 0.6  # CPU a serving pod is scaled to (headroom for bursts and a lost zone)
    min_pods_per_role: int = 2  # champion and canary each keep two pods (a node can go)
    pod_cpu: float = 1.0  # vCPU requested per model-server pod
    publishers: int = 50_000  # distinct publishers (the generator has 400); keys grow with them, not traffic
    click_through_rate: float = 0.005  # clicks per impression, for the fraud kind's click stream
    key_ttl_days: float = 2.0  # stream.key_ttl_s: how long a velocity key lives after its last click
    redis_headroom: float = 2.0  # fragmentation, the write buffer and a forked save, over the data itself
    retrain_window_days: float = 1.0  # a retraining run reads one day of partner calls ...
    training_sample: float = 0.01  # ... of which a uniform sample trains (every call still builds features)
    retrain_executors: int = 8  # Spark executors of a retraining run at 7 billion impressions (x10 at 10x)
    node_vcpu: int = 4  # m7i.xlarge: 4 vCPU, 16 GiB (serving nodes and Spark executors)
    node_price: float = 0.2016  # USD per hour, m7i.xlarge, Linux, on demand, us-east-1
    redis_node_gib: int = 16  # r7i.large: 2 vCPU, 16 GiB
    redis_node_price: float = 0.1323  # USD per hour, r7i.large, Linux, on demand, us-east-1
    control_plane_price: float = 0.10  # USD per hour, one EKS cluster
    spot_share: float = 0.35  # spot price as a share of on demand (varies by zone and hour)
    machine_gib: float = 24.0  # the machine the crossover ran on
    memory_budget: float = 0.8  # of its memory a step may use (bench_crossover.MEMORY_BUDGET)
    price_list: str = (
        "AWS EC2 and EKS list prices, Linux, on demand, us-east-1, as published on aws.amazon.com/ec2/pricing "
        "(not fetched by this code: the machine that runs it has no internet; check before budgeting)"
    )


def rows(readme: Path = README) -> dict[str, tuple[str, str]]:
    """The results table: benchmark name -> (result cell, detail cell)."""
    found: dict[str, tuple[str, str]] = {}
    for line in readme.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) >= 4 and cells[0] not in {"benchmark", "name"}:
            found[cells[0]] = (cells[1], cells[3])
    return found


def number(text: str) -> float:
    """The first number of a cell (thousands separators allowed)."""
    match = re.search(r"-?[\d,]*\.?\d+", text)
    if match is None:
        raise ValueError(f"no number in {text!r}")
    return float(match.group(0).replace(",", ""))


def cpu_us(detail: str) -> float:
    """The ``CPU N µs/request`` of a serving row's detail."""
    match = re.search(r"CPU ([\d,.]+) µs/request", detail)
    if match is None:
        raise ValueError(f"no CPU figure in {detail!r}")
    return float(match.group(1).replace(",", ""))


def per_core(detail: str) -> float:
    """The ``N rows/s per core`` of a crossover row's detail."""
    match = re.search(r"([\d,]+) rows/s per core", detail)
    if match is None:
        raise ValueError(f"no rows/s per core in {detail!r}")
    return float(match.group(1).replace(",", ""))


def largest_spark_run(found: dict[str, tuple[str, str]]) -> int:
    """The largest scale the crossover ran through Spark end to end."""
    scales = [int(m.group(1)) for name in found if (m := re.match(r"crossover (\d+)x: spark ingest -> ", name))]
    if not scales:
        raise ValueError("no crossover row of a whole Spark run: run `make bench-crossover` first")
    return max(scales)


def render(found: dict[str, tuple[str, str]], a: Assumptions = Assumptions()) -> str:
    auctions_s = a.impressions_per_month / (30 * 86_400)
    serving_us = cpu_us(found[SERVING_ROW][1])
    floor_us = cpu_us(found[FLOOR_ROW][1])
    fraud_us = number(found[FRAUD_SERVING_ROW][0])
    bid_bytes, fraud_bytes = number(found[BID_MEMORY_ROW][0]), number(found[FRAUD_MEMORY_ROW][0])
    bid_keys_measured = number(found[BID_MEMORY_ROW][1])
    fraud_detail = found[FRAUD_MEMORY_ROW][1]
    fraud_keys_measured = number(fraud_detail)
    fraud_clicks_measured = number(fraud_detail.split(";", 1)[1])
    keys_per_click = fraud_keys_measured / fraud_clicks_measured
    scale = largest_spark_run(found)
    steps = ("ingest", "features", "training set", "train")
    spark = {step: per_core(found[f"crossover {scale}x: spark {step}"][1]) for step in steps}
    pandas_scales = [int(m.group(1)) for n in found if (m := re.match(r"crossover (\d+)x: pandas ingest -> ", n))]
    pandas_stop = [n for n in found if re.match(r"crossover \d+x: pandas not run", n)]

    lines = [
        "# Capacity plan",
        "",
        f"Written by `python -m bench.capacity` on {datetime.now(UTC):%Y-%m-%d} from the measured rows of "
        "[bench/README.md](../bench/README.md) (named in each section) and the assumptions listed at the end; "
        "rerun the benchmarks, then this, to refresh it. Measured on one 2-core machine: per-core figures are "
        "taken to carry over to EKS nodes of the same CPU generation, which is itself an assumption. Not counted: "
        "the ingress and traffic-splitting layer in front of the model servers (Knative/Istio on EKS), the drift "
        "monitor, MLflow, the Feast registry and Kubeflow itself.",
        "",
    ]
    for label, factor in (("7 billion impressions a month", 1), ("70 billion impressions a month (10x)", 10)):
        rate = auctions_s * factor
        peak = rate * a.peak_to_average
        cores = peak * serving_us / 1e6 / a.target_utilization
        pods = max(math.ceil(cores / a.pod_cpu), a.min_pods_per_role) + a.min_pods_per_role  # + the canary's
        calls_day = rate * 86_400 * a.partners_per_auction
        bid_keys = a.publishers * 30 + a.publishers + bid_keys_measured  # partner x publisher, publisher, slices
        clicks_day = rate * 86_400 * a.click_through_rate
        fraud_keys = keys_per_click * clicks_day * a.key_ttl_days
        redis_gib = (bid_keys * bid_bytes + fraud_keys * fraud_bytes) * a.redis_headroom / 2**30
        redis_nodes = 2 * max(1, math.ceil(redis_gib / (a.redis_node_gib * 0.75)))  # primary + replica
        feature_h = calls_day / spark["ingest"] / 3600 + calls_day / spark["features"] / 3600
        sampled = calls_day * a.retrain_window_days * a.training_sample
        set_h = sampled / spark["training set"] / 3600
        train_h = sampled / spark["train"] / 3600
        spark_core_h = feature_h + set_h + train_h
        executors = a.retrain_executors * factor
        retrain_min = (set_h + train_h) * 60 / (executors * a.node_vcpu)
        fraud_cores = clicks_day / 86_400 * a.peak_to_average * fraud_us / 1e6 / a.target_utilization
        fraud_pods = max(math.ceil(fraud_cores / a.pod_cpu), a.min_pods_per_role)
        serving_nodes = math.ceil((pods + fraud_pods) * a.pod_cpu / (a.node_vcpu * 0.9))
        hourly = serving_nodes * a.node_price + redis_nodes * a.redis_node_price + a.control_plane_price
        spark_day = spark_core_h / a.node_vcpu * a.node_price
        month = hourly * 730 + spark_day * 30
        month_spot = (serving_nodes * a.node_price * a.spot_share + redis_nodes * a.redis_node_price
                      + a.control_plane_price) * 730 + spark_day * a.spot_share * 30  # fmt: skip
        lines += [
            f"## {label}",
            "",
            f"{rate:,.0f} auctions/s on average, {peak:,.0f}/s in the peak hour; {calls_day / 1e9:,.2f} billion "
            f"partner calls a day.",
            "",
            "| what | how many | from |",
            "|---|---|---|",
            f"| bid-filter model-server pods | {pods} ({cores:,.1f} cores at the peak) | {serving_us:.0f} µs of "
            f"server CPU per auction (row `{SERVING_ROW}`; the no-op KServe floor is {floor_us:.0f} µs, row "
            f"`{FLOOR_ROW}`) x the peak rate / {a.target_utilization:.0%} utilization, {a.pod_cpu:g} vCPU a pod, "
            f"plus {a.min_pods_per_role} canary pods |",
            f"| serving nodes (m7i.xlarge) | {serving_nodes} | both kinds' pods x {a.pod_cpu:g} vCPU / "
            f"{a.node_vcpu} vCPU at 90 % allocatable |",
            f"| Redis online store | {redis_gib:,.1f} GiB on {redis_nodes} r7i.large (primary + replica) | "
            f"bid filter {bid_keys:,.0f} keys x {bid_bytes:.0f} B (row `{BID_MEMORY_ROW}`; keys = {a.publishers:,} "
            f"publishers x 30 partners + publishers + the slices measured) + fraud {fraud_keys:,.0f} keys x "
            f"{fraud_bytes:.0f} B (row `{FRAUD_MEMORY_ROW}`: {keys_per_click:.2f} keys per click in the sample, an "
            f"upper bound: a sample thins repeat IPs; {clicks_day:,.0f} clicks a day kept {a.key_ttl_days:g} days), "
            f"x {a.redis_headroom:g} headroom |",
            f"| Spark executor core-hours a day | {spark_core_h:,.0f} | ingest and features over the day's calls "
            f"at {spark['ingest']:,.0f} and {spark['features']:,.0f} rows/s per core, a training set and a training "
            f"run over a {a.training_sample:.0%} sample of {a.retrain_window_days:g} day at "
            f"{spark['training set']:,.0f} and {spark['train']:,.0f} rows/s per "
            f"core (rows `crossover {scale}x: spark ingest / features / training set / train`, local mode) |",
            f"| retraining (training set + train) | {retrain_min:,.0f} min on {executors} executors of "
            f"{a.node_vcpu} cores | the same rows/s per core, spread over the executors (no allowance for "
            "shuffle across machines, which local mode does not have) |",
            f"| fraud model-server pods | {fraud_pods} | {fraud_us:.0f} µs of server CPU per scored click (row "
            f"`{FRAUD_SERVING_ROW}`) x {clicks_day / 86_400 * a.peak_to_average:,.0f} clicks/s at the peak: the "
            f"floor of {a.min_pods_per_role} pods holds it |",
            f"| cost a month, on demand | ${month:,.0f} | serving nodes and Redis all month, the EKS control "
            "plane, Spark nodes for the core-hours above (prices: see the assumptions) |",
            f"| cost a month, spot for serving nodes and Spark | ${month_spot:,.0f} | spot at "
            f"{a.spot_share:.0%} of on demand (an assumption), Redis and the control plane on demand |",
            "",
        ]
    largest = max(pandas_scales) if pandas_scales else 0
    where = ""
    if largest:
        detail = found[f"crossover {largest}x: pandas ingest -> features -> training set -> train"][1]
        rows_then = number(detail)
        peak = float(re.search(r"peak ([\d.]+) GiB", detail).group(1))  # type: ignore[union-attr]
        limit = a.memory_budget * a.machine_gib / (peak / largest)
        where = (f" Its peak memory grows with the rows ({peak:.2f} GiB at {largest}x, {rows_then:,.0f} partner "
                 f"calls), so within {a.memory_budget:.0%} of this machine's {a.machine_gib:g} GiB it stops fitting "
                 f"near {limit:.0f}x the default data (about {rows_then * limit / largest / 1e6:,.0f} million partner "
                 "calls).")  # fmt: skip
    lines += [
        "## Where pandas stops",
        "",
        f"The crossover ran pandas end to end at {', '.join(f'{s}x' for s in sorted(pandas_scales)) or 'no scale'} "
        "the default data"
        + (f"; {'; '.join(pandas_stop)} (projected from its peak memory)." if pandas_stop else ".")
        + where
        + " Past that, and for any volume of the sizes above, the offline steps run with `engine: spark`.",
        "",
        "## Assumptions",
        "",
        *(f"- `{name}` = {value}" for name, value in vars(a).items()),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(render(rows()), encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
