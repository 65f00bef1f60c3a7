"""Adapters to the external systems: the MLflow store and registry (``tracking``), what a run
records beyond params and metrics (``recording``), version descriptions and the champion as the
gate sees it (``registry``), the promotion lock (``locks``), killed runs swept up (``sweep``), the
guarded model as an MLflow pyfunc (``pyfunc``), registered models loaded back (``registered``),
Prefect's task runner, result cache, logger, server and flow runs (``runner``, ``caching``,
``log``, ``prefect_server``, ``flow_runs``), and what retries a task (``retries``)."""
