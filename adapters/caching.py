"""Input-hash cache keys that understand arrays, tensors, models and pydantic configs.

Prefect's INPUTS policy pickles inputs to hash them, which is unstable for torch modules; this
hashes their bytes instead, plus the core's source, so a code change never reuses a stale result.
"""

from __future__ import annotations

import dataclasses
import hashlib
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel

import robustops


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, np.ndarray):
        h.update(f"nd{obj.dtype}{obj.shape}".encode())
        h.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, torch.Tensor):
        _feed(h, obj.detach().cpu().numpy())
    elif isinstance(obj, torch.nn.Module):
        # A user's model carries its lineage (files' SHA-256, preprocessing): the weights alone
        # do not name the code that runs them.
        h.update(str(getattr(obj, "robustops_lineage", "")).encode())
        for k, v in obj.state_dict().items():
            h.update(k.encode())
            _feed(h, v)
    elif isinstance(obj, BaseModel):
        h.update(obj.model_dump_json().encode())
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            h.update(f.name.encode())
            _feed(h, getattr(obj, f.name))
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            h.update(str(k).encode())
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"seq{len(obj)}".encode())
        for v in obj:
            _feed(h, v)
    elif isinstance(obj, (str, int, float, bool, type(None), Enum, Path)):
        h.update(f"{type(obj).__name__}:{obj}".encode())
    else:
        raise TypeError(f"cannot fingerprint {type(obj).__name__}")


def fingerprint(*objs: Any) -> str:
    h = hashlib.blake2b(digest_size=16)
    for o in objs:
        _feed(h, o)
    return h.hexdigest()


@cache
def code_version() -> str:
    """Hash of the core package's source: results computed by older code are not reused."""
    root = Path(robustops.__file__).parent
    h = hashlib.blake2b(digest_size=8)
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def file_fingerprint(path: Path | None) -> str:
    """Cheap identity of a data file or folder: names, sizes and modification times."""
    if path is None or not Path(path).exists():
        return "none"
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return fingerprint(
        [
            (str(f.relative_to(path) if f != path else f.name), f.stat().st_size, f.stat().st_mtime_ns)
            for f in files
        ]
    )


def hash_inputs(context: Any, parameters: dict[str, Any]) -> str:
    """A Prefect ``cache_key_fn``: task name + code version + fingerprint of every input."""
    return f"{context.task.name}-{code_version()}-{fingerprint(parameters)}"
