"""The engine settings and the Spark session's configuration, without starting a JVM."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bidflow.config import Config, SparkConfig
from bidflow.engines.spark import REQUIRED_CONF, session_conf
from bidflow.errors import ConfigError, EngineError


def test_engines_default_to_pandas_and_take_spark_per_step_and_kind() -> None:
    default = Config()
    assert (default.ingest.engine, default.features.engine, default.train.engine) == ("pandas", "pandas", "pandas")
    config = Config.model_validate({"features": {"engine": "spark"}, "train": {"ctr": {"engine": "spark"}}})
    assert config.features.engine == "spark"
    assert config.train.for_kind("ctr").engine == "spark" and config.train.for_kind("bid_filter").engine == "pandas"


def test_an_unknown_engine_names_the_key() -> None:
    from bidflow.config import load_config

    with pytest.raises(ConfigError, match=r"features\.engine"):
        load_config(None, environ={"BIDFLOW__FEATURES__ENGINE": "dask"})


def test_session_settings_put_the_required_ones_first_and_refuse_to_undo_them() -> None:
    conf = session_conf(SparkConfig(shuffle_partitions=3, driver_memory="1g", conf={"spark.ui.enabled": "false"}))
    assert conf["spark.sql.shuffle.partitions"] == "3" and conf["spark.driver.memory"] == "1g"
    assert conf["spark.ui.enabled"] == "false"
    assert all(conf[key] == value for key, value in REQUIRED_CONF.items())
    with pytest.raises(EngineError, match=r"spark\.sql\.session\.timeZone"):
        session_conf(SparkConfig(conf={"spark.sql.session.timeZone": "Europe/Paris"}))


def test_the_pandas_path_imports_no_pyspark() -> None:
    code = (
        "import sys\n"
        "import bidflow.cli, bidflow.features.build, bidflow.features.store, bidflow.modeling.steps\n"
        "import bidflow.engines.spark_jobs, bidflow.components.build_features\n"
        "assert not [m for m in sys.modules if m.startswith('pyspark')], 'pyspark imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
