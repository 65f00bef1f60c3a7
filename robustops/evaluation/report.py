"""Summary tables of scorecards: plain text for the terminal, markdown for the MLflow UI."""

from __future__ import annotations

import re

_DETAIL = re.compile(r"/class_|/s\d/")


def headline(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics worth a glance: no per-class or per-severity breakdown."""
    return {k: v for k, v in metrics.items() if not _DETAIL.search(k)}


def _rows(models: dict[str, dict[str, float]]) -> tuple[list[str], list[str]]:
    names = list(models)
    keys: list[str] = []
    for m in models.values():
        keys += [k for k in headline(m) if k not in keys]
    return names, keys


def _cell(models: dict[str, dict[str, float]], name: str, key: str) -> str:
    v = models[name].get(key)
    return "-" if v is None else f"{v:.4f}"


def text_table(models: dict[str, dict[str, float]]) -> str:
    """One row per metric, one column per model."""
    names, keys = _rows(models)
    w = max(len(k) for k in [*keys, "metric"])
    lines = [f"{'metric':<{w}}  " + "  ".join(f"{n:>10}" for n in names)]
    lines += [f"{k:<{w}}  " + "  ".join(f"{_cell(models, n, k):>10}" for n in names) for k in keys]
    return "\n".join(lines)


def markdown_table(models: dict[str, dict[str, float]]) -> str:
    names, keys = _rows(models)
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines += [f"| `{k}` | " + " | ".join(_cell(models, n, k) for n in names) + " |" for k in keys]
    return "\n".join(lines)
