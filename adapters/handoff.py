"""Inputs a command's pre-flight check has already read and validated, handed on to the task that
reads them in the same process, so a command reads each input once. The check must read them in
full: a bad pixel found inside a flow run would reach the user as a Prefect traceback, not as one
``error:`` line. A task takes what is held (once) and reads for itself when nothing is, as it does
in a deployment or on a worker. Keys cover the settings and the files' names, sizes and
modification times, so a file rewritten in between is read again."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from adapters.caching import file_fingerprint, fingerprint

_held: dict[str, Any] = {}
_lock = threading.Lock()


def key(kind: str, *settings: Any, files: Iterable[str | Path | None] = ()) -> str:
    """Names one input: its kind, the settings it is read with and the files it is read from."""
    return "-".join(
        [kind, fingerprint(*settings), *(file_fingerprint(Path(f) if f else None) for f in files)]
    )


def hold(name: str, value: Any) -> None:
    with _lock:
        _held[name] = value


def take(name: str) -> Any | None:
    """What is held under ``name``, released; None when nothing is."""
    with _lock:
        return _held.pop(name, None)


def clear() -> None:
    """Releases whatever no task took (a task served from its cache takes nothing)."""
    with _lock:
        _held.clear()


def split_key(data: Any, seed: int, limits: Any) -> str:
    """The data stage's input: the configured data, its test file and extra training data."""
    return key("split", data, seed, limits, files=[data.path, data.test_path, *data.extra_train])


def sets_key(evaluation: Any, shape: tuple[int, ...], classes: list[str], limits: Any) -> str:
    """The optional shifted and OOD sets, read in the model's input shape."""
    paths = [s.path if s is not None else None for s in (evaluation.shift_data, evaluation.ood_data)]
    return key(
        "sets", evaluation.shift_data, evaluation.ood_data, tuple(shape), list(classes), limits, files=paths
    )


def batch_key(path: str, shape: tuple[int, ...], classes: list[str], limits: Any, convert: bool) -> str:
    """A batch or a labelled set read in a model's input shape."""
    return key("batch", str(path), tuple(shape), list(classes), limits, convert, files=[path])


def source_key(model: Any, path: str, limits: Any) -> str:
    """A user's model (``model.source`` and its settings) prepared for a labelled set, and the set."""
    files = [path, model.weights, model.source if model.source and Path(model.source).is_file() else None]
    return key("source", model, str(path), limits, files=files)


def source_split_key(model: Any, data: Any, seed: int, limits: Any) -> str:
    """A user's model prepared on a run's split (``model.source`` and the data stage's input)."""
    files = [model.weights, model.source if model.source and Path(model.source).is_file() else None]
    return key("source-split", model, data, seed, limits, files=[*files, data.path, data.test_path])
