"""Which features moved a drifted model's scores: contributions of recent traffic against the reference's.

A drift report says which *inputs* moved; a user who is paged wants to know what moved the
*scores*. TreeSHAP contributions add up to the margin, so the change of a feature's mean
contribution between the reference window (held-out rows at training time, written beside the
drift reference: ``REFERENCE_FILE``) and the drifted window is the share of the moved mean score that
feature accounts for. The monitor keeps the latest requests each role served (``explain.drift_requests``),
and when it rolls a canary back or raises a champion alert it asks the model server that served
them to explain them (its ``:explain`` route, every contribution) and compares.

Where the servers are: ``monitor.explain_urls`` (role -> base URL; on KServe, the revision tags'
URLs), by default the local router, which sends an explain request to the role its
``x-bidflow-role`` header names. Attribution never stops an action: when the server cannot be
reached or the reference has no contributions, the action goes ahead and the record says why there
is no attribution.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from bidflow.errors import MonitorError

if TYPE_CHECKING:
    from bidflow.config import Config

REFERENCE_FILE: Final = "contributions.json"  # beside a version's fitted detector
ROLE_HEADER: Final = "x-bidflow-role"  # the local router's (bidflow.deploy.router.ROLE_HEADER)
# The model servers' (bidflow.serving.explanations.TOP_HEADER, not imported: the monitor's environment has no kserve).
TOP_HEADER: Final = "x-bidflow-explain-top"
_TIMEOUT_S: Final = 5.0
_CHUNK: Final = 64  # instances per explain call (the bid filter's default ``max_auctions``)


@dataclass(frozen=True)
class ReferenceContributions:
    """Mean contribution per feature over a model's held-out rows.

    Attributes:
        rows: rows they were averaged over.
        base_value: the model's base value (its expected margin).
        means: feature (as explanations name it) -> mean contribution (log-odds).
    """

    rows: int
    base_value: float
    means: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "base_value": self.base_value, "means": self.means}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReferenceContributions:
        return cls(int(data["rows"]), float(data["base_value"]), {str(k): float(v) for k, v in data["means"].items()})


def write_reference_contributions(found: ReferenceContributions, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(found.to_json(), indent=1) + "\n", encoding="utf-8")


def read_reference_contributions(path: Path) -> ReferenceContributions:
    """The reference contributions at ``path``.

    Raises:
        MonitorError: no file, or not one written by ``write_reference_contributions``.
    """
    try:
        return ReferenceContributions.from_json(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError as exc:
        raise MonitorError("no reference contributions for this model version", where=path,
                           hint="deploying a version writes them beside its drift reference") from exc  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise MonitorError("reference contributions are not readable", where=path, got=repr(exc)[:200]) from exc


def explain_url(config: Config, role: str) -> str:
    """The base URL explain requests for ``role`` go to (``monitor.explain_urls``, else the local router)."""
    configured = config.monitor.explain_urls.get(role)  # type: ignore[call-overload]
    if configured:
        return str(configured).rstrip("/")
    return f"http://{config.canary.host}:{config.canary.router_port}"


def current_means(
    base_url: str, model_name: str, role: str, requests: Sequence[Mapping[str, Any]], timeout_s: float = _TIMEOUT_S
) -> tuple[int, dict[str, float]]:
    """Explain ``requests`` (v1 bodies the role served) on its server: (rows explained, mean contribution per feature).

    ``timeout_s`` bounds the whole window, not each call: when it runs out after some calls, the
    rows explained so far stand for the window.

    Raises:
        MonitorError: the server cannot be reached, refuses, or answers something that is not an explanation.
    """
    instances = [instance for body in requests for instance in body.get("instances", ())]
    totals: dict[str, float] = {}
    rows = 0
    deadline = time.monotonic() + timeout_s  # for the whole window: a rollback waits on it
    for start in range(0, len(instances), _CHUNK):
        left = deadline - time.monotonic()
        if left <= 0:
            if rows:
                break  # what was explained in time stands for the window
            raise MonitorError("the model server did not explain the drifted window in time", where=base_url)
        body = json.dumps({"instances": instances[start : start + _CHUNK]}).encode()
        request = urllib.request.Request(
            f"{base_url}/v1/models/{model_name}:explain",
            data=body,
            method="POST",
            headers={"content-type": "application/json", ROLE_HEADER: role, TOP_HEADER: "0"},
        )
        try:
            with urllib.request.urlopen(request, timeout=left) as response:
                answer = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise MonitorError("the model server did not explain the drifted window", where=base_url,
                               got=repr(exc)[:200]) from exc  # fmt: skip
        for explained in _rows(answer):
            rows += 1
            for contribution in explained.get("contributions") or ():
                name, value = str(contribution["feature"]), float(contribution["contribution"])
                totals[name] = totals.get(name, 0.0) + value
    if not rows:
        raise MonitorError("the drifted window had no requests the model server could explain", where=base_url)
    return rows, {name: total / rows for name, total in totals.items()}


def attribute(
    config: Config, role: str, version: str, requests: Sequence[Mapping[str, Any]], reference: ReferenceContributions
) -> dict[str, Any]:
    """The attribution record of a drifted window: which features' contributions shifted most.

    Raises:
        MonitorError: the window could not be explained (see ``current_means``).
    """
    from bidflow.kinds import registered_name
    from bidflow.modeling.explain import shift

    rows, means = current_means(explain_url(config, role), registered_name(config, config.canary.kind), role, requests)
    moved = shift(reference.means, means, config.explain.drift_features)
    moved = [m for m in moved if math.isfinite(float(m["shift"]))]
    mean_margin_shift = float(np.sum([means.get(f, 0.0) - v for f, v in reference.means.items()]))
    return {
        "role": role,
        "version": version,
        "rows": rows,
        "reference_rows": reference.rows,
        "mean_margin_shift": mean_margin_shift,
        "features": moved,
    }


def _rows(answer: Any) -> list[Mapping[str, Any]]:
    """The explained rows of an ``:explain`` answer: per partner (bid filter) or per instance."""
    if not isinstance(answer, dict) or not isinstance(answer.get("explanations"), list):
        raise MonitorError("an explain answer has no 'explanations' list", got=repr(answer)[:120])
    rows: list[Mapping[str, Any]] = []
    for explained in answer["explanations"]:
        partners = explained.get("partners") if isinstance(explained, dict) else None
        if isinstance(partners, list):
            rows.extend(p for p in partners if isinstance(p, dict) and p.get("contributions"))
        elif isinstance(explained, dict) and explained.get("contributions"):
            rows.append(explained)
    return rows
