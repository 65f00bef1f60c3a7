"""The promotion lock: one promotion at a time into a registry, among every robustops process
that promotes into it (see ``promotion_lock`` for which lock, and why)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from adapters import tracking
from robustops.config import MlflowConfig
from robustops.errors import PromotionConflict

LOCK_TIMEOUT = 120.0  # seconds to wait for another promotion into the same registry


def lock_path(m: MlflowConfig) -> Path:
    """The host-local lock file for promotions into the registry of ``m``'s tracking store."""
    uri = tracking.tracking_uri(m)
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///").split("?")[0]).resolve()
        return db.with_name(db.name + ".promote.lock")  # beside the store: every writer sees it
    if uri.startswith("file:") or "://" not in uri:
        folder = Path(uri.removeprefix("file://").removeprefix("file:")).resolve()
        return folder / ".robustops-promote.lock"
    digest = hashlib.sha256(f"{uri}|{m.registered_model}".encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"robustops-promote-{digest}.lock"


@contextlib.contextmanager
def file_lock(path: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``: excludes other processes and other threads alike (each
    acquisition opens its own file description), and the kernel releases it when the holder
    dies, SIGKILL included, so a crashed run never leaves a stale lock behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise PromotionConflict(
                        f"another promotion has held {path} for over {timeout:.0f} s; nothing promoted: "
                        "rerun when it has finished"
                    ) from None
                time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def prefect_lock(name: str, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """One slot of a Prefect global concurrency limit of 1, created on first use. The slot is a
    lease on the server: if its holder dies, the lease expires and the next promotion goes on."""
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency

    with get_client(sync_client=True) as c:
        c.upsert_global_concurrency_limit_by_name(name, 1)
    try:
        with concurrency(name, occupy=1, timeout_seconds=timeout, strict=True):
            yield
    except TimeoutError:
        raise PromotionConflict(
            f"another promotion has held the Prefect concurrency limit {name} for over {timeout:.0f} s; "
            "nothing promoted: rerun when it has finished"
        ) from None


def _shared_prefect_server() -> bool:
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


@contextlib.contextmanager
def promotion_lock(m: MlflowConfig, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """The lock that makes read-decide-set one step among robustops runs. Which lock, and why:

    - A local store (sqlite, file): every process that writes it runs on this host (sqlite over a
      network share is not supported), so a ``flock`` beside the store excludes all of them.
    - A remote store (MLflow server, database): runs may sit on other hosts, where a file lock is
      blind. The host-local file lock is taken first (runs on one host queue without a network
      round trip), then, when a Prefect server is configured (``PREFECT_API_URL``: the server
      every served deployment talks to), a global concurrency limit of 1 named after the
      registered model. Without one, a temporary Prefect server belongs to a single process and
      would exclude nothing, so only the host-local lock and the alias compare-and-set remain.
    """
    with file_lock(lock_path(m), timeout):
        uri = tracking.tracking_uri(m)
        if tracking.is_local(uri) or not _shared_prefect_server():
            yield
            return
        name = "robustops-promote-" + re.sub(r"[^A-Za-z0-9_.-]", "-", m.registered_model)
        with prefect_lock(name, timeout):
            yield
