"""Adapters to external systems that more than one flow talks to.

- :mod:`adapters.prefect_server`: whether a Prefect server answers at ``PREFECT_API_URL``, and
  the temporary server a flow run starts when none is named.

MLflow's adapter is ``tasks/tracking.py``.
"""
