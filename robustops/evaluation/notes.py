"""The markdown notes the MLflow UI shows: a pipeline run's Description (the gate's decision and
a short table of scores by dimension) and the gate's verdict atop a model version's."""

from __future__ import annotations

import json
import re
from typing import Any

from robustops.config import GateConfig
from robustops.evaluation.gate import Decision
from robustops.evaluation.report import markdown_table, summary

GATE_NOTE = "**Gate:**"  # the first paragraph of a version's description once the gate has run

# The dimensions of the parent run's short table, in order, by metric prefix.
_DIMENSIONS = [
    ("clean", ("clean/",)),
    ("adversarial", ("adv/", "base/adv/", "masking/", "lipschitz/")),
    ("perturbation", ("noise/",)),
    ("distributional", ("corruption/", "corruption_benchmark/", "shift/")),
    ("specification", ("spec/",)),
    ("post-processing", ("selective/", "guard/", "calibration/", "ood/")),
    ("smoothing", ("certified/", "smoothed/")),
]
NOTE_LIMIT = 7900  # MLflow cuts a tag value at 8000 characters, mid-table
_SINGLE_ATTACK = re.compile(r"^adv/(pgd_linf|pgd_linf_cw)/")
REQUIRED_CHECKS = "spec checks the gate requires"


def _dimension(key: str) -> int | None:
    return next((i for i, (_, prefixes) in enumerate(_DIMENSIONS) if key.startswith(prefixes)), None)


def _limit(key: str, gate: GateConfig | None) -> tuple[str, Any]:
    """The gate's mark for a row ("primary, >= 0.7") and the test a value must pass (None: no limit)."""
    if gate is None:
        return "", None
    marks, tests = [], []
    if key == gate.primary:
        marks.append("primary")
    if key in gate.min:
        marks.append(f"≥ {gate.min[key]:g}")
        tests.append(lambda v, lo=gate.min[key]: v >= lo)
    if key in gate.max:
        marks.append(f"≤ {gate.max[key]:g}")
        tests.append(lambda v, hi=gate.max[key]: v <= hi)
    if key == "masking/pass" and gate.require_masking:
        marks.append("must pass")
        tests.append(lambda v: v >= 1)
    return ", ".join(marks), (lambda v: all(t(v) for t in tests)) if tests else None


def pipeline_note(
    scores: dict[str, dict[str, float]], decision: Any = None, gate: GateConfig | None = None
) -> str:
    """The parent run's Description (markdown): the gate's decision, a short table of the
    headline scores by dimension with the gate's limits marked (a failing value gets ✗), why
    models failed, then every headline score."""
    d = decision.as_dict() if hasattr(decision, "as_dict") else decision
    if d is None:
        lines = ["**Gate: not run** (gate.enabled is false, or no model was registered)."]
    else:
        verdict = f"promoted {d['challenger']}" if d["promote"] else "champion unchanged"
        lines = [f"**Gate: {verdict}.** {d['summary']}"]
    names = list(scores)
    keys = [gate.primary, *gate.min, *gate.max] if gate is not None else []
    for m in scores.values():
        # The worst case over every attack stands for the single attacks (the full table has them).
        keys += [k for k in summary(m) if k not in keys and not _SINGLE_ATTACK.match(k)]
    keys = sorted(dict.fromkeys(k for k in keys if _dimension(k) is not None), key=_dimension)
    if gate is not None and gate.spec_checks:
        at = max([i + 1 for i, k in enumerate(keys) if _dimension(k) <= 4] or [0])
        keys.insert(at, REQUIRED_CHECKS)

    def header(name: str) -> str:
        if d is None or d.get("challenger") != name:
            return name
        return f"{name} (promoted)" if d["promote"] else f"{name} (challenger)"

    def cell(key: str, name: str, test: Any) -> str:
        m = scores[name]
        if key == REQUIRED_CHECKS:
            failed = [c for c in gate.spec_checks if m.get(f"spec/{c}/pass") == 0.0]
            known = [c for c in gate.spec_checks if f"spec/{c}/pass" in m]
            return f"{len(known) - len(failed)}/{len(gate.spec_checks)}" + (" ✗" if failed else "")
        v = m.get(key)
        if v is None:
            return "-"
        text = ("pass" if v >= 1 else "fail") if key.endswith("/pass") else f"{v:.4f}"
        return text + (" ✗" if test is not None and not test(v) else "")

    if names and keys:
        lines += ["", "| dimension | metric | gate | " + " | ".join(map(header, names)) + " |",
                  "|---|---|---|" + "---:|" * len(names)]  # fmt: skip
        shown = None
        for key in keys:
            dim = _DIMENSIONS[_dimension(key) if key != REQUIRED_CHECKS else 4][0]
            mark, test = _limit(key, gate)
            if key == REQUIRED_CHECKS:
                mark = "all pass"
            label = key if key == REQUIRED_CHECKS else f"`{key}`"
            row = [dim if dim != shown else "", label, mark, *(cell(key, n, test) for n in names)]
            shown = dim
            lines.append("| " + " | ".join(row) + " |")
        lines += ["", "✗: outside the gate's limit."]
    failures = {n: r for n, r in (d or {}).get("failures", {}).items() if r}
    if failures:
        lines += ["", "Why models failed the gate:", ""]
        lines += [f"- **{n}**: " + "; ".join(r) for n, r in failures.items()]
    if scores:
        full = [
            "",
            "Every headline score on the test split, one column per model:",
            "",
            markdown_table(scores),
        ]
        if len("\n".join(lines + full)) <= NOTE_LIMIT:
            lines += full
        else:
            lines += ["", "Every score: `report/scorecard.html` and `report/scorecard.json` of this run."]
    return "\n".join(lines)


def gate_note(decision: Decision, name: str, reasons: list[str], alias: str) -> str:
    """The first paragraph of a version's Description: what the gate said about it."""
    if reasons:
        mine = "failed: " + "; ".join(reasons)
    elif name == decision.challenger:
        mine = f"the challenger, {'promoted to @' + alias if decision.promote else 'not promoted'}"
    else:
        mine = f"passed; {decision.challenger} scored higher on the primary"
    return f"{GATE_NOTE} {mine}. The run's decision: {decision.summary}"


def evaluation_note(
    name: str,
    uri: str,
    data: str,
    card_counts: tuple[int, int],
    metrics: dict[str, float],
    info: dict[str, Any],
) -> str:
    """An evaluation run's Description (markdown): what was scored on what (``card_counts``: the
    images scored and attacked), for a user's model where it came from (each file and its
    SHA-256, the declared preprocessing, what its outputs are), then the headline scores."""
    n_test, n_attacked = card_counts
    lines = [f"**{name}** (`{uri}`) scored as it is on `{data}`: {n_test} images, attacks on {n_attacked}."]
    found, report = info.get("lineage"), info.get("report")
    if found is not None and report is not None:
        files = [f"{role} `{found[role + '_file']}` (SHA-256 `{found[role + '_sha256']}`)"
                 for role in ("factory", "weights", "program") if found.get(role + "_file")]  # fmt: skip
        random = (
            "random in eval mode: adversarial scores hold for one draw" if report.random else "deterministic"
        )
        lines.append(
            f"Source: {found['kind']} `{found['source']}`"
            + (f"; {', '.join(files)}" if files else "")
            + f".\n\nPreprocessing (the model's first layer): `{json.dumps(found['preprocess'], sort_keys=True)}`."
            + f"\n\nOutputs: {report.n_outputs} {report.outputs}, {random}."
        )
    return "\n\n".join([*lines, markdown_table({name: metrics})])
