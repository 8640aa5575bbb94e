"""Named drift scenarios: what changes in the market, from a given hour on.

Each scenario maps the baseline ``MarketConditions`` to drifted ones. They are chosen to
exercise different monitors:

- ``partner_retarget``: two partners change targeting (``atlas`` stops buying phones and
  doubles down on video, ``harbor`` leaves the US). The request stream is unchanged; only
  the labels move, which only online bid recall on the exploration share can see.
- ``device_shift``: the device mix swings to connected TV and tablets (feature drift in
  device type, OS, ad size, format).
- ``publisher_flood``: a publisher nobody has seen before sends 35 % of all traffic with
  almost no floor and partners bid rarely on it (new category values, floor drift).
- ``floor_hike``: every publisher raises floors 2.5x (numeric drift, fewer bids).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Final

import numpy as np
import numpy.typing as npt

from bidflow.config import ScenarioName
from bidflow.data.partners import PARTNERS, PartnerProfile
from bidflow.data.world import DEVICE_MIX, FORMAT_MIX


@dataclass(frozen=True)
class MarketConditions:
    device_mix: npt.NDArray[np.float64] = field(default_factory=lambda: DEVICE_MIX.copy())
    format_mix: npt.NDArray[np.float64] = field(default_factory=lambda: FORMAT_MIX.copy())
    floor_multiplier: float = 1.0
    flood_share: float = 0.0
    partners: tuple[PartnerProfile, ...] = PARTNERS


BASELINE: Final = MarketConditions()


def conditions_for(scenario: ScenarioName) -> MarketConditions:
    """The market under ``scenario`` once it is switched on."""
    if scenario == "none":
        return BASELINE
    if scenario == "partner_retarget":
        retargeted = {
            "atlas": lambda p: replace(p, devices={"phone": 0.05}, formats={"video": 2.5, "banner": 0.4}),
            "harbor": lambda p: replace(p, countries={"USA": 0.0}),
        }
        return replace(BASELINE, partners=tuple(retargeted.get(p.id, lambda q: q)(p) for p in PARTNERS))
    if scenario == "device_shift":
        device_mix = np.array([[0.10, 0.30, 0.40, 0.20], [0.00, 0.30, 0.35, 0.35], [0.0, 0.0, 0.0, 1.0]])
        format_mix = np.array([[0.45, 0.45, 0.08, 0.02], [0.40, 0.52, 0.07, 0.01], [0.30, 0.70, 0.0, 0.0]])
        return replace(BASELINE, device_mix=device_mix, format_mix=format_mix)
    if scenario == "publisher_flood":
        return replace(BASELINE, flood_share=0.35)
    if scenario == "floor_hike":
        return replace(BASELINE, floor_multiplier=2.5)
    raise AssertionError(f"unhandled scenario {scenario}")  # Literal type keeps this unreachable
