"""Honest statistics in the scorecard and wherever the guarded model is scored (issue 15, items 11-13):
every accuracy with its n and 95 % interval, a warning for a small test split, the HTML table grouped
by dimension with the gate's rows marked and one plot of every model over eps, and coverage,
accuracy on the answered images and the plain model's accuracy instead of abstentions as errors."""

from __future__ import annotations

import json
import re
import tempfile
import warnings
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from robustops.config import EvalConfig, GateConfig, MonitorConfig
from robustops.data import Dataset
from robustops.errors import DataWarning
from robustops.evaluation import evaluate
from robustops.evaluation.html import eps_figure, render
from robustops.evaluation.report import text_table
from robustops.evaluation.scorecard import SMALL_TEST_SPLIT, ScoreInputs, metric_intervals, small_test_note
from robustops.inference import predict
from robustops.monitoring.monitor import PLAIN_COLUMN, batch_scores

# Every part of the scorecard, on few samples and iterations.
FAST = {
    "eps": [0.05, 0.2],
    "l2_eps": [0.5],
    "pgd_steps": 3,
    "max_samples": 80,
    "autoattack": {"enabled": False},
    "masking": {"more_steps": 4},
    "corruptions": ["fog"],
    "severities": [1, 3],
    "noise": {"gaussian": [0.1], "uniform": [0.1], "salt_pepper": [0.05], "flip_draws": 1},
}


def _subset(d: Dataset, n: int) -> Dataset:
    return Dataset(d.x[:n], d.y[:n], d.classes, d.source)


@pytest.fixture(scope="module")
def card(trained, digits_split):
    inputs = ScoreInputs(
        trained.model,
        digits_split.test,
        EvalConfig.model_validate(FAST),
        val=digits_split.val,
        train=digits_split.train,
    )
    return evaluate(inputs)


def _wilson(acc: float, n: int) -> tuple[float, float]:
    ci = binomtest(round(acc * n), n).proportion_ci(confidence_level=0.95, method="wilson")
    return ci.low, ci.high


# ---- item 11: n and a 95 % interval for every accuracy ------------------------------------------


def test_each_dimension_logs_its_n_once(card, digits_split):
    m, n_test = card.metrics, len(digits_split.test.y)
    assert m["clean/n"] == n_test and m["noise/n"] == n_test and m["corruption/n"] == n_test
    assert m["adv/n"] == card.n_attacked == 80  # the attacks' subsample, not the test split
    assert {k for k in m if k.endswith("/n")} == {"clean/n", "adv/n", "noise/n", "corruption/n"}


def test_every_accuracy_has_its_wilson_interval(card, digits_split):
    ci = card.intervals()
    accuracies = [k for k in card.metrics if k.endswith("acc")]
    assert accuracies and set(accuracies) <= set(ci), sorted(set(accuracies) - set(ci))
    for key in accuracies:
        v, got = card.metrics[key], ci[key]
        assert got["low"] <= v <= got["high"], key
        assert (got["low"], got["high"]) == pytest.approx(_wilson(v, got["n"])), key
    assert ci["clean/acc"]["n"] == len(digits_split.test.y)
    assert ci["adv/pgd_linf/eps_0.05/acc"]["n"] == 80 and ci["corruption/fog/s3/acc"]["n"] == len(
        digits_split.test.y
    )
    # n = 80 against n = 359: at the same accuracy the attacked subsample's interval is wider.
    wide = metric_intervals({"a/acc": 0.9, "clean/acc": 0.9, "clean/n": 359, "adv/n": 80, "adv/x/acc": 0.9})
    assert wide["adv/x/acc"]["high"] - wide["adv/x/acc"]["low"] > 1.8 * (
        wide["clean/acc"]["high"] - wide["clean/acc"]["low"]
    )
    assert "a/acc" not in wide  # a metric of unknown count gets no made-up interval


def test_class_recalls_use_the_class_counts(card, digits_split):
    ci = card.intervals()
    counts = np.bincount(digits_split.test.y, minlength=10)
    assert [ci[f"clean/recall/class_{c}"]["n"] for c in range(10)] == counts.tolist()
    worst = min(range(10), key=lambda c: (card.metrics[f"clean/recall/class_{c}"], counts[c]))
    assert ci["clean/recall/min"]["n"] == counts[worst]


def test_the_scorecard_json_holds_n_and_intervals(card):
    stats = json.loads(json.dumps(card.stats()))  # JSON as it is logged
    assert stats["n"] == {"clean": card.n_test, "adv": 80, "noise": card.n_test, "corruption": card.n_test}
    assert stats["intervals"]["clean/acc"]["n"] == card.n_test and "Wilson" in stats["interval"]
    assert stats["small_test_split"] is None


def test_a_small_test_split_warns_in_the_run_and_the_report(trained, digits_split):
    small = _subset(digits_split.test, 120)
    with pytest.warns(DataWarning, match=r"only 120 images.*at least 200"):
        card = evaluate(
            ScoreInputs(trained.model, small, EvalConfig.model_validate(FAST), val=digits_split.val)
        )
    assert card.stats()["small_test_split"] == small_test_note(120)
    page = render("t", {"m": card.metrics}, {}, {}, {})
    assert '<div class="warn"><b>Small test split.</b> The test split has only 120 images' in page
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # 200 images and more: no warning
        cfg = EvalConfig.model_validate(FAST | {"eps": [0.05], "l2_eps": []})
        evaluate(
            ScoreInputs(
                trained.model, _subset(digits_split.test, SMALL_TEST_SPLIT), cfg, val=digits_split.val
            )
        )
    assert 'class="warn"' not in render("t", {"m": {"clean/acc": 0.9, "clean/n": 359.0}}, {}, {}, {})


def test_the_text_table_shows_n_and_intervals_where_there_is_room():
    m = {
        "clean/acc": 0.95,
        "clean/n": 359.0,
        "adv/pgd_linf/eps_0.1/acc": 0.5,
        "adv/n": 100.0,
        "train/seconds": 3.0,
    }
    models = {f"model_{i}": m for i in range(6)}
    lo, hi = _wilson(0.95, 359)
    wide = text_table(models, short=True, width=200).splitlines()
    assert wide[0].split()[:2] == ["metric", "n"] and max(map(len, wide[:-1])) <= 200
    assert wide[1].split()[:4] == ["clean/acc", "359", "0.950", f"({lo:.3f}-{hi:.3f})"]
    assert wide[2].split()[1] == "100" and wide[3].split()[:2] == [
        "train/seconds",
        "3.0000",
    ]  # no n, no interval
    mid = text_table(models, short=True, width=120).splitlines()
    plus = f"±{max(0.95 - lo, hi - 0.95):.3f}"  # the wider side of the interval
    assert max(map(len, mid[:-1])) <= 120 and mid[1].split()[2:4] == ["0.950", plus]
    narrow = text_table(models, short=True, width=60).splitlines()
    assert narrow[1].split()[:3] == ["clean/acc", "359", "0.9500"] and "wider terminal" in narrow[-1]


# ---- item 12: grouped table, the gate's rows, every model over eps -----------------------------


class _Rows(HTMLParser):
    """The scorecard table's rows as lists of cell texts, with each row's class."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, list[str]]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append((dict(attrs).get("class", ""), []))
        elif tag in ("td", "th") and self.rows:
            self.cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.rows[-1][1].append(" ".join("".join(self.cell).split()))
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def test_the_table_is_grouped_by_dimension_and_marks_the_gate(card):
    other = dict(card.metrics) | {"clean/acc": 0.5, "calibration/ece": 0.3}
    other["spec/recall_floor/pass"] = 0.0
    gate = GateConfig(primary="adv/worst/eps_0.2/acc", min={"clean/acc": 0.9}, max={"calibration/ece": 0.1},
                      spec_checks=["recall_floor"])  # fmt: skip
    page = render("t", {"good": card.metrics, "bad": other}, {}, {}, {}, gate=gate)
    parser = _Rows()
    parser.feed(page[page.index("<h2>Scores, side by side") :])
    groups = [cells[0].split()[0] for cls, cells in parser.rows if cls == "group"]
    assert groups == ["Clean", "Adversarial", "Distributional", "Perturbation", "Specification", "Post-processing",
                      "Cost"][: len(groups)] and len(groups) >= 6  # fmt: skip
    rows = {cells[0].split()[0]: (cls, cells) for cls, cells in parser.rows if cls != "group" and cells}
    section = None
    where = {}
    for cls, cells in parser.rows:
        if cls == "group":
            section = cells[0].split()[0]
        elif cells:
            where[cells[0].split()[0]] = section
    assert where["clean/acc"] == "Clean" and where["adv/pgd_linf/eps_0.2/acc"] == "Adversarial"
    assert where["corruption/mean_acc"] == "Distributional" and where["noise/flip_rate"] == "Perturbation"
    assert where["spec/recall_floor/pass"] == "Specification" and where["guard/coverage"] == "Post-processing"
    cls, cells = rows["clean/acc"]
    assert cls == "gated" and "gate: ≥ 0.9" in cells[0] and "plain model" in cells[0]
    assert cells[1] == str(card.n_test)  # the n column
    lo, hi = _wilson(card.metrics["clean/acc"], card.n_test)
    assert cells[2] == f"{card.metrics['clean/acc']:.4f} [{lo:.3f}, {hi:.3f}]"
    assert rows["calibration/ece"][0] == "gated" and "gate: ≤ 0.1" in rows["calibration/ece"][1][0]
    assert (
        "gate: primary" in rows["adv/worst/eps_0.2/acc"][1][0] and rows["adv/worst/eps_0.2/acc"][1][1] == "80"
    )
    assert rows["spec/recall_floor/pass"][0] == "gated" and rows["spec/recall_floor/pass"][1][3] == "FAIL"
    assert rows["noise/flip_rate"][0] == ""  # the gate does not use it
    # The values that break the gate are marked, in the other model's column only.
    assert re.search(r'<td class="breaks" title="[^"]*below gate.min 0.9">0.5000', page)
    assert re.search(r'<td class="breaks" title="above gate.max 0.1">0.3000', page)
    assert page.count('class="breaks"') == 2 and page.count('class="best breaks"') == 0


def test_one_plot_holds_every_model_over_eps(card):
    models = {"a": card.metrics, "b": {k: v * 0.5 for k, v in card.metrics.items() if "/acc" in k}
              | {"clean/n": card.n_test, "adv/n": 80}}  # fmt: skip
    fig = eps_figure(models, dashed=frozenset({"b"}))
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.lines}
    assert set(lines) == {"a", "b (masking suspected)"}
    a = lines["a"]
    assert list(a.get_xdata()) == [0.0, 0.05, 0.2]
    assert list(a.get_ydata()) == [card.metrics["clean/acc"]] + [
        card.metrics[f"adv/worst/eps_{e}/acc"] for e in ("0.05", "0.2")
    ]
    assert lines["b (masking suspected)"].get_linestyle() == "--" and a.get_linestyle() == "-"
    assert len(ax.collections) == 2  # a 95 % band per model
    page = render("t", models, {}, {}, {})
    assert page.count("data:image/png;base64,") == 1 and "Robust accuracy over eps, every model" in page
    assert eps_figure({"x": {"clean/acc": 0.9}}) is None


# ---- item 13: coverage, accuracy on the answered images, the plain model -----------------------


def test_abstentions_are_not_counted_as_errors():
    """The issue's batch: 85 of 100 answered, 84 of them right, the plain model right on 90."""
    y = np.zeros(100, dtype=int)
    answered = np.arange(100) < 85
    cls = np.where(answered, 0, -1)
    cls[84] = 1  # the one wrong answer
    plain = np.where(np.arange(100) < 90, 0, 1)
    preds = pd.DataFrame({"class_index": cls, "abstain": ~answered, "rejected": False, PLAIN_COLUMN: plain})
    s = batch_scores(preds, y)
    assert s.metrics() == pytest.approx({"batch/n": 100, "batch/rejected": 0.0, "batch/abstained": 0.15,
                                         "batch/coverage": 0.85, "batch/acc_answered": 84 / 85,
                                         "batch/plain_acc": 0.9})  # fmt: skip
    text = "\n".join(s.lines())
    assert "coverage 0.8500: answered 85 of 100 images (abstained 15, rejected 0)" in text
    assert "accuracy on the answered images 0.9882 (85 images, 95 % interval" in text
    assert "plain model accuracy 0.9000 (its argmax without the guard; 100 images" in text
    assert "0.8400" not in text  # abstentions counted as errors: the number the issue complained of
    unlabelled = batch_scores(preds)
    assert set(unlabelled.metrics()) == {"batch/n", "batch/rejected", "batch/abstained", "batch/coverage"}


def test_the_guard_in_the_scorecard_reports_coverage_and_answered_accuracy(card, trained, digits_split):
    test = digits_split.test
    logits = predict(trained.model, test.x)
    answered = ~card.thresholds.abstain(logits)
    correct = logits.argmax(1) == test.y
    assert 0 < answered.mean() < 1
    assert card.metrics["guard/coverage"] == pytest.approx(answered.mean())
    assert card.metrics["guard/acc_answered"] == pytest.approx(correct[answered].mean())
    assert card.metrics["clean/acc"] == pytest.approx(correct.mean())  # the plain model
    assert card.metrics["guard/acc_answered"] > card.metrics["clean/acc"]
    assert card.intervals()["guard/acc_answered"]["n"] == answered.sum()


@pytest.fixture(scope="module")
def registered(tmp_path_factory, trained, digits_split, card):
    """A sqlite store holding a guarded model registered by the record tasks, and the run's report."""
    from robustops.catalog import load_config
    from robustops.defences.standard import StandardConfig
    from robustops.evaluation.gate import Candidate, decide
    from tasks.gate import log_report
    from tasks.record import log_model_run, open_pipeline_run, register_model

    root = tmp_path_factory.mktemp("stats-store")
    sets = [f"mlflow.tracking_uri=sqlite:///{root}/mlflow.db", f"mlflow.artifact_root={root}/mlartifacts",
            "mlflow.experiment=stats", "mlflow.registered_model=stats-digits", "train.progress=false",
            "model.name=mlp", "model.hidden=64", "gate.primary=adv/worst/eps_0.2/acc",
            "gate.min={clean/acc: 0.9}", "gate.max={calibration/ece: 0.1}", "gate.spec_checks=[]"]  # fmt: skip
    cfg = load_config(None, sets)
    parent = open_pipeline_run.fn(cfg, None)
    run_id, uri = log_model_run.fn(cfg, parent, StandardConfig(label="baseline"), trained, card, digits_split)
    version = str(register_model.fn(cfg, uri, run_id, card, "baseline", digits_split.test, parent))
    decision = decide([Candidate("baseline", card.metrics, True, {})], None, cfg.gate)
    log_report.fn(cfg, parent, {"baseline": card}, decision)
    return {"root": root, "sets": sets, "cfg": cfg, "version": version, "parent": parent}


def test_the_logged_report_holds_intervals_and_the_gate_marks(registered, card):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(registered["cfg"].mlflow.tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(c.download_artifacts(registered["parent"], "report", tmp))
        doc = json.loads((folder / "scorecard.json").read_text())
        page = (folder / "scorecard.html").read_text()
    model = doc["models"]["baseline"]
    assert model["n"]["adv"] == 80 and model["intervals"]["clean/acc"]["n"] == card.n_test
    assert model["intervals"]["clean/recall/min"]["n"] < card.n_test  # a class's count: the card's own
    assert "gate: primary, ranks the models" in page and "gate: &ge; 0.9" in page
    assert "attacked images: 80" in page


def test_predict_names_coverage_answered_and_plain_accuracy(registered, trained, digits_split, capsys):
    from app.cli import main

    test = digits_split.test
    noise = np.random.default_rng(0).random((20, 8, 8), dtype=np.float32)  # the guard abstains on most
    x, y = np.concatenate([test.x[:100, 0], noise]), np.concatenate([test.y[:100], np.zeros(20, int)])
    batch, out = registered["root"] / "labelled.npz", registered["root"] / "pred"
    np.savez(batch, x=x, y=y)
    args = ["predict", "--model", f"models:/stats-digits/{registered['version']}", "--data", str(batch),
            "--out", str(out), *[a for s in registered["sets"] for a in ("--set", s)]]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    preds = pd.read_csv(out / "predictions.csv")
    answered = (~preds["abstain"] & ~preds["rejected"]).to_numpy()
    right = preds["class_index"].to_numpy() == y
    plain = predict(trained.model, x[:, None]).argmax(1)
    assert 0 < answered.sum() < len(y) and (preds[PLAIN_COLUMN].to_numpy() == plain).all()
    assert f"coverage {answered.mean():.4f}: answered {answered.sum()} of 120 images" in printed
    assert f"accuracy on the answered images {right[answered].mean():.4f} ({answered.sum()} images" in printed
    assert (
        f"plain model accuracy {(plain == y).mean():.4f} (its argmax without the guard; 120 images" in printed
    )
    assert f"accuracy {right.mean():.4f}" not in printed  # abstentions counted as errors
    # The expected accuracy without labels, by the default estimator, beside the measured one.
    assert "  expected accuracy " in printed and f"({MonitorConfig().estimator}; 95 % interval " in printed
    assert f"measured {(plain == y).mean():.4f}" in printed
