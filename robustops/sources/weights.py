"""Weights for a user's architecture, read from a state_dict file.

The file is read with ``torch.load(weights_only=True)``: a weights file is untrusted input, and a
full unpickle runs any code it holds. Accepted layouts: a plain state_dict; one saved from
``nn.DataParallel`` or ``torch.compile`` (every key under ``module.`` or ``_orig_mod.``); a
checkpoint dict holding the state_dict under a key (``key``, or the first of ``WEIGHT_KEYS``).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustops.errors import ModelSourceError

# Where training scripts commonly put the weights inside a checkpoint dict, tried in this order.
WEIGHT_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights", "ema")
# Prefixes that wrappers add to every key: nn.DataParallel / DistributedDataParallel, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
SHOWN = 5  # names listed in an error before "... and N more"


def _listed(names: list[str]) -> str:
    more = f" ... and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _unwrapped(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in WRAPPER_PREFIXES:
        while sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def read_state_dict(path: str | Path, key: str | None = None) -> dict[str, torch.Tensor]:
    """The state_dict a weights file holds, with wrapper prefixes removed.

    Raises:
        ModelSourceError: the file is missing, not a torch file, truncated, holds pickled Python
            objects, or holds no state_dict (under ``key`` when given).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelSourceError(f"{path}: weights file not found; set model.weights to a state_dict file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if found is None:  # not a pickle torch.load can read: garbage, or another program's pickle
            raise ModelSourceError(
                f"{path}: not a readable torch weights file (another format, or corrupt); save it "
                "again with torch.save(model.state_dict(), path)"
            ) from e
        raise ModelSourceError(
            f"{path}: holds Python objects ({found.group(1)}), not only tensors; it is not loaded, "
            "because unpickling runs the code a file holds: save model.state_dict() with torch.save, "
            "or export the model (torch.export or TorchScript)"
        ) from e
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as e:
        raise ModelSourceError(
            f"{path}: not a readable torch weights file (truncated, corrupt or another format: "
            f"{type(e).__name__}); save it again with torch.save(model.state_dict(), path)"
        ) from e
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            found = _listed(sorted(map(str, obj))) if isinstance(obj, dict) else type(obj).__name__
            raise ModelSourceError(
                f"{path}: no key {key!r} (found: {found}); set model.weights_key to the one holding the weights"
            )
        obj = obj[key]
    elif not _is_state_dict(obj) and isinstance(obj, dict):
        held = [k for k in WEIGHT_KEYS if _is_state_dict(obj.get(k))]
        if held:
            obj = obj[held[0]]
    if not _is_state_dict(obj):
        found = _listed(sorted(map(str, obj))) if isinstance(obj, dict) else type(obj).__name__
        raise ModelSourceError(
            f"{path}: holds no state_dict (found: {found}); set model.weights_key to the key that holds the weights"
        )
    return _unwrapped(obj)


def load_weights(
    model: nn.Module, state_dict: dict[str, torch.Tensor], where: str = "the weights"
) -> nn.Module:
    """Loads ``state_dict`` into ``model`` exactly: every parameter and buffer, each of its shape.

    Raises:
        ModelSourceError: naming the missing and unexpected keys (up to five of each) and every
            layer whose shape differs.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k} {tuple(state_dict[k].shape)} where the model has {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and state_dict[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)}: {_listed(unexpected)}")
    if shapes:
        problems.append(f"wrong shape: {_listed(shapes)}")
    if problems:
        raise ModelSourceError(
            f"{where} do not fit the model ({'; '.join(problems)}): check that the factory and its "
            "kwargs build the architecture the weights were saved from"
        )
    model.load_state_dict(state_dict, strict=True)
    return model
