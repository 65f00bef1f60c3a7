"""Ports and servers: a free loopback port, and waiting until a started server answers."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable

import httpx


def free_port() -> int:
    """A loopback port nothing listens on (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    """Whether ``url`` answers 200 within 2 s (a health endpoint)."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    """Polls ``check`` once a second until it is true; fails naming ``what`` after ``timeout`` s."""
    end = time.time() + timeout
    while time.time() < end:
        if check():
            return
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_until_answers(url: str, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    """Polls ``url`` until it answers; fails at once if the server process ``proc`` exits."""
    end = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            assert proc.poll() is None, f"{what} exited"
            assert time.monotonic() < end, f"{what} did not answer within {timeout:.0f} s"
            time.sleep(0.25)
