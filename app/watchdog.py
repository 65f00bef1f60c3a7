"""A watchdog that ends the processes a ``robustops`` command started when the command dies
without cleaning up after itself (SIGKILL, the OOM killer).

A flow run without ``PREFECT_API_URL`` starts a temporary Prefect server as a child process and
stops it at exit; a process killed outright never gets there, and the server (about 260 MB, its
port open) would live on. The watchdog is a small separate process in its own session (Ctrl-C in
the terminal does not reach it) that notes the command's descendants every second and, once the
command is gone, terminates the ones still alive (then kills those that ignore SIGTERM for 3 s).

    python -m app.watchdog PID START_TIME   # started by app.cli; reads a pipe on stdin
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
from typing import Any

POLL_S = 1.0
GRACE_S = 3.0

_started: list[subprocess.Popen[bytes]] = []  # held for the life of the process: its pipe is the signal


def start() -> None:
    """Starts the watchdog for this process (once). Its stdin is a pipe that closes when this
    process dies, however it dies."""
    if _started:
        return
    import psutil

    me = psutil.Process()
    _started.append(
        subprocess.Popen(
            [sys.executable, "-m", "app.watchdog", str(me.pid), f"{me.create_time():.3f}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    )


def _alive(pid: int, created: float) -> Any:
    import psutil

    try:
        p = psutil.Process(pid)
        return p if abs(p.create_time() - created) < 0.01 else None  # not a reused pid
    except psutil.Error:
        return None


def watch(pid: int, created: float) -> list[int]:
    """Waits for process ``pid`` to end, then ends what it left behind; returns their pids."""
    import psutil

    parent = _alive(pid, created)
    known: dict[int, float] = {}
    me = os.getpid()
    while parent is not None:
        try:
            if parent.status() == psutil.STATUS_ZOMBIE:
                break
            # Accumulated, never replaced: once the parent is dead its children belong to init and
            # a fresh look would find none. Those that ended meanwhile are dropped by _alive.
            known |= {p.pid: p.create_time() for p in parent.children(recursive=True) if p.pid != me}
        except psutil.Error:
            break
        ready, _, _ = select.select([sys.stdin], [], [], POLL_S)
        if ready and not os.read(sys.stdin.fileno(), 1):  # EOF: the parent is gone
            break
    left = [p for p in (_alive(k, t) for k, t in known.items()) if p is not None]
    for p in left:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, still = psutil.wait_procs(left, timeout=GRACE_S)
    for p in still:
        with contextlib.suppress(psutil.Error):
            p.kill()
    return [p.pid for p in left]


if __name__ == "__main__":
    watch(int(sys.argv[1]), float(sys.argv[2]))
