"""Prefect flow runs as the monitor flow needs them: a flow that checks the Prefect server before
it runs, and flow-run names that read as a log of batches and verdicts in the Prefect UI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import Flow
from prefect.runtime import flow_run

from adapters.prefect_server import check_server


class CheckedFlow(Flow):
    """A flow that, when called, first checks the Prefect server named by PREFECT_API_URL: a
    monitor run started against a server that is down fails at once with a clear error (exit 2
    from the CLI) rather than with Prefect's ``Failed to reach API`` after its retries. Served runs
    do not go through ``__call__``: the server that started them is up."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        check_server(temporary_ok=True)
        return super().__call__(*args, **kwargs)


def checked_flow(**options: Any) -> Any:
    """``@flow(**options)``, as a :class:`CheckedFlow`."""
    return lambda fn: CheckedFlow(fn, **options)


def run_name() -> str:
    """``monitor <batch file>``; the verdict is added once known (:func:`name_after_verdict`)."""
    return f"monitor {Path(str(flow_run.parameters.get('batch', ''))).name}"


def name_after_verdict(batch: str, drift: bool) -> None:
    """Renames the flow run ``monitor <batch file>: drift`` (or ``no drift``), so the Prefect UI's
    list of runs reads as a log of batches and verdicts. A failure is a warning."""
    from prefect.client.orchestration import get_client

    from adapters.log import logger

    name = f"monitor {Path(batch).name}: {'drift' if drift else 'no drift'}"
    try:
        with get_client(sync_client=True) as client:
            client.set_flow_run_name(flow_run.get_id(), name)
    except Exception as e:  # noqa: BLE001 - a name is a convenience: the verdict is logged anyway
        logger().warning("could not rename the flow run %r: %s", name, e)
