"""The kinds of model source (a plug-in kind like models or defences), and the one rule that tells
which kind a ``model.source`` names.

``factory``: a Python callable and, optionally, weights for it; ``exported``: a ``.pt2`` program;
``torchscript``: a TorchScript file; ``mlflow``: a PyTorch model in an MLflow registry or run. The
core opens the first three; MLflow models are opened by ``adapters`` (the core never talks to
MLflow), so this registry's ``mlflow`` entry only names the kind.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from torch import nn

from robustops.config import ModelConfig, is_factory
from robustops.errors import ModelSourceError
from robustops.registry import Registry
from robustops.sources.factory import build_model, resolve_factory
from robustops.sources.programs import load_exported, load_torchscript
from robustops.sources.weights import load_weights, read_state_dict

MLFLOW_PREFIXES = ("models:/", "runs:/")
EXPORTED_SUFFIXES = (".pt2",)
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".jit", ".torchscript")


@dataclass(frozen=True)
class SourceKind:
    """How to open one kind of source: ``open(model_cfg)`` gives the user's network, as it is
    (no preprocessing), or None where another layer opens it (MLflow)."""

    describe: str
    open: Callable[[ModelConfig], nn.Module] | None
    trainable: bool  # whether robustops can fine-tune it (harden), not only score it


SOURCES: Registry[SourceKind] = Registry("model source")


def kind_of(source: str) -> str:
    """The kind of source ``source`` names.

    Raises:
        ModelSourceError: it matches no kind (the forms are listed).
    """
    if source.startswith(MLFLOW_PREFIXES):
        return "mlflow"
    if is_factory(source):
        return "factory"
    suffix = Path(source).suffix.lower()
    if suffix in EXPORTED_SUFFIXES:
        return "exported"
    if suffix in TORCHSCRIPT_SUFFIXES:
        return "torchscript"
    raise ModelSourceError(
        f"model.source {source!r}: not a source robustops knows; give package.module:callable or "
        "path/to/file.py:callable (a factory), a .pt2 file (torch.export), a TorchScript file "
        "(.pt, .ts), or an MLflow URI (models:/NAME/VERSION, models:/NAME@ALIAS, runs:/RUN_ID/PATH)"
    )


def _open_factory(cfg: ModelConfig) -> nn.Module:
    assert cfg.source is not None
    model = build_model(cfg.source, cfg.kwargs)
    if cfg.weights is not None:
        load_weights(model, read_state_dict(cfg.weights, cfg.weights_key), f"the weights in {cfg.weights}")
    return model


def _open_exported(cfg: ModelConfig) -> nn.Module:
    assert cfg.source is not None
    return load_exported(cfg.source)


def _open_torchscript(cfg: ModelConfig) -> nn.Module:
    assert cfg.source is not None
    return load_torchscript(cfg.source)


SOURCES.register("factory")(SourceKind("a Python factory and its weights", _open_factory, trainable=True))
SOURCES.register("exported")(SourceKind("a torch.export program (.pt2)", _open_exported, trainable=False))
SOURCES.register("torchscript")(SourceKind("a TorchScript file", _open_torchscript, trainable=True))
SOURCES.register("mlflow")(SourceKind("a PyTorch model in MLflow", None, trainable=True))


def open_source(cfg: ModelConfig) -> nn.Module:
    """The user's network a file or factory source names, in eval mode (MLflow sources are opened
    by ``adapters``)."""
    if cfg.source is None:
        raise ModelSourceError("model.source is not set; the built-in models are built by robustops.training")
    kind = SOURCES.get(kind_of(cfg.source))
    if kind.open is None:
        raise ModelSourceError(f"model.source {cfg.source!r} is opened through MLflow, not from a file")
    return kind.open(cfg).eval()


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def lineage(cfg: ModelConfig) -> dict[str, Any]:
    """What identifies a source: its kind and name, the SHA-256 of each file it reads (the file
    defining a factory's callable, its weights, a program; not the modules that file imports),
    an installed package's version, the factory's kwargs, the declared preprocessing and class map.
    Logged with every run and registered version, so a score can be traced to the exact model."""
    if cfg.source is None:
        return {"kind": "builtin", "name": cfg.name}
    kind = kind_of(cfg.source)
    out: dict[str, Any] = {"kind": kind, "source": cfg.source}
    files = {}
    if kind == "factory":
        where = cfg.source.rpartition(":")[0]
        if where.endswith(".py") and Path(where).is_file():
            files["factory"] = where
        elif not where.endswith(".py"):  # a package: the file defining the callable, its version
            top = where.split(".")[0]
            found = inspect.getsourcefile(resolve_factory(cfg.source)) if top in sys.modules else None
            if found:
                files["factory"] = found
            dists = metadata.packages_distributions().get(top, [])
            out["package_version"] = f"{dists[0]} {metadata.version(dists[0])}" if dists else None
        out["kwargs"] = cfg.kwargs
        if cfg.weights is not None:
            files["weights"] = cfg.weights
            out["weights_key"] = cfg.weights_key
    elif kind in ("exported", "torchscript"):
        files["program"] = cfg.source
    for role, path in files.items():
        out[f"{role}_file"] = str(path)
        out[f"{role}_sha256"] = sha256(path) if Path(path).is_file() else None
    out["preprocess"] = cfg.preprocess.model_dump(mode="json")
    if cfg.classes is not None:
        out["classes"] = cfg.classes
    return out


def source_name(source: str) -> str:
    """A short name for a source, for run names and reports: the registered model's name, the
    factory's callable, or the file's stem."""
    if source.startswith("models:/"):
        return source.removeprefix("models:/").split("/")[0].split("@")[0]
    if source.startswith("runs:/"):
        return source.rstrip("/").rsplit("/", 1)[-1]
    if is_factory(source):
        return source.rpartition(":")[2].rsplit(".", 1)[-1]
    return Path(source).stem
