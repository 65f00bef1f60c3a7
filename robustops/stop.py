"""Stopping work under way, promptly: the training, attack and scoring loops call :func:`raise_if_stopped`
at every batch, and it raises :class:`Stopped` once their scope was asked to stop.

Python cannot interrupt a thread, so a signal (SIGTERM from ``docker stop`` or a Kubernetes
eviction, Ctrl-C) only reaches the main thread; a task training in a worker thread would run on
until its last epoch while the process waits for it. The flow opens a :func:`scope` around the
work it hands to worker threads; when the flow's thread leaves that scope by an exception (the
signal, or a task that failed) the scope asks every loop in it to stop. The scope travels to the
workers as a context variable, which Prefect copies into each task it submits.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator

from robustops.errors import Stopped


class StopRequest:
    """A request to stop, shared by a flow's thread and the tasks it started."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def request(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


_current: contextvars.ContextVar[StopRequest | None] = contextvars.ContextVar("robustops_stop", default=None)


def raise_if_stopped() -> None:
    """Raises :class:`Stopped` when the current scope was asked to stop; otherwise returns at once."""
    request = _current.get()
    if request is not None and request.is_set():
        raise Stopped(f"stopped: {request.reason}")


@contextlib.contextmanager
def scope() -> Iterator[StopRequest]:
    """A scope whose loops stop once it is left by an exception (or ``request`` is called)."""
    request = StopRequest()
    token = _current.set(request)
    try:
        yield request
    except BaseException as e:
        request.request(f"the flow is ending ({type(e).__name__})")
        raise
    finally:
        _current.reset(token)


def interrupted(e: BaseException) -> bool:
    """Whether ``e`` means the run was stopped (a signal, Ctrl-C) rather than failed."""
    return isinstance(e, Stopped) or not isinstance(e, Exception)
