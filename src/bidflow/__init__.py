"""bidflow: MLOps for ad-tech, from OpenRTB auction logs to served, monitored models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bidflow")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
