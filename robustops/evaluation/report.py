"""Summary tables of scorecards: plain text for the terminal, markdown for the MLflow UI."""

from __future__ import annotations

import re
import shutil

# Per-class, per-severity and per-check breakdowns, and the counts (``clean/n``, ``adv/n``...),
# which the tables show as their n column instead of as a row.
_DETAIL = re.compile(r"/class_|/s\d/|/s_[\d.]+/|/ce$|^(masking|spec)/.+/pass$|^masking/.+/acc$|/n$")
# The terminal's short list: one line per question a reader asks first.
_SUMMARY = re.compile(
    r"^(clean/acc|adv/(pgd_linf|pgd_linf_cw|autoattack|worst)/eps_[\d.]+/acc|corruption(_benchmark)?/(mean_acc|mce)"
    r"|noise/(gaussian/mean_acc|flip_rate)|shift/acc|selective/coverage|guard/(coverage|acc_answered)"
    r"|calibration/ece|ood/uniform_noise/auroc_energy|certified/r_0\.25/acc|masking/pass|spec/pass"
    r"|train/seconds|eval/seconds)$"
)

Intervals = dict[str, dict[str, dict[str, float]]]  # model -> metric -> {"n", "low", "high"}


def headline(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics worth a glance: no per-class, per-severity or per-check breakdown, no counts."""
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


def intervals_of(models: dict[str, dict[str, float]]) -> Intervals:
    """Each model's 95 % intervals, from the counts among its metrics (``clean/n``, ``adv/n``...)."""
    from robustops.evaluation.scorecard import metric_intervals  # late: the scorecard imports torch

    return {name: metric_intervals(m) for name, m in models.items()}


def row_n(intervals: Intervals, key: str) -> str:
    """The n of a metric's row: one number when every model shares it (the same split)."""
    ns = {int(ci[key]["n"]) for ci in intervals.values() if key in ci}
    return "" if not ns else str(ns.pop()) if len(ns) == 1 else "varies"


def _with_interval(models: dict[str, dict[str, float]], intervals: Intervals, name: str, key: str,
                   style: str) -> str:  # fmt: skip
    v, ci = models[name].get(key), intervals.get(name, {}).get(key)
    if v is None or ci is None or style == "none":
        return _cell(models, name, key)
    if style == "bounds":
        return f"{v:.3f} ({ci['low']:.3f}-{ci['high']:.3f})"
    # The wider side of the (asymmetric) interval: never narrower than the truth.
    return f"{v:.3f} ±{max(v - ci['low'], ci['high'] - v):.3f}"


def text_table(
    models: dict[str, dict[str, float]],
    short: bool = False,
    intervals: Intervals | None = None,
    width: int | None = None,
) -> str:
    """One row per metric, one column per model (``short``: the summary metrics only).

    Where the metrics carry their counts, an ``n`` column and each accuracy's 95 % Wilson interval
    are shown, as bounds where the table fits in ``width`` characters (default: the terminal's),
    else as the wider side of the interval (``±``), else not at all.

    Args:
        models: model -> its metrics.
        short: only the summary metrics.
        intervals: model -> metric -> {"n", "low", "high"} (default: from the models' counts).
        width: the widest line allowed.
    """
    if intervals is None:
        intervals = intervals_of(models)
    if short:
        models = {n: summary(m) for n, m in models.items()}
    names, keys = _rows(models)
    width = width or shutil.get_terminal_size((120, 24)).columns
    counted = any(k in ci for ci in intervals.values() for k in keys)
    for style in ("bounds", "plus", "none") if counted else ("none",):
        lines = _lines(models, intervals, names, keys, style, counted)
        if max(map(len, lines)) <= width:
            break
    if counted:
        lines.append({"bounds": "(n: the images each accuracy is a share of; in parentheses its 95 % Wilson interval)",
                      "plus": "(n: the images each accuracy is a share of; ±: the wider side of its 95 % Wilson "
                              "interval; a wider terminal shows both bounds)",
                      "none": "(n: the images each accuracy is a share of; a wider terminal shows the 95 % "
                              "intervals)"}[style])  # fmt: skip
    return "\n".join(lines)


def _lines(models: dict[str, dict[str, float]], intervals: Intervals, names: list[str], keys: list[str],
           style: str, counted: bool) -> list[str]:  # fmt: skip
    cells = {(n, k): _with_interval(models, intervals, n, k, style) for n in names for k in keys}
    widths = {n: max([10, len(n), *(len(cells[n, k]) for k in keys)]) for n in names}
    w = max(len(k) for k in [*keys, "metric"])
    nw = max([1, *(len(row_n(intervals, k)) for k in keys)]) if counted else 0

    def line(first: str, n: str, values: list[str]) -> str:
        head = f"{first:<{w}}  " + (f"{n:>{nw}}  " if counted else "")
        return head + "  ".join(f"{v:>{widths[m]}}" for m, v in zip(names, values, strict=True))

    out = [line("metric", "n", names)]
    out += [line(k, row_n(intervals, k), [cells[n, k] for n in names]) for k in keys]
    return out


def markdown_table(models: dict[str, dict[str, float]]) -> str:
    names, keys = _rows(models)
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines += [f"| `{k}` | " + " | ".join(_cell(models, n, k) for n in names) + " |" for k in keys]
    return "\n".join(lines)
