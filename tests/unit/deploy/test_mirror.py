"""Deployment transitions mirrored in the MLflow registry: champion, canary, rolled-back versions."""

from __future__ import annotations

import uuid

import pandas as pd

from bidflow.config import Config, RegistryConfig
from bidflow.deploy.backend import DeploymentState, ModelVersion
from bidflow.deploy.canary import registry_mirror
from bidflow.deploy.journal import Transition
from bidflow.modeling import registry
from bidflow.modeling.train import TrainedModel
from tests.unit.modeling.test_registry import _log


def test_aliases_and_rollback_tags_follow_the_deployment(
    registry_cfg: RegistryConfig, trained: TrainedModel, split_rows: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    name = f"bid_filter_{uuid.uuid4().hex[:8]}"
    refs = [_log(registry_cfg, trained, split_rows[1], name) for _ in range(3)]
    v1, v2, v3 = (ModelVersion(name, r.version, f"models:/{name}/{r.version}") for r in refs)
    mirror = registry_mirror(Config(registry=registry_cfg))

    mirror(DeploymentState(champion=v1), [])
    assert registry.champion(registry_cfg, name).version == "1"  # type: ignore[union-attr]

    canary_live = DeploymentState(champion=v1, canary=v2, canary_percent=20)
    mirror(canary_live, [])
    assert registry.resolve(registry_cfg, name, registry.CANARY).version == "2"

    # v2 rolled back: no canary alias, tagged with the reason, last_rolled_back points at it.
    rolled = [Transition("rollback", v2, "monitor", reasons=("drift in the canary's traffic: os",))]
    mirror(DeploymentState(champion=v1), rolled)
    aliases = {r.version: r.aliases for r in registry.versions(registry_cfg, name)}
    assert registry.CANARY not in sum(aliases.values(), ())
    assert registry.LAST_ROLLED_BACK in aliases["2"]
    v2_ref = registry.resolve(registry_cfg, name, "2")
    assert v2_ref.tags["deploy.rolled_back"] == "true"
    assert "drift" in v2_ref.tags["deploy.rollback_reason"]

    # v3 promoted: champion moves, v1 keeps its version, the rollback record stays.
    promoted = [*rolled, Transition("promote", v3, "analysis")]
    mirror(DeploymentState(champion=v3), promoted)
    assert registry.champion(registry_cfg, name).version == "3"  # type: ignore[union-attr]
    assert registry.resolve(registry_cfg, name, "2").tags["deploy.rolled_back"] == "true"
    # Mirroring is idempotent: running it again changes nothing.
    before = {r.version: (r.aliases, r.tags) for r in registry.versions(registry_cfg, name)}
    mirror(DeploymentState(champion=v3), promoted)
    assert before == {r.version: (r.aliases, r.tags) for r in registry.versions(registry_cfg, name)}


def test_models_served_from_folders_are_not_mirrored(registry_cfg: RegistryConfig) -> None:
    folder = ModelVersion("bid_filter", "1", "/tmp/model-folder")
    registry_mirror(Config(registry=registry_cfg))(DeploymentState(champion=folder), [])  # no registry call
