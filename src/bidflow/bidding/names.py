"""The policies' names: one spelling for the configuration, the fit, the CLI and the artifact (no heavy imports)."""

from typing import Final, Literal, get_args

PolicyName = Literal["constant", "linear", "ortb", "planned"]
POLICIES: Final[tuple[PolicyName, ...]] = get_args(PolicyName)
