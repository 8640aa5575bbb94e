"""The monitor's environment: alibi-detect 0.13.0 on numpy 1, and the core modules the monitor needs import."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys

import pytest

MONITOR_MODULES = [
    "bidflow.config",
    "bidflow.errors",
    "bidflow.openrtb",
    "bidflow.openrtb.features",
    "bidflow.deploy.backend",
    "bidflow.deploy.journal",
    "bidflow.monitoring",
    "bidflow.monitoring.drift",
    "bidflow.monitoring.fit",
]


def test_pinned_versions() -> None:
    import alibi_detect
    import numpy

    assert alibi_detect.__version__ == "0.13.0"
    assert int(numpy.__version__.split(".")[0]) == 1


@pytest.mark.parametrize("module", MONITOR_MODULES)
def test_core_module_imports(module: str) -> None:
    importlib.import_module(module)


def test_bidflow_modules_import_without_alibi_or_platform_packages() -> None:
    """alibi-detect is imported lazily, and none of the main environment's platform packages are needed."""
    code = (
        "import sys\n"
        f"for m in {MONITOR_MODULES!r}: __import__(m)\n"
        "heavy = [m for m in ('alibi_detect', 'transformers', 'feast', 'kserve', 'mlflow', 'kfp', 'xgboost') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_platform_packages_are_not_installed() -> None:
    # kfp is here on purpose (the fit_drift_detector task runs on this image); it needs no numpy.
    for name in ("feast", "kserve", "mlflow", "isal", "xgboost"):
        assert importlib.util.find_spec(name) is None, f"{name} leaked into the monitor environment"
