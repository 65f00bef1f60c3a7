"""Checkpoints: the state dict (``torch.save``) beside a JSON spec of the architecture.

Loading uses ``torch.load(..., weights_only=True)``, which refuses pickled code: a checkpoint is
data, never a program.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustops.errors import RobustopsError
from robustops.training.standard import from_spec

STATE, SPEC = "state_dict.pt", "spec.json"


class CheckpointError(RobustopsError):
    """A checkpoint is missing, corrupt, or does not fit its spec."""


def save(model: nn.Module, spec: dict[str, Any], folder: str | Path) -> Path:
    """Writes ``state_dict.pt`` and ``spec.json`` into ``folder``; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / STATE)
    (folder / SPEC).write_text(json.dumps(spec, indent=2))
    return folder


def load(folder: str | Path) -> nn.Module:
    """Rebuilds the model a checkpoint folder describes, in eval mode.

    Raises:
        CheckpointError: a file is missing or corrupt, or the weights do not fit the spec.
    """
    folder = Path(folder)
    fix = "point at a folder written by robustops.training.checkpoint.save, or retrain"
    for name in (STATE, SPEC):
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder}: no {name}; {fix}")
    try:
        spec = json.loads((folder / SPEC).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{folder / SPEC}: not valid JSON ({e}); {fix}") from None
    try:
        state = torch.load(folder / STATE, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in first:  # torch's advice (load with weights_only=False) would run code
            first = "not a plain torch weights file"
        raise CheckpointError(f"{folder / STATE}: unreadable or not plain weights ({first}); {fix}") from None
    try:
        model = from_spec(spec)
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{folder}: weights do not fit the spec ({first}); {fix}") from None
    return model.eval()


def read_spec(folder: str | Path) -> dict[str, Any]:
    """The architecture spec of a checkpoint folder (shape, classes, model settings)."""
    path = Path(folder) / SPEC
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"{path}: unreadable ({e}); point at a folder written by checkpoint.save"
        ) from None
