"""Credentials kept out of what robustops logs.

A tracking URI may carry a password (``postgresql://user:secret@host/db``,
``http://user:secret@host``) or a token in its query. :func:`redact` replaces them by ``***``.
Where it is applied:

- MLflow params: ``adapters.tracking.log_params`` passes every param through :func:`redact_params`
  (the flattened config of every pipeline and model run, a monitored batch, a model URI);
- log records: :func:`install_log_redaction`, which the CLI installs, redacts every log record of
  the process, Prefect's and MLflow's included, exception text too;
- what the CLI prints: the tracking URI, and the ``mlflow ui`` command it suggests.

The config refuses a password in ``mlflow.tracking_uri`` (credentials go in the environment), so
the logged config (``config/resolved.yaml``, the deployments' parameters) holds none from that
key; neither it nor MLflow tags and other artifacts go through :func:`redact`. The real URI is
still used to connect.
"""

from __future__ import annotations

import logging
import re
from typing import Any

MASK = "***"

# scheme://user:password@host -> scheme://user:***@host. The password may hold any character
# but "@" and whitespace (an unescaped "/" or ":" included: people paste them unescaped).
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*):(?P<secret>[^\s@]+)@")
# ?password=... &token=... &api_key=... (query strings of database and HTTP URIs)
_QUERY = re.compile(
    r"(?P<head>[?&;](?:password|passwd|pwd|secret|token|access_token|api_key|apikey|key)=)(?P<secret>[^&;#\s'\"]+)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with the password of every URI in it, and secret query values, replaced by ``***``.

    >>> redact("postgresql://ml:s3cret@db:5432/mlflow")
    'postgresql://ml:***@db:5432/mlflow'
    """
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
    return _QUERY.sub(lambda m: f"{m['head']}{MASK}", text)


def has_credentials(text: str) -> bool:
    """Whether ``text`` holds a URI password or a secret query value."""
    return redact(text) != text


def redact_tree(obj: Any) -> Any:
    """A copy of a nested structure of dicts, lists and scalars with every string redacted."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {k: redact_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact_tree(v) for v in obj)
    return obj


def redact_params(params: dict[str, Any]) -> dict[str, Any]:
    """MLflow params (key -> value) with credentials removed from the values: strings, and the
    strings inside lists, tuples and dicts; other values come back unchanged."""
    return {k: redact(v) if isinstance(v, str) else redact_tree(v) for k, v in params.items()}


class _Marker:
    """Tags the record factory installed here, so that installing twice wraps it once."""


def install_log_redaction() -> None:
    """Redacts every log record this process creates, whatever logger or handler it goes to.

    It wraps the record factory rather than adding a filter to handlers: Prefect and MLflow
    configure their own handlers (Prefect's ships records to its API), and a handler added later
    would miss a filter. Exception text is rendered and redacted too, since MLflow's errors quote
    the request URL. Idempotent.
    """
    current = logging.getLogRecordFactory()
    if isinstance(getattr(current, "robustops", None), _Marker):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = current(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: leave it to the handler to report
            return record
        safe = redact(message)
        if safe != message:
            record.msg, record.args = safe, ()
        if record.exc_info and record.exc_info[0] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if has_credentials(text):
                # Formatters print exc_text when set; dropping exc_info keeps handlers that
                # render the exception object themselves (rich tracebacks) from seeing it.
                record.exc_text, record.exc_info = redact(text), None
        return record

    factory.robustops = _Marker()  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
