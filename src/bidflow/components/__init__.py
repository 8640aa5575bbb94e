"""Kubeflow Pipelines v2 components: one module per component, each a thin wrapper over the core.

Every component is a lightweight Python component whose body imports ``bidflow`` and calls one
core step (``bidflow.data``, ``bidflow.features``, ``bidflow.modeling.steps``); no logic lives here.
They all run on ONE image built from this repository (``components/Dockerfile``), tagged with the
package version (``COMPONENT_IMAGE``), which has bidflow and its locked dependencies installed. So
no component uses ``packages_to_install``, and ``install_kfp_package=False`` keeps KFP from
pip-installing itself before each task -- on a cluster the image already has it, and under
``kfp.local``'s SubprocessRunner that install would go into the running virtual environment.

Docstrings are Google style, and KFP shows them: inputs under ``Args:``, output artifacts and the
return value (``Output``) under ``Returns:``, which is where KFP reads output descriptions from.

Configuration arrives as the ``config`` parameter: the text of a ``bidflow.yaml`` (empty: the
defaults), read by the same loader as the CLI, so ``BIDFLOW__SECTION__KEY`` environment variables
(from the Kubernetes Secrets the pipelines attach) override it exactly as they do on a laptop.
"""

from bidflow.components._base import COMPONENT_IMAGE, IMAGE_REPOSITORY, MONITOR_IMAGE, component, monitor_component

__all__ = ["COMPONENT_IMAGE", "IMAGE_REPOSITORY", "MONITOR_IMAGE", "component", "monitor_component"]
