"""A user's network saved so it loads where their code is not: beside a checkpoint, as a
``torch.export`` program (``network.pt2``) or, for a TorchScript network or one that does not
export, as TorchScript (``network.ts``). The registered model then serves with only robustops
installed; the declared preprocessing is robustops' own layer and is rebuilt from the blueprint."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from robustops.errors import ModelSourceError
from robustops.sources.programs import ProgramModule, load_exported, load_torchscript

EXPORTED, SCRIPTED = "network.pt2", "network.ts"


def _export(net: nn.Module, example: torch.Tensor, path: Path) -> None:
    # The batch dimension left to torch to decide: dynamic where the network allows it; a
    # network that fixes it is run in chunks when loaded (ProgramModule).
    program = torch.export.export(net, (example,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    torch.export.save(program, path)


def save_network(net: nn.Module, example: torch.Tensor, folder: Path) -> Path:
    """Writes ``net`` (in eval mode, traced on ``example``, a batch of its input) into ``folder``
    as a program, else as TorchScript; returns the file.

    Raises:
        ModelSourceError: it neither exports nor scripts (the first reason of each is shown).
    """
    was_training, given = net.training, net
    given.eval()
    try:
        if isinstance(net, ProgramModule):
            net = net.program
        if not isinstance(net, torch.jit.ScriptModule):
            try:
                _export(net, example, folder / EXPORTED)
                return folder / EXPORTED
            except Exception as e:  # noqa: BLE001 - export fails in many ways; scripting is next
                exported = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        else:
            exported = "a TorchScript network"
        try:
            scripted = net if isinstance(net, torch.jit.ScriptModule) else torch.jit.script(net)
            torch.jit.save(scripted, str(folder / SCRIPTED))
            return folder / SCRIPTED
        except Exception as e:  # noqa: BLE001
            raise ModelSourceError(
                f"the network can be neither exported ({exported}) nor scripted ({type(e).__name__}); "
                "a registered model must load without your code: make it torch.export-able"
            ) from e
    finally:
        given.train(was_training)


def load_network(folder: Path) -> nn.Module:
    """The network :func:`save_network` wrote into ``folder``, in eval mode."""
    if (folder / EXPORTED).is_file():
        return load_exported(folder / EXPORTED).eval()
    if (folder / SCRIPTED).is_file():
        return load_torchscript(folder / SCRIPTED).eval()
    raise ModelSourceError(
        f"{folder}: no {EXPORTED} or {SCRIPTED}; the checkpoint of a user's model holds one"
    )
