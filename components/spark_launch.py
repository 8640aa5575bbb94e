"""The main file of bidflow's SparkApplications: ``python -m bidflow.engines.spark_jobs`` with the same arguments.

Spark runs a PySpark application from a file (``mainApplicationFile``), not a module; components/Dockerfile copies
this file to /app/spark/launch.py, the path bidflow.deploy.spark_application.LAUNCHER names. Running the module
through runpy (rather than the installed module file itself) keeps the package's directory off sys.path[0].
"""

import runpy

if __name__ == "__main__":
    runpy.run_module("bidflow.engines.spark_jobs", run_name="__main__", alter_sys=True)
