"""The building blocks of every config section: strict models, the fixed vocabularies, radii."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

from robustops import names

# A metric name MLflow accepts (the gate's names): checked by the same rule as every name we hand on.
MetricName = Annotated[str, AfterValidator(names.metric_name)]


class Strict(BaseModel):
    # NaN and infinity are never a setting: a NaN threshold is never crossed, a NaN radius turns
    # a whole dimension off without a word.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class DataSource(StrEnum):
    DIGITS = "digits"
    NPZ = "npz"
    FOLDER = "folder"


class Optimizer(StrEnum):
    ADAM = "adam"
    SGD = "sgd"


class Schedule(StrEnum):
    CONSTANT = "constant"
    COSINE = "cosine"
    ONECYCLE = "onecycle"


class AugmentPolicy(StrEnum):
    NONE = "none"
    CORRUPTIONS = "corruptions"
    AUGMIX = "augmix"


def radii(values: list[float], what: str, top: float | None = None) -> list[float]:
    """A sorted list of distinct radii >= 0 (at most ``top``) whose metric keys differ."""
    bad = [e for e in values if e < 0 or (top is not None and e > top)]
    if bad:
        within = f"[0, {top:g}] for pixels in [0, 1]" if top is not None else "[0, inf)"
        raise ValueError(f"values must lie in {within}, got {bad}")
    names.distinct_numbers(values, what)
    return sorted(set(values))


def distinct(values: list[str], what: str) -> list[str]:
    """``values`` when no name repeats (a repeat would log the same metric twice)."""
    if len(set(values)) != len(values):
        raise ValueError(f"{what} names repeat")
    return values


def severities(values: list[int], what: str) -> list[int]:
    """A non-empty subset of the severities 1..5, sorted; a clear error naming ``what`` else."""
    if not values or any(s not in (1, 2, 3, 4, 5) for s in values):
        raise ValueError(f"{what}: severities must be a non-empty subset of 1..5, got {values}")
    return sorted(set(values))
