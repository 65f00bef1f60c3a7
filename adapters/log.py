"""The run logger of the current Prefect flow or task run, or a plain one outside any run
(``task.fn(...)`` in tests and notebooks)."""

from __future__ import annotations

import logging

from prefect.exceptions import MissingContextError
from prefect.logging import get_logger, get_run_logger


def logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except MissingContextError:
        return get_logger("robustops.tasks")
