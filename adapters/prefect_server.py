"""The Prefect server: whether one answers at ``PREFECT_API_URL``, and the temporary local server
a flow run starts when that setting names none.

``robustops serve`` and ``deploy`` need a server (``check_server()``); a flow run called in this
process (``robustops monitor``) starts a temporary one without it, and checks only a server that
is named (``check_server(temporary_ok=True)``).
"""

from __future__ import annotations

from typing import Any, Literal, overload

from robustops.errors import RobustopsError


class PrefectUnavailable(RobustopsError):
    """No Prefect server answers at PREFECT_API_URL (or, where one is needed, none is named)."""


@overload
def check_server(*, temporary_ok: Literal[False] = False) -> str: ...
@overload
def check_server(*, temporary_ok: bool) -> str | None: ...


def check_server(*, temporary_ok: bool = False) -> str | None:
    """The API URL of the Prefect server named by ``PREFECT_API_URL`` once it answers ``/health``;
    a :class:`PrefectUnavailable` with the fix otherwise. The check waits at most 5 s, instead of
    Prefect's ``Failed to reach API`` after about 20 s of retries, mid-way into a call.

    Args:
        temporary_ok: False (``serve``, ``deploy``: deployments need a server): an unset
            ``PREFECT_API_URL`` is an error, and so is an error status from ``/health``.
            True (a flow run in this process): an unset ``PREFECT_API_URL`` returns None (the run
            starts a temporary local server), and only a server that does not answer (connection
            refused, timeout) is an error: an HTTP status is the server's business.
    """
    import httpx
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        if temporary_ok:
            return None
        raise PrefectUnavailable(
            "PREFECT_API_URL is not set: start a server (make prefect-ui) and "
            "export PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    caught = httpx.TransportError if temporary_ok else httpx.HTTPError
    try:
        response = httpx.get(f"{url.rstrip('/')}/health", timeout=5)
        if not temporary_ok:
            response.raise_for_status()
    except caught as e:
        why = type(e).__name__
        if temporary_ok:
            raise PrefectUnavailable(
                f"no Prefect server answers at PREFECT_API_URL={url} ({why}); start one with "
                "make prefect-ui, or unset PREFECT_API_URL to run with a temporary local server"
            ) from None
        raise PrefectUnavailable(
            f"no Prefect server answers at {url} ({why}); start one with make prefect-ui"
        ) from None
    return url


def own_temporary_server() -> None:
    """Makes the temporary Prefect server that a flow run starts without ``PREFECT_API_URL`` run in
    a session of its own.

    Ctrl-C in a terminal sends SIGINT to the whole foreground process group, and a service
    manager may send SIGTERM to all of a unit's processes: the temporary server, a child in our
    group, stopped at once, and the run's teardown then hung on API retries for minutes instead
    of marking its runs. In its own session only this process stops it (at exit), and the
    watchdog (``app.watchdog``) ends it if this process dies. Prefect's test harness registers
    its server the same way (under the ``None`` key that every client looks up).
    """
    import functools
    import subprocess
    from unittest import mock

    from prefect.server.api.server import SubprocessASGIServer

    class OwnSessionServer(SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            popen = functools.partial(subprocess.Popen, start_new_session=True)
            with mock.patch.object(subprocess, "Popen", popen):
                return super()._run_uvicorn_command()

    current = SubprocessASGIServer._instances.get(None)
    if current is None or not current.running:
        SubprocessASGIServer._instances.pop(None, None)
        OwnSessionServer()  # registers itself under None; Prefect starts it on first use
