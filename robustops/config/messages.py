"""Validation errors in words: the key, what is wrong, the nearest existing key."""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from robustops.config.training import DefenceConfig


def model_in(annotation: Any) -> type[BaseModel] | None:
    """The config class inside a field's annotation (``X``, ``X | None``, ``list[X]``, ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = model_in(arg)
        if found is not None:
            return found
    return None


def keys(cls: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Every dotted key of ``cls``, sections included."""
    for name, f in cls.model_fields.items():
        yield prefix + name
        sub = model_in(f.annotation)
        if sub is not None and sub.model_config.get("extra") != "allow":
            yield from keys(sub, f"{prefix}{name}.")


# Keys that were renamed: an old config names the new key in its error. A list index is written
# ``*``; a key of a defence block is written ``defences.*.<key>``.
_RENAMED = {
    "runner.threads_per_worker": "runner.torch_threads",
    # FGSM-RS's catastrophic-overfitting stop
    "defences.*.guard_samples": "defences.*.overfit_samples",
    "defences.*.guard_drop": "defences.*.overfit_drop",
    "defences.*.guard_gap": "defences.*.overfit_gap",
    "defences.*.guard_min": "defences.*.overfit_min",
}


def _renamed(root: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """The new name of a renamed key at ``loc``, dotted as the error names the key ("" if none).

    ``root`` may be a defence's own settings class (:func:`robustops.defences.settings_from`
    types each block with it): ``loc`` is then a key of the block, and so is the answer, given
    only when that defence has the new key."""
    block = issubclass(root, DefenceConfig)
    parts = ["*" if isinstance(p, int) else str(p) for p in loc]
    new = _RENAMED.get(".".join(["defences", "*", *parts] if block else parts))
    if new is None:
        return ""
    if block:
        key = new.removeprefix("defences.*.")
        return key if key.split(".")[0] in root.model_fields else ""
    indices = iter(str(p) for p in loc if isinstance(p, int))
    return ".".join(next(indices, "0") if p == "*" else p for p in new.split("."))


def _did_you_mean(root: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """The nearest existing key to the unknown one at ``loc``: its new name if it was renamed,
    else a sibling, else any key of the whole config with a similar last name (``train.eps`` ->
    ``evaluation.eps``)."""
    renamed = _renamed(root, loc)
    if renamed:
        return renamed
    cls: type[BaseModel] | None = root
    path = [str(p) for p in loc[:-1]]
    for part in loc[:-1]:
        if isinstance(part, int) or cls is None:
            continue
        field = cls.model_fields.get(part)
        cls = model_in(field.annotation) if field is not None else None
    wrong = str(loc[-1])
    if cls is not None:
        near = difflib.get_close_matches(wrong, list(cls.model_fields), n=1, cutoff=0.6)
        if near:
            return ".".join([*path, near[0]])
    everywhere = {k.rpartition(".")[2]: k for k in keys(root)}
    near = difflib.get_close_matches(wrong, list(everywhere), n=1, cutoff=0.75)
    return everywhere[near[0]] if near else ""


def format_errors(err: ValidationError, root: type[BaseModel]) -> str:
    """One line per error of ``err``, keys dotted from ``root``."""
    parts = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            near = _did_you_mean(root, e["loc"])
            hint = f"did you mean {near}? " if near else "check the spelling; "
            msg = f"unknown key ({hint}see configs/default.yaml for every key)"
        elif e["type"] == "list_type" and not isinstance(e.get("input"), (list, dict)):
            value = json.dumps(e.get("input")) if e.get("input") is not None else "..."
            leaf = str(e["loc"][-1])
            msg = (
                f"expects a list, got {e.get('input')!r}: write [{value}] "
                f"(--set {key}=[{value}] on the command line, {leaf}: [{value}] in YAML)"
            )
        elif isinstance(e.get("input"), (str, int, float, bool)) and e["type"] != "value_error":
            msg = f"{msg}, got {e['input']!r}"
        parts.append(f"{key}: {msg}" if key else msg)
    return "; ".join(parts)
