"""Errors a user can act on.

Every error that reaches a user names the problem and the fix in one line; the CLI prints
``str(err)`` and exits non-zero without a traceback.
"""


class RobustopsError(Exception):
    """Base class for errors caused by user input (config, data, arguments)."""


class ConfigError(RobustopsError, ValueError):
    """A config file, key or value is wrong."""


class DataValidationError(RobustopsError, ValueError):
    """Input data is missing, unreadable or malformed (defence layer 1)."""


class ModelNotFoundError(RobustopsError, LookupError):
    """A model URI names no registered model, version or alias, or its run has no checkpoint."""


class ModelSourceError(RobustopsError, ValueError):
    """A user's model cannot be used as given: its weights file, its keys or its preprocessing."""


class TrackingUnavailable(RobustopsError):
    """The MLflow tracking server or store does not answer (after bounded retries) or cannot be written."""


class ArtifactStoreError(RobustopsError):
    """MLflow artifacts cannot be written: the folder is read-only, not a folder, or the disk is full."""


class PromotionConflict(RobustopsError):
    """The champion alias moved while a promotion was deciding, or the promotion lock was not acquired."""


class ModelWarning(UserWarning):
    """A user's model looks wrong in a way that would make its scores misleading (declared
    preprocessing far off, probabilities for logits, a random eval output); the run goes on."""


class DataWarning(UserWarning):
    """Input that is used, but not all of it: a hidden folder or a stray file that was skipped.

    The CLI prints it as one ``warning:`` line; the data task also logs it to the Prefect run."""


class Stopped(RobustopsError):
    """Work stopped because its flow is ending: a signal (SIGTERM, Ctrl-C) or a task that failed."""
