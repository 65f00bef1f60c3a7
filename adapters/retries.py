"""When a task is retried: after a blip of the tracking server or the disk, never after an error
that would repeat as it is."""

from __future__ import annotations

from typing import Any

from robustops.errors import PromotionConflict, RobustopsError

# MLflow errors that say the request itself is wrong: the same request fails the same way again.
_DETERMINISTIC = {"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "RESOURCE_ALREADY_EXISTS",
                  "RESOURCE_DOES_NOT_EXIST", "INVALID_STATE", "PERMISSION_DENIED", "UNAUTHENTICATED",
                  "NOT_FOUND", "ENDPOINT_NOT_FOUND", "FEATURE_DISABLED", "NOT_IMPLEMENTED"}  # fmt: skip


def worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a tracking task after a blip, and only then. Not after a robustops error: those
    repeat as they are (a missing model, a corrupt file, an artifact folder that cannot be
    written), and a tracking server that does not answer has already been retried with backoff
    by MLflow's HTTP layer (about 15 s, see ``adapters.tracking.HTTP_RETRIES``), which a task retry
    would only multiply. Not after an MLflow error about the request itself (a bad name, a
    missing version), nor a programming error. A champion that moved while the gate decided is
    retried: the retry decides against the new one."""
    from mlflow.exceptions import MlflowException

    try:
        state.result()
    except PromotionConflict:
        return True
    except RobustopsError:
        return False
    except MlflowException as e:
        return e.error_code not in _DETERMINISTIC
    except (OSError, TimeoutError):  # a connection or a file that may work on the next try
        return True
    except Exception as e:  # noqa: BLE001 - a database that was busy, or a bug: only the first retries
        return "locked" in str(e).lower() or "busy" in str(e).lower()
    return False


RETRY = {"retries": 3, "retry_delay_seconds": [1, 2, 4], "retry_condition_fn": worth_retrying}


def is_io_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only I/O failures; a validation error will fail the same way again."""
    try:
        state.result()
    except OSError:
        return True
    except Exception:
        return False
    return False
