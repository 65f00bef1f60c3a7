"""A single self-contained HTML scorecard that compares every model of a run side by side.

Plain HTML and inline CSS, plots embedded as base64 PNGs: it opens from the MLflow artifact view,
a mail attachment or a file share, with no server and no network.
"""

from __future__ import annotations

import base64
import html
import io
from datetime import UTC, datetime

from matplotlib.figure import Figure

from robustops.evaluation.gate import Decision
from robustops.evaluation.report import headline

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
td.untrusted{color:#9aa3b2;text-decoration:line-through}
"""

# For each metric family, which direction is better (the best cell of a row is highlighted).
LOWER_IS_BETTER = ("corruption/mce", "corruption/relative_mce", "calibration/ece", "selective/risk", "selective/aurc",
                   "noise/flip_rate", "lipschitz/", "eval/seconds", "train/seconds", "certified/abstain",
                   "smoothed/abstain", "masking/large_eps")  # fmt: skip


def png(fig: Figure) -> str:
    """A figure as a data URI (and closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _cell(v: float | None, best: float | None, untrusted: bool) -> str:
    if v is None:
        return "<td>-</td>"
    if untrusted:
        return f'<td class="untrusted" title="failed a gradient-masking check">{v:.4f}</td>'
    return f'<td class="{"best" if v == best else ""}">{v:.4f}</td>'


def _table(models: dict[str, dict[str, float]], untrusted: frozenset[str] = frozenset()) -> str:
    """Metrics by model, the best cell per row highlighted; the adversarial scores of a model that
    failed a masking check (``untrusted``) are struck through and never the best."""
    names = list(models)
    keys: list[str] = []
    for m in models.values():
        keys += [k for k in headline(m) if k not in keys and not k.endswith("/pass")]
    rows = []
    for k in keys:
        adv = k.startswith("adv/")
        vals = {n: models[n].get(k) for n in names}
        present = [v for n, v in vals.items() if v is not None and not (adv and n in untrusted)]
        best = None
        several = sum(v is not None for v in vals.values()) > 1
        if several and present and not k.startswith(("ood/energy_threshold", "selective/threshold")):
            best = min(present) if k.startswith(LOWER_IS_BETTER) else max(present)
        cells = "".join(_cell(v, best, adv and n in untrusted) for n, v in vals.items())
        rows.append(f"<tr><td><code>{html.escape(k)}</code></td>{cells}</tr>")
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    return f"<table><thead><tr><th>metric</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


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
    spec: dict[str, list[dict]],
    plots: dict[str, dict[str, str]],
    decision: Decision | None = None,
    meta: dict[str, str] | None = None,
) -> str:
    """The report's HTML.

    Args:
        title: the page title.
        metrics: model -> its metrics.
        masking, spec: model -> its checks as dicts (name, passed, detail).
        plots: model -> caption -> data URI (see :func:`png`).
        decision: the promotion gate's decision, if the gate ran.
        meta: extra lines for the header (run id, data, config).
    """
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    info = " · ".join(f"{html.escape(k)}: {html.escape(v)}" for k, v in (meta or {}).items())
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             f'<div class="meta">{when}{" · " + info if info else ""}</div>']  # fmt: skip
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
    parts.append("<h2>Scores, side by side</h2><p class='meta'>Best value per row highlighted. Per-class and "
                 "per-severity numbers are in each model's MLflow run.</p>")  # fmt: skip
    untrusted = frozenset(n for n, checks in masking.items() if not all(c["passed"] for c in checks))
    if untrusted:
        parts.append(f"<p class='meta'>Struck through: adversarial scores of {', '.join(sorted(untrusted))}, which "
                     "failed a gradient-masking check and are not trusted.</p>")  # fmt: skip
    parts.append(_table(metrics, untrusted))
    parts.append(_checks("Gradient-masking checks", masking))
    parts.append(_checks("Specification checks", spec))
    for name, figs in plots.items():
        parts.append(f"<h2>{html.escape(name)}</h2><div class='plots'>")
        parts += [f"<figure><img src='{uri}' alt='{html.escape(cap)}'><figcaption>{html.escape(cap)}</figcaption></figure>"
                  for cap, uri in figs.items()]  # fmt: skip
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)
