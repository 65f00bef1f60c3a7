"""A single self-contained HTML scorecard that compares every model of a run side by side.

Plain HTML and inline CSS, plots embedded as base64 PNGs: it opens from the MLflow artifact view,
a mail attachment or a file share, with no server and no network. The table is grouped by
robustness dimension; each accuracy shows its n and 95 % interval, and the rows the promotion
gate uses show its rule.
"""

from __future__ import annotations

import base64
import html
import io
import re
from datetime import UTC, datetime
from typing import Any

from matplotlib.figure import Figure

from robustops.config import GateConfig
from robustops.evaluation.gate import Decision
from robustops.evaluation.plots import models_vs_eps_figure, scorecard_figures
from robustops.evaluation.report import Intervals, headline, intervals_of, row_n
from robustops.evaluation.scorecard import Scorecard, small_test_note
from robustops.names import number

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2433}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde2ea}
.meta{color:#5b6577;font-size:13px} table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{padding:4px 10px;border-bottom:1px solid #eef1f5;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left} thead th{background:#f4f6f9;position:sticky;top:0}
td.best{font-weight:600;background:#eaf6ec} .pass{color:#1f7a35;font-weight:600}
.fail{color:#b3261e;font-weight:600} .decision{padding:10px 14px;border-radius:6px;margin:8px 0}
.promote{background:#eaf6ec;border:1px solid #9ed3a8} .keep{background:#fff6e5;border:1px solid #f0c36d}
.plots{display:flex;flex-wrap:wrap;gap:10px} .plots figure{margin:0} .plots img{max-width:420px}
figcaption{font-size:12px;color:#5b6577} details{margin:4px 0} td.detail{text-align:left;white-space:normal}
td.untrusted{color:#9aa3b2;text-decoration:line-through} .ci{color:#7a8496;font-size:11px}
tr.group th{background:#e9edf3;text-align:left;padding-top:10px} tr.group small{font-weight:400;color:#5b6577}
tr.gated td:first-child{border-left:3px solid #3b5bdb} .gate{color:#3b5bdb;font-size:11px;font-weight:600}
small.what{color:#5b6577} td.breaks{color:#b3261e;font-weight:600} td.n{color:#5b6577}
.warn{background:#fdecea;border:1px solid #f1a9a0;padding:10px 14px;border-radius:6px;margin:8px 0}
"""

# For each metric family, which direction is better (the best cell of a row is highlighted).
LOWER_IS_BETTER = ("corruption/mce", "corruption/relative_mce", "corruption_benchmark/mce", "calibration/ece", "selective/risk", "selective/aurc",
                   "noise/flip_rate", "lipschitz/", "eval/seconds", "train/seconds", "certified/abstain",
                   "smoothed/abstain", "masking/large_eps")  # fmt: skip


def png(fig: Figure) -> str:
    """A figure as a data URI (and closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


# The table's groups: the four robustness dimensions and the post-processing layer, after the
# plain model's clean scores; a metric family not named here goes under "Other".
GROUPS = [
    ("Clean", "the plain model (its argmax, no guard) on the whole test split", ("clean/",)),
    ("Adversarial", "crafted inputs within an eps ball, on a subsample of the test split (the n column); "
     "gradient-masking checks, Lipschitz figures and, for smoothed models, certificates",
     ("adv/", "base/adv/", "masking/", "lipschitz/", "certified/", "smoothed/")),
    ("Distributional", "natural shift: held-out corruptions at every severity, a corruption benchmark "
     "read from files, and the shifted set", ("corruption/", "corruption_benchmark/", "shift/")),
    ("Perturbation", "random, non-malicious noise", ("noise/",)),
    ("Specification", "behavioural checks of the guarded model", ("spec/",)),
    ("Post-processing", "the guard: abstention below the confidence threshold or the OOD score, and "
     "calibration", ("guard/", "selective/", "ood/", "calibration/")),
    ("Cost", "compute time", ("train/", "eval/")),
]  # fmt: skip

# What a row measures, where its name alone could mislead.
WHAT = {
    "clean/acc": "plain model: its argmax, no guard",
    "guard/coverage": "share of test images the guard answers",
    "guard/acc_answered": "accuracy on the images the guard answers",
    "selective/coverage": "share answered by the confidence threshold alone",
    "selective/risk": "error among those",
    "smoothed/acc": "smoothed classifier, abstentions counted as errors",
    "smoothed/acc_answered": "smoothed classifier, on the images it answers",
    "masking/pass": "every gradient-masking check passed",
    "spec/pass": "every specification check passed",
}
_WHAT_FAMILY = {"adv/worst/": "worst case over every attack, per image",
                "adv/autoattack/": "AutoAttack ensemble (version in the header), per image",
                "adv/autoattack_l2/": "AutoAttack ensemble's L2 version (version in the header), per image"}  # fmt: skip
# Rows without a best cell: thresholds, counts and checks.
_NO_BEST = ("ood/energy_threshold", "selective/threshold")


def _what(key: str) -> str:
    if key in WHAT:
        return WHAT[key]
    return next((w for prefix, w in _WHAT_FAMILY.items() if key.startswith(prefix)), "")


def _group(key: str) -> str:
    return next((g for g, _, prefixes in GROUPS if key.startswith(prefixes)), "Other")


def _rank(key: str) -> int:
    """A row's place in its group: by the group's metric families, in the order they are named."""
    for _, _, prefixes in GROUPS:
        for i, prefix in enumerate(prefixes):
            if key.startswith(prefix):
                return i
    return 0


def _gate_marks(gate: GateConfig | None) -> dict[str, str]:
    """The gate's rule for each metric it uses, as the table shows it."""
    if gate is None:
        return {}
    marks: dict[str, list[str]] = {}
    for key, lo in gate.min.items():
        marks.setdefault(key, []).append(f"gate: &ge; {lo:g}")
    for key, hi in gate.max.items():
        marks.setdefault(key, []).append(f"gate: &le; {hi:g}")
    marks.setdefault(gate.primary, []).append("gate: primary, ranks the models")
    if gate.require_masking:
        marks.setdefault("masking/pass", []).append("gate: must pass")
    for check in gate.spec_checks:
        marks.setdefault(f"spec/{check}/pass", []).append("gate: must pass")
    return {k: "; ".join(v) for k, v in marks.items()}


def _breaks_gate(key: str, v: float, gate: GateConfig | None) -> str:
    """Why ``v`` fails the gate's limit on ``key`` ("" when it does not)."""
    if gate is None:
        return ""
    if key in gate.min and v < gate.min[key]:
        return f"below gate.min {gate.min[key]:g}"
    if key in gate.max and v > gate.max[key]:
        return f"above gate.max {gate.max[key]:g}"
    return ""


def _cell(v: float | None, best: float | None, untrusted: bool, ci: dict[str, float] | None = None,
          broken: str = "") -> str:  # fmt: skip
    if v is None:
        return "<td>-</td>"
    interval = f' <span class="ci">[{ci["low"]:.3f}, {ci["high"]:.3f}]</span>' if ci else ""
    tips = ([f"95 % Wilson interval {ci['low']:.4f}-{ci['high']:.4f}, n = {ci['n']}"] if ci else []) + (
        [broken] if broken else []
    )
    if untrusted:
        tip = html.escape("; ".join(["failed a gradient-masking check", *tips]))
        return f'<td class="untrusted" title="{tip}">{v:.4f}{interval}</td>'
    cls = " ".join(c for c in ("best" if v == best else "", "breaks" if broken else "") if c)
    title = f' title="{html.escape("; ".join(tips))}"' if tips else ""
    return f'<td class="{cls}"{title}>{v:.4f}{interval}</td>'


def _check_cell(v: float | None) -> str:
    if v is None:
        return "<td>-</td>"
    return '<td><span class="pass">pass</span></td>' if v >= 1 else '<td><span class="fail">FAIL</span></td>'


def _keys(models: dict[str, dict[str, float]], marks: dict[str, str]) -> list[str]:
    """The table's rows: the headline metrics, both overall check results, each specification
    check, and every metric the gate uses, even a breakdown or one no model has (its cells "-")."""
    keys: list[str] = []
    for m in models.values():
        keys += [k for k in headline(m) if k not in keys and (not k.endswith("/pass") or k.count("/") == 1)]
        keys += [k for k in m if k not in keys and k.startswith("spec/") and k.endswith("/pass")]
    return keys + [k for k in marks if k not in keys]


def _table(
    models: dict[str, dict[str, float]],
    untrusted: frozenset[str] = frozenset(),
    intervals: Intervals | None = None,
    gate: GateConfig | None = None,
) -> str:
    """Metrics by model, grouped by dimension, the best cell per row highlighted, each accuracy
    with its n and 95 % interval; the rows the gate uses carry its rule, and a value that breaks
    it is marked. The adversarial scores of a model that failed a masking check (``untrusted``)
    are struck through and never the best."""
    names = list(models)
    intervals = intervals if intervals is not None else intervals_of(models)
    marks = _gate_marks(gate)
    keys = _keys(models, marks)
    by_group: dict[str, list[str]] = {}
    for k in sorted(keys, key=_rank):  # stable: within a family, the scorecard's order
        by_group.setdefault(_group(k), []).append(k)
    rows = []
    for group, what in [(g, w) for g, w, _ in GROUPS] + [("Other", "")]:
        if group not in by_group:
            continue
        rows.append(f'<tr class="group"><th colspan="{len(names) + 2}">{group}'
                    f'{f" <small>{html.escape(what)}</small>" if what else ""}</th></tr>')  # fmt: skip
        for k in by_group[group]:
            vals = {n: models[n].get(k) for n in names}
            label = f"<code>{html.escape(k)}</code>"
            if _what(k):
                label += f' <small class="what">{html.escape(_what(k))}</small>'
            if k in marks:
                label += f' <span class="gate">{marks[k]}</span>'
            cls = ' class="gated"' if k in marks else ""
            n = row_n(intervals, k)
            if k.endswith("/pass"):
                cells = "".join(_check_cell(v) for v in vals.values())
                rows.append(f"<tr{cls}><td>{label}</td><td class='n'></td>{cells}</tr>")
                continue
            adv = k.startswith("adv/")
            present = [v for n_, v in vals.items() if v is not None and not (adv and n_ in untrusted)]
            best = None
            several = sum(v is not None for v in vals.values()) > 1
            if several and present and not k.startswith(_NO_BEST):
                best = min(present) if k.startswith(LOWER_IS_BETTER) else max(present)
            cells = "".join(
                _cell(v, best, adv and m in untrusted, intervals.get(m, {}).get(k),
                      _breaks_gate(k, v, gate) if v is not None else "")
                for m, v in vals.items()
            )  # fmt: skip
            rows.append(f"<tr{cls}><td>{label}</td><td class='n'>{n}</td>{cells}</tr>")
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    return (f"<table><thead><tr><th>metric</th><th title='images each accuracy is a share of'>n</th>{head}</tr>"
            f"</thead><tbody>{''.join(rows)}</tbody></table>")  # fmt: skip


_FAMILIES = [("worst", "worst case over every attack, per image"),
             ("autoattack", "AutoAttack ensemble, per image"), ("pgd_linf", "PGD")]  # fmt: skip


def eps_figure(
    models: dict[str, dict[str, float]],
    intervals: Intervals | None = None,
    dashed: frozenset[str] = frozenset(),
) -> Figure | None:
    """Every model's robust accuracy over eps in one plot (eps 0: clean accuracy), with 95 %
    bands: the per-image worst case over every attack where the card has it. None without attacks."""
    intervals = intervals if intervals is not None else intervals_of(models)
    for family, what in _FAMILIES:
        pattern = re.compile(rf"^adv/{family}/eps_([\d.]+)/acc$")
        curves: dict[str, dict[float, float]] = {}
        bands: dict[str, dict[float, tuple[float, float]]] = {}
        for name, m in models.items():
            points = {float(g.group(1)): v for k, v in m.items() if (g := pattern.match(k))}
            if not points:
                continue
            keys = {float(g.group(1)): k for k in m if (g := pattern.match(k))}
            if "clean/acc" in m:
                points[0.0], keys[0.0] = m["clean/acc"], "clean/acc"
            curves[name] = points
            ci = intervals.get(name, {})
            bands[name] = {e: (ci[k]["low"], ci[k]["high"]) for e, k in keys.items() if k in ci}
        if curves:
            return models_vs_eps_figure(
                curves, bands, f"every model: {what}", dashed, "accuracy (eps 0: clean)"
            )
    return None


def _checks(title: str, checks: dict[str, list[dict]]) -> str:
    names = list(checks)
    all_checks: list[str] = []
    for cs in checks.values():
        all_checks += [c["name"] for c in cs if c["name"] not in all_checks]
    rows = []
    for check in all_checks:
        cells = ""
        for n in names:
            c = next((c for c in checks[n] if c["name"] == check), None)
            if c is None:
                cells += "<td>-</td>"
            else:
                mark = '<span class="pass">pass</span>' if c["passed"] else '<span class="fail">FAIL</span>'
                cells += f'<td class="detail">{mark}<br><small>{html.escape(c["detail"])}</small></td>'
        rows.append(f"<tr><td>{html.escape(check)}</td>{cells}</tr>")
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    return f"<h2>{title}</h2><table><thead><tr><th>check</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def render(
    title: str,
    metrics: dict[str, dict[str, float]],
    masking: dict[str, list[dict]],
    specification: dict[str, list[dict]],
    plots: dict[str, dict[str, str]],
    decision: Decision | None = None,
    meta: dict[str, str] | None = None,
    gate: GateConfig | None = None,
    intervals: Intervals | None = None,
) -> str:
    """The report's HTML.

    Args:
        title: the page title.
        metrics: model -> its metrics.
        masking, specification: model -> its checks as dicts (name, passed, detail).
        plots: model -> caption -> data URI (see :func:`png`).
        decision: the promotion gate's decision, if the gate ran.
        meta: extra lines for the header (run id, data, config).
        gate: the gate's settings: the rows it uses are marked with their limits.
        intervals: model -> metric -> {"n", "low", "high"} (default: from the counts among the
            metrics, ``clean/n``, ``adv/n``...; a scorecard's own adds per-class recalls).
    """
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    info = " · ".join(f"{html.escape(k)}: {html.escape(v)}" for k, v in (meta or {}).items())
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             f'<div class="meta">{when}{" · " + info if info else ""}</div>']  # fmt: skip
    sizes = [int(m["clean/n"]) for m in metrics.values() if m.get("clean/n")]
    note = small_test_note(min(sizes)) if sizes else None
    if note:
        parts.append(
            f'<div class="warn"><b>Small test split.</b> {html.escape(note[0].upper() + note[1:])}.</div>'
        )
    if decision is not None:
        cls = "promote" if decision.promote else "keep"
        parts.append(
            f'<h2>Promotion gate</h2><div class="decision {cls}">{html.escape(decision.summary)}</div>'
        )
        if decision.comparison:
            parts.append(
                "<ul>" + "".join(f"<li>{html.escape(c)}</li>" for c in decision.comparison) + "</ul>"
            )
        failed = {m: r for m, r in decision.failures.items() if r}
        if failed:
            parts.append("<details open><summary>Models that failed the gate</summary><ul>")
            parts += [
                f"<li><b>{html.escape(m)}</b>: {html.escape('; '.join(r))}</li>" for m, r in failed.items()
            ]
            parts.append("</ul></details>")
    parts.append("<h2>Scores, side by side</h2><p class='meta'>Grouped by robustness dimension; best value per "
                 "row highlighted. n: the images an accuracy is a share of; in brackets its 95 % Wilson interval "
                 "(scores whose intervals overlap may not differ). Per-class and per-severity numbers are in each "
                 "model's MLflow run.</p>")  # fmt: skip
    if gate is not None:
        parts.append("<p class='meta'>Rows with a blue edge are the ones the promotion gate uses, with its rule; "
                     "a value in red breaks it.</p>")  # fmt: skip
    untrusted = frozenset(n for n, checks in masking.items() if not all(c["passed"] for c in checks))
    if untrusted:
        parts.append(f"<p class='meta'>Struck through: adversarial scores of {', '.join(sorted(untrusted))}, which "
                     "failed a gradient-masking check and are not trusted.</p>")  # fmt: skip
    intervals = intervals if intervals is not None else intervals_of(metrics)
    parts.append(_table(metrics, untrusted, intervals, gate))
    fig = eps_figure(metrics, intervals, untrusted)
    if fig is not None:
        parts.append("<h2>Robust accuracy over eps, every model</h2><p class='meta'>Bands: 95 % intervals. Dashed: "
                     "a model that failed a gradient-masking check.</p>")  # fmt: skip
        parts.append(f"<div class='plots'><figure><img src='{png(fig)}' alt='accuracy over eps, every model'>"
                     "</figure></div>")  # fmt: skip
    parts.append(_checks("Gradient-masking checks", masking))
    parts.append(_checks("Specification checks", specification))
    for name, figs in plots.items():
        parts.append(f"<h2>{html.escape(name)}</h2><div class='plots'>")
        parts += [f"<figure><img src='{uri}' alt='{html.escape(cap)}'><figcaption>{html.escape(cap)}</figcaption></figure>"
                  for cap, uri in figs.items()]  # fmt: skip
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def report_meta(cfg: Any, card: Scorecard) -> dict[str, str]:
    """The report's header facts: the data, the test and attacked images, the AutoAttack version
    with its members, the seed."""
    aa = cfg.evaluation.autoattack
    members = "APGD-CE, APGD-T, FAB-T" if aa.version == "standard" else "APGD-CE, APGD-DLR"
    return {
        "data": cfg.data.source.value,
        "test images": str(card.n_test),
        "attacked images": str(card.n_attacked),
        "AutoAttack": (
            f"{aa.version} ({members}, Square {aa.queries:,} queries); L-inf "
            f"{', '.join(map(number, aa.eps)) or 'none'}, L2 {', '.join(map(number, aa.l2_eps)) or 'none'}"
            if aa.enabled
            else "off"
        ),  # fmt: skip
        "seed": str(cfg.seed),
    }


def scorecard_report(
    cards: dict[str, Scorecard],
    decision: Decision | None,
    meta: dict[str, str],
    gate: GateConfig | None = None,
    title: str = "robustops scorecard",
) -> tuple[str, dict[str, Any]]:
    """The run's report: the self-contained HTML page and its JSON (every model's scorecard with
    n and intervals, and the gate's decision)."""
    plots = {
        name: {path.removeprefix("plots/").removesuffix(".png").replace("_", " "): png(fig)
               for path, fig in scorecard_figures(card, name).items()}
        for name, card in cards.items()
    }  # fmt: skip
    page = render(
        title,
        {n: c.metrics for n, c in cards.items()},
        {n: [x.as_dict() for x in c.masking] for n, c in cards.items()},
        {n: [x.as_dict() for x in c.specification] for n, c in cards.items()},
        plots,
        decision,
        meta,
        gate=gate,
        intervals={n: c.intervals() for n, c in cards.items()},
    )
    doc = {
        "models": {n: c.as_json() for n, c in cards.items()},
        "gate": decision.as_dict() if decision else None,
    }
    return page, doc
