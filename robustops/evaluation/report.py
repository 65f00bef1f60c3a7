"""Summary tables of scorecards: plain text for the terminal, markdown for the MLflow UI."""

from __future__ import annotations

import re

_DETAIL = re.compile(r"/class_|/s\d/|/s_[\d.]+/|/ce$|^(masking|spec)/.+/pass$|^masking/.+/acc$")
# The terminal's short list: one line per question a reader asks first.
_SUMMARY = re.compile(
    r"^(clean/acc|adv/(pgd_linf|pgd_linf_cw|autoattack|worst)/eps_[\d.]+/acc|corruption/(mean_acc|mce)"
    r"|noise/(gaussian/mean_acc|flip_rate)|shift/acc|selective/coverage|calibration/ece"
    r"|ood/uniform_noise/auroc_energy|certified/r_0\.25/acc|masking/pass|spec/pass|train/seconds|eval/seconds)$"
)


def headline(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics worth a glance: no per-class, per-severity or per-check breakdown."""
    return {k: v for k, v in metrics.items() if not _DETAIL.search(k)}


def summary(metrics: dict[str, float]) -> dict[str, float]:
    """The few metrics the terminal table shows."""
    return {k: v for k, v in metrics.items() if _SUMMARY.match(k)}


def _rows(models: dict[str, dict[str, float]]) -> tuple[list[str], list[str]]:
    names = list(models)
    keys: list[str] = []
    for m in models.values():
        keys += [k for k in headline(m) if k not in keys]
    return names, keys


def _cell(models: dict[str, dict[str, float]], name: str, key: str) -> str:
    v = models[name].get(key)
    return "-" if v is None else f"{v:.4f}"


def text_table(models: dict[str, dict[str, float]], short: bool = False) -> str:
    """One row per metric, one column per model (``short``: the summary metrics only)."""
    if short:
        models = {n: summary(m) for n, m in models.items()}
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
