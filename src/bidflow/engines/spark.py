"""The Spark session every ``engine: spark`` step runs on, built from the ``spark:`` section.

One place sets what the steps rely on: UTC session time (feature rows are stamped on UTC hour ends
and a local time zone would shift them), parquet timestamps as microseconds (what pyarrow and Feast's
file store read back without INT96 conversions), and Arrow for the few small frames that cross to
pandas (a validation window, category counts).
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import TYPE_CHECKING, Final

from bidflow.errors import EngineError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from bidflow.config import SparkConfig

# Settings the steps' correctness depends on; spark.conf may add to them, not silently undo them.
REQUIRED_CONF: Final = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}


def session_conf(cfg: SparkConfig) -> dict[str, str]:
    """Every Spark setting of a session for ``cfg`` (the required ones, the typed ones, then ``conf``).

    Raises:
        EngineError: ``conf`` changes a required setting.
    """
    clashes = sorted(k for k, v in cfg.conf.items() if k in REQUIRED_CONF and v != REQUIRED_CONF[k])
    if clashes:
        raise EngineError(
            "spark.conf changes a setting bidflow's Spark steps depend on",
            where="spark.conf",
            expected=", ".join(f"{k}={REQUIRED_CONF[k]}" for k in clashes),
            got=", ".join(f"{k}={cfg.conf[k]}" for k in clashes),
            hint="remove these keys from spark.conf",
        )
    return (
        dict(REQUIRED_CONF)
        | {"spark.driver.memory": cfg.driver_memory, "spark.sql.shuffle.partitions": str(cfg.shuffle_partitions)}
        | dict(cfg.conf)
    )


def spark_session(cfg: SparkConfig) -> SparkSession:
    """The active Spark session, or a new one for ``cfg``.

    An active session is reused as it is (Spark allows one per driver process; a test or a cluster
    launcher may have configured it), except that the required settings are applied to it.

    Raises:
        EngineError: pyspark or a Java runtime is missing, or the JVM does not start.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise EngineError("engine: spark needs pyspark", hint="install bidflow from uv.lock (make setup)") from exc
    active = SparkSession.getActiveSession()
    if active is not None:
        for key, value in REQUIRED_CONF.items():
            active.conf.set(key, value)
        return active
    if shutil.which("java") is None:
        raise EngineError(
            "engine: spark needs a Java runtime on PATH",
            expected="Java 17 or later (Spark 4)",
            got="no `java` executable",
            hint="install a JDK 17 (Debian: openjdk-17-jre-headless) or set engine: pandas",
        )
    if cfg.master.startswith("local"):
        # Local Python workers must run this interpreter (its packages, bidflow among them); PySpark
        # reads the choice from the environment only, and would otherwise start whatever `python3` is.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.master(cfg.master).appName(cfg.app_name)
    for key, value in session_conf(cfg).items():
        builder = builder.config(key, value)
    try:
        return builder.getOrCreate()
    except Exception as exc:  # py4j and the JVM launcher raise their own types; the user must see why
        raise EngineError(
            "the Spark session did not start",
            where=f"spark.master={cfg.master}",
            got=f"{type(exc).__name__}: {exc}"[:400],
        ) from exc
