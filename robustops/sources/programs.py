"""Self-contained models that need no user code: a ``torch.export`` program (``.pt2``) and
TorchScript. Each file is checked for what it is before it is loaded, so a TorchScript file given
as a program (or the reverse) gets an error that names the right source."""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch
from torch import nn

from robustops.errors import ModelSourceError

EXPORT_FIX = "export it with torch.export.save(torch.export.export(model.eval(), (x,)), path)"
SCRIPT_FIX = "save it with torch.jit.save(torch.jit.script(model), path)"


def _archive_names(path: Path) -> list[str]:
    """The member names of a torch zip archive ([] when the file is not a zip archive)."""
    try:
        with zipfile.ZipFile(path) as z:
            return z.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def file_kind(path: str | Path) -> str | None:
    """``exported`` or ``torchscript`` by what the file holds (not its name), else None."""
    names = _archive_names(Path(path))
    if any(n.split("/", 1)[-1].startswith("models/") and n.endswith(".json") for n in names):
        return "exported"
    if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
        return "torchscript"
    return None


class ProgramModule(nn.Module):
    """An exported program as a module robustops can score.

    ``torch.export``'s module refuses ``.eval()`` and ``.train()`` (its mode was fixed when it was
    exported), so this module's mode does not reach it. A program exported with a fixed batch size
    refuses any other; this one then runs it on chunks of that size, the last padded by repeating
    its final image, and keeps only the real rows.
    """

    def __init__(self, program: nn.Module, batch: int | None) -> None:
        super().__init__()
        self.program = program
        self.batch = batch

    def train(self, mode: bool = True) -> ProgramModule:
        self.training = mode  # not passed on: the program's mode was fixed at export
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.batch
        if b is None or len(x) == b:
            return self.program(x)
        outs = []
        for i in range(0, len(x), b):
            chunk = x[i : i + b]
            n = len(chunk)
            if n < b:
                chunk = torch.cat([chunk, chunk[-1:].expand(b - n, *chunk.shape[1:])])
            outs.append(self.program(chunk)[:n])
        return torch.cat(outs)


def _static_batch(module: nn.Module) -> int | None:
    """The batch size an exported module was traced with when it is fixed, None when it is dynamic."""
    for node in module.graph.nodes:
        if node.op == "placeholder":
            val = node.meta.get("val")
            if val is None or not hasattr(val, "shape") or len(val.shape) != 4:
                raise ModelSourceError(
                    "the exported program's input is not one image batch (N, C, H, W); export the "
                    f"classifier with a single image-batch input: {EXPORT_FIX}"
                )
            size = val.shape[0]
            return int(size) if isinstance(size, int) else None
    raise ModelSourceError(f"the exported program takes no tensor input; {EXPORT_FIX}")


def is_exported(module: nn.Module) -> bool:
    """Whether ``module`` is the module of a ``torch.export`` program (which refuses ``.eval()``):
    MLflow's PyTorch flavour gives one for models it saved as ``pt2``."""
    return (
        hasattr(module, "graph")
        and type(module).__module__.startswith("torch.fx")
        and any("val" in n.meta for n in module.graph.nodes if n.op == "placeholder")
    )


def program_module(module: nn.Module) -> ProgramModule:
    """An exported program's module, made scoreable (see :class:`ProgramModule`)."""
    return ProgramModule(module, _static_batch(module))


def load_exported(path: str | Path) -> nn.Module:
    """The model of a ``.pt2`` file written by ``torch.export.save``.

    Raises:
        ModelSourceError: the file is missing, is TorchScript or something else, or is corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelSourceError(f"{path}: exported program not found; set model.source to a .pt2 file")
    kind = file_kind(path)
    if kind == "torchscript":
        raise ModelSourceError(
            f"{path}: a TorchScript file, not an exported program; name it with a .pt/.ts suffix "
            "(TorchScript) or export the model with torch.export"
        )
    if kind != "exported":
        raise ModelSourceError(f"{path}: not an exported program (a .pt2 archive); {EXPORT_FIX}")
    try:
        program = torch.export.load(path)
    except Exception as e:  # torch raises many kinds on a damaged archive
        raise ModelSourceError(
            f"{path}: the exported program cannot be loaded ({type(e).__name__}); {EXPORT_FIX}"
        ) from e
    return program_module(program.module())


def load_torchscript(path: str | Path) -> nn.Module:
    """The model of a TorchScript file written by ``torch.jit.save``.

    Raises:
        ModelSourceError: the file is missing, is an exported program or something else, or is corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelSourceError(f"{path}: TorchScript file not found; set model.source to the file")
    kind = file_kind(path)
    if kind == "exported":
        raise ModelSourceError(f"{path}: an exported program, not TorchScript; give it a .pt2 suffix")
    if kind != "torchscript":
        raise ModelSourceError(
            f"{path}: not a TorchScript file (a state_dict? give it as model.weights with a factory "
            f"source); {SCRIPT_FIX}"
        )
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as e:  # torch raises RuntimeError and others on a damaged archive
        raise ModelSourceError(
            f"{path}: the TorchScript file cannot be loaded ({type(e).__name__}); {SCRIPT_FIX}"
        ) from e
