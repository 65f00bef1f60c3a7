"""Adapters to the external systems: the MLflow store and registry (``tracking``), the guarded
model as an MLflow pyfunc (``pyfunc``), registered models loaded back (``registered``), Prefect's
task runner, result cache, logger and server (``runner``, ``caching``, ``log``,
``prefect_server``), and what retries a task (``retries``)."""
