"""Execution engines of the offline steps: ``engine: spark`` runs them on a Spark session.

The pandas path (``bidflow.data``, ``bidflow.features``, ``bidflow.modeling``) is the embedded default
and imports nothing from here; every module of this package imports pyspark inside its functions, so
importing it costs nothing when Spark is not used.
"""
