"""Checkpoints: the state dict (``torch.save``) beside the model's :class:`~robustops.models.Blueprint`
as JSON.

Loading uses ``torch.load(..., weights_only=True)``, which refuses pickled code: a checkpoint is
data, never a program.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import torch
from pydantic import ValidationError
from torch import nn

from robustops.config import ModelConfig
from robustops.errors import ModelSourceError, RobustopsError
from robustops.models import Blueprint
from robustops.sources.contract import assemble
from robustops.sources.kinds import sha256
from robustops.sources.saved import EXPORTED, SCRIPTED, load_network, save_network
from robustops.training.standard import from_blueprint

STATE, BLUEPRINT = "state_dict.pt", "blueprint.json"
OLD_BLUEPRINT = "spec.json"  # what checkpoints written before the blueprint's name held
FIX = "point at a folder written by robustops.training.checkpoint.save, or retrain"


class CheckpointError(RobustopsError):
    """A checkpoint is missing, corrupt, or does not fit its blueprint."""


def save(model: nn.Module, blueprint: Blueprint, folder: str | Path) -> Path:
    """Writes ``state_dict.pt`` and ``blueprint.json`` into ``folder``; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if blueprint.source is not None:  # a user's network: saved so it loads without their code
        example = torch.rand(2, *blueprint.shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            save_network(model.network, model[0](example.to(model[0].mean.device)), folder)
    torch.save(model.state_dict(), folder / STATE)
    (folder / BLUEPRINT).write_text(json.dumps(blueprint.model_dump(mode="json"), indent=2))
    return folder


def read_blueprint(folder: str | Path) -> Blueprint:
    """The blueprint of a checkpoint folder (architecture, shape, classes, defence settings).

    Raises:
        CheckpointError: it is missing, unreadable or incomplete.
    """
    folder = Path(folder)
    path = folder / BLUEPRINT if (folder / BLUEPRINT).is_file() else folder / OLD_BLUEPRINT
    if not path.is_file():
        raise CheckpointError(f"{folder}: no {BLUEPRINT}; {FIX}")
    try:
        return Blueprint.model_validate(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e}); {FIX}") from None
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise CheckpointError(f"{path}: not a model blueprint ({where}: {first['msg']}); {FIX}") from None


def load(folder: str | Path) -> nn.Module:
    """Rebuilds the model a checkpoint folder describes, in eval mode.

    Raises:
        CheckpointError: a file is missing or corrupt, or the weights do not fit the blueprint.
    """
    folder = Path(folder)
    if not (folder / STATE).is_file():
        raise CheckpointError(f"{folder}: no {STATE}; {FIX}")
    blueprint = read_blueprint(folder)
    try:
        state = torch.load(folder / STATE, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in first:  # torch's advice (load with weights_only=False) would run code
            first = "not a plain torch weights file"
        raise CheckpointError(f"{folder / STATE}: unreadable or not plain weights ({first}); {FIX}") from None
    if blueprint.source is not None:
        try:
            net = load_network(folder)
        except ModelSourceError as e:
            raise CheckpointError(f"{e}; {FIX}") from None
        cfg = ModelConfig.model_validate(blueprint.source["model"])
        model = assemble(net, cfg, blueprint.shape[0], blueprint.source["outputs"]).eval()
        # The cache key of a user's network (adapters.caching): its settings and saved program,
        # since the preprocessing's scale, order and size are not in its state_dict.
        saved = [f for f in (folder / EXPORTED, folder / SCRIPTED) if f.is_file()]
        model.robustops_lineage = json.dumps(blueprint.source, sort_keys=True) + sha256(saved[0])
        model.robustops_random = bool(blueprint.source.get("random"))
        return model
    try:
        model = from_blueprint(blueprint)
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{folder}: weights do not fit the blueprint ({first}); {FIX}") from None
    return model.eval()
