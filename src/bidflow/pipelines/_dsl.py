"""``@dsl.pipeline`` with a type mypy can check (kfp ships no type information)."""

from collections.abc import Callable
from typing import Any

from kfp import dsl


def pipeline(name: str, description: str) -> Callable[[Callable[..., Any]], Any]:
    """``@dsl.pipeline(name=..., description=...)``; the decorated function becomes a KFP ``GraphComponent``."""
    decorator: Callable[[Callable[..., Any]], Any] = dsl.pipeline(name=name, description=description)
    return decorator
