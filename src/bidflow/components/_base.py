"""The decorator every bidflow component uses: the shared image, no pip installs at run time."""

from collections.abc import Callable
from typing import Any, Final

from kfp import dsl

from bidflow import __version__

IMAGE_REPOSITORY: Final = "ghcr.io/bidflow/bidflow-components"
COMPONENT_IMAGE: Final = f"{IMAGE_REPOSITORY}:{__version__}"


def component(func: Callable[..., Any]) -> Any:
    """``@dsl.component`` on the bidflow image, with neither KFP nor any package installed at run time.

    ``bidflow pipeline compile --image`` (``bidflow.pipelines.compile.compile_pipeline``) swaps the
    image of every task in the compiled YAML, for a registry other than the default one.

    Args:
        func: the component function (typed parameters, KFP artifact annotations, Google docstring).

    Returns:
        The KFP ``PythonComponent``.
    """
    return dsl.component(func, base_image=COMPONENT_IMAGE, install_kfp_package=False)


MONITOR_IMAGE: Final = f"ghcr.io/bidflow/bidflow-monitor:{__version__}"


def monitor_component(func: Callable[..., Any]) -> Any:
    """A component on the drift monitor's image (``monitor/Dockerfile``: alibi-detect's own environment).

    The one step that needs alibi-detect (fitting detectors) runs there in a cluster; locally its body
    hands the work to ``.venv-monitor`` (``bidflow.deploy.steps.fit_detector``).
    """
    return dsl.component(func, base_image=MONITOR_IMAGE, install_kfp_package=False)
