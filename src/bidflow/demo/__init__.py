"""``bidflow demo``: the whole loop on generated data (``run``), its services and its report."""

from bidflow.demo.run import DEMO_DIR, DemoOutcome, run_demo

__all__ = ["DEMO_DIR", "DemoOutcome", "run_demo"]
