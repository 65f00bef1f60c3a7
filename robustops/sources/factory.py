"""A user's architecture from a Python factory: ``package.module:callable`` (an installed package,
e.g. ``torchvision.models:resnet18``) or ``path/to/file.py:callable`` (the user's own file). The
callable is called with the configured kwargs and must return a ``torch.nn.Module``."""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from robustops.errors import ModelSourceError

FORM = "package.module:callable or path/to/file.py:callable"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _from_file(path: Path, spec: str) -> ModuleType:
    if not path.is_file():
        raise ModelSourceError(f"{spec}: {path} not found; give {FORM}")
    # A name unique to the file, registered in sys.modules: pickling and torch.export look the
    # module up by name, and two users' model.py files must not shadow each other.
    # The content is part of the name: a file edited since it was imported is imported again.
    digest = hashlib.blake2b(str(path.resolve()).encode() + path.read_bytes(), digest_size=6).hexdigest()
    name = f"robustops_user_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    found = importlib.util.spec_from_file_location(name, path)
    if found is None or found.loader is None:
        raise ModelSourceError(f"{spec}: {path} cannot be imported as Python; give {FORM}")
    module = importlib.util.module_from_spec(found)
    sys.modules[name] = module
    try:
        found.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise ModelSourceError(f"{spec}: importing {path} failed ({_first_line(e)}); fix the file") from e
    return module


def _from_package(where: str, spec: str) -> ModuleType:
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as e:
        missing = e.name or where
        raise ModelSourceError(
            f"{spec}: no module named {missing!r}; install the package that provides it (for example "
            f"pip install torchvision), or give path/to/file.py:callable"
        ) from e
    except Exception as e:
        raise ModelSourceError(f"{spec}: importing {where} failed ({_first_line(e)})") from e


def resolve_factory(spec: str) -> Callable[..., Any]:
    """The callable a factory spec names.

    Raises:
        ModelSourceError: the spec's form, a module that is missing or fails to import, or an
            attribute that does not exist (with the closest names) or is not callable.
    """
    where, colon, attr = spec.rpartition(":")
    if not colon or not where or not attr:
        raise ModelSourceError(f"model factory {spec!r}: give it as {FORM}")
    module = _from_file(Path(where), spec) if where.endswith(".py") else _from_package(where, spec)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ModelSourceError(f"{spec}: {where} has no attribute {part!r}{hint}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelSourceError(
            f"{spec}: {attr} is not callable ({type(obj).__name__}); name a function or class that builds the model"
        )
    return obj


def build_model(spec: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """The model a factory builds from ``kwargs``.

    Raises:
        ModelSourceError: the factory cannot be resolved, raises (its first line shown), or
            returns something other than a ``torch.nn.Module``.
    """
    factory = resolve_factory(spec)
    kwargs = dict(kwargs or {})
    try:
        model = factory(**kwargs)
    except Exception as e:
        raise ModelSourceError(
            f"{spec}(**{kwargs}) raised {_first_line(e)}; check model.kwargs against the factory"
        ) from e
    if not isinstance(model, nn.Module):
        raise ModelSourceError(f"{spec} returned a {type(model).__name__}, not a torch.nn.Module")
    return model
