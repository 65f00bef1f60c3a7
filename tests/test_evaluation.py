import re

import numpy as np
import pytest

from robustops.evaluation import confusion_matrix, evaluate, per_class_recall
from robustops.evaluation.plots import accuracy_vs_eps_figure, confusion_figure
from robustops.evaluation.scorecard import ScoreInputs
from robustops.names import segment
from tests.helpers.models import quick

# MLflow's rule for metric names (mlflow.utils.validation), without the colon Windows refuses.
MLFLOW_NAME = re.compile(r"^[/\w.\- ]*$")


def test_confusion_matrix_and_recall_by_hand():
    y = np.array([0, 0, 1, 1, 1, 2])
    p = np.array([0, 1, 1, 1, 0, 2])
    cm = confusion_matrix(y, p, 4)
    assert cm.tolist() == [[1, 1, 0, 0], [1, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    r = per_class_recall(cm)
    np.testing.assert_allclose(r[:3], [0.5, 2 / 3, 1.0])
    assert np.isnan(r[3])  # no support: undefined, not zero


@pytest.fixture(scope="module")
def card(trained, digits_split):
    return evaluate(
        ScoreInputs(
            trained.model, digits_split.test, quick(), seed=0, val=digits_split.val, train=digits_split.train
        )
    )


def test_scorecard_names_and_values(card, digits_split):
    m = card.metrics
    assert set(m) >= {
        "clean/acc",
        "clean/recall/min",
        "clean/recall/class_0",
        "adv/fgsm/eps_0.05/acc",
        "adv/pgd_linf/eps_0.2/acc",
        "adv/pgd_linf_cw/eps_0.2/acc",
        "adv/pgd_l2/eps_0.5/acc",
        "adv/apgd/eps_0.2/acc",
        "adv/apgd_dlr/eps_0.2/acc",
        "adv/square/eps_0.2/acc",
        "adv/autoattack/eps_0.2/acc",
        "adv/worst/eps_0.05/acc",
        "masking/pass",
        "noise/gaussian/s_0.1/acc",
        "noise/flip_rate",
        "corruption/mean_acc",
        "selective/threshold",
        "calibration/ece",
        "ood/uniform_noise/auroc_energy",
        "ood/gaussian_noise/auroc_mahalanobis",
        "spec/pass",
        "lipschitz/bound",
        "lipschitz/input_grad_l2",
    }
    assert all(MLFLOW_NAME.match(k) for k in m)
    unit = [
        k
        for k in m
        if k.endswith(("/acc", "/pass", "/coverage", "/risk", "/ece", "/flip_rate")) or "/auroc_" in k
    ]
    assert all(0 <= m[k] <= 1 for k in unit), {k: m[k] for k in unit if not 0 <= m[k] <= 1}
    assert m["lipschitz/bound"] > 0 and m["lipschitz/input_grad_l2"] > 0
    assert m["clean/recall/min"] == pytest.approx(min(m[f"clean/recall/class_{c}"] for c in range(10)))
    assert m["adv/pgd_linf/eps_0.2/acc"] <= m["adv/pgd_linf/eps_0.05/acc"] <= m["clean/acc"] + 0.05
    assert card.n_attacked == 100 and card.confusion.sum() == card.n_test == len(digits_split.test.y)
    labels = {a["label"] for a in card.attacks}
    assert labels == {"fgsm", "pgd_linf", "pgd_linf_cw", "pgd_l2", "apgd", "apgd_dlr", "square", "autoattack"}
    assert all(a["n"] == 100 for a in card.attacks)


def test_worst_case_is_per_example(card):
    m = card.metrics
    members = [m[f"adv/{a}/eps_0.2/acc"] for a in ("apgd", "apgd_dlr", "square")]
    assert m["adv/autoattack/eps_0.2/acc"] <= min(members)  # an image counts only if it survives all three
    every = [
        v for k, v in m.items() if k.startswith("adv/") and k.endswith("/eps_0.2/acc") and "worst" not in k
    ]
    assert m["adv/worst/eps_0.2/acc"] <= min(every)
    assert m["adv/worst/eps_0.2/acc"] <= m["adv/autoattack/eps_0.2/acc"]


def test_figures_render(card):
    from robustops.evaluation.plots import scorecard_figures

    fig2 = accuracy_vs_eps_figure(
        {k: v for k, v in card.curves.items() if k != "pgd_l2"}, card.metrics["clean/acc"], "t"
    )
    assert {line.get_label() for line in fig2.axes[0].lines} >= {
        "fgsm",
        "pgd_linf",
        "pgd_linf_cw",
        "apgd",
        "square",
    }
    figs = scorecard_figures(card, "m")
    assert set(figs) == {
        "plots/confusion_matrix.png",
        "plots/accuracy_vs_eps.png",
        "plots/corruption_heatmap.png",
        "plots/noise_curves.png",
        "plots/risk_coverage.png",
        "plots/reliability.png",
    }
    assert len(confusion_figure(card.confusion, card.classes).axes) == 2


@pytest.mark.parametrize("name", ["big cat (wild)", "a/b", "näive+1", "", "x=y@z"])
def test_user_class_names_become_valid_metric_segments(name):
    seg = segment(name)
    assert MLFLOW_NAME.match(seg) and seg and "/" not in seg


def test_summary_tables_align_models_and_skip_per_class():
    from robustops.evaluation.report import markdown_table, text_table

    models = {
        "a": {"clean/acc": 0.9, "clean/recall/class_0": 0.8, "corruption/fog/s1/acc": 0.7},
        "b": {"clean/acc": 0.5, "adv/x": 0.25},
    }
    text = text_table(models).splitlines()
    assert text[0].split() == ["metric", "a", "b"]
    assert text[1].split() == ["clean/acc", "0.9000", "0.5000"] and text[2].split() == [
        "adv/x",
        "-",
        "0.2500",
    ]
    md = markdown_table(models)
    assert "class_0" not in md and "/s1/" not in md and "| `clean/acc` | 0.9000 | 0.5000 |" in md


def test_parts_scored_in_any_order_merge_to_the_same_card(card, trained, digits_split):
    """A runner may score the parts in any order, on any worker: merged back, they give exactly
    the card evaluate() gives, with each ensemble member its own part and the worst cases taken
    per example across parts."""
    from robustops.evaluation.scorecard import Part, merge, plan, score

    cfg, s = quick(), digits_split
    inputs = ScoreInputs(trained.model, s.test, cfg, 0, "cpu", val=s.val, train=s.train)
    parts = plan(cfg)
    assert {Part("linf", 0.2, m) for m in ("apgd", "apgd_dlr", "square", "more_steps")} <= set(parts)
    scored = {p: score(p, inputs) for p in parts[::-1]}
    merged = merge([scored[p] for p in parts], inputs)
    assert merged.metrics == card.metrics
    assert merged.attacks == card.attacks
    labels = [a["label"] for a in merged.attacks if a["eps"] == 0.2]
    assert labels.index("autoattack") == labels.index("square") + 1  # listed after its members
    # The ensemble is the per-example worst case, not the weakest member's number.
    members = [merged.masks[f"eps_0.2/{a}"] for a in ("apgd", "apgd_dlr", "square")]
    assert merged.metrics["adv/autoattack/eps_0.2/acc"] == float(np.logical_and.reduce(members).mean())


def test_parts_are_typed_and_labelled_as_task_runs_name_them():
    """A part is a kind, an eps and a member, never a string parsed back; its label names the
    Prefect task run and the card's ``seconds`` entry. A defence's own parts come last, and one
    named like a common part is left out."""
    from robustops.config import CorruptionBenchmarkConfig
    from robustops.evaluation.scorecard import KINDS, Part, plan

    bench = CorruptionBenchmarkConfig(path="c", layout="cifar_c", corruptions=["snow"])
    cfg = quick(corruptions=["fog"]).model_copy(update={"corruption_benchmark": bench})
    parts = plan(cfg, ["certify", "post"], shift=True)
    assert [p.label for p in parts] == [
        "clean", "adv/eps_0.05", "adv/eps_0.2", "adv/eps_0.2/apgd", "adv/eps_0.2/apgd_dlr",
        "adv/eps_0.2/square", "adv/eps_0.2/more_steps", "adv/l2", "adv/large_eps", "lipschitz", "noise",
        "corruption/fog", "corruption_benchmark/snow", "shift", "post", "certify",
    ]  # fmt: skip
    assert parts[3] == Part("linf", 0.2, "apgd") and parts[-1] == Part("defence", member="certify")
    assert parts[-3] == Part("shift") and f"score-m-{parts[3]}" == "score-m-adv/eps_0.2/apgd"
    assert {p.kind for p in parts} == set(KINDS)  # every kind is planned somewhere
    with pytest.raises(ValueError, match="unknown scorecard part kind 'adv'"):
        Part("adv", 0.2)


def test_runners_start_the_long_parts_first():
    """A defence's own parts, then the ensemble's members, then the rest, each group in plan
    order: every part once."""
    from robustops.evaluation.scorecard import longest_first, plan

    parts = plan(quick(corruptions=["fog"]), ["certify"], shift=True)
    started = [p.label for p in longest_first(parts)]
    assert started[:5] == [
        "certify",
        "adv/eps_0.2/apgd",
        "adv/eps_0.2/apgd_dlr",
        "adv/eps_0.2/square",
        "adv/eps_0.2/more_steps",
    ]
    assert started[5:] == [p.label for p in parts if p.label not in started[:5]]


def test_a_part_of_a_defence_the_model_lacks_is_refused(trained, digits_split):
    from robustops.evaluation.scorecard import Part, score

    inputs = ScoreInputs(trained.model, digits_split.test, quick())
    with pytest.raises(ValueError, match="no scorecard part 'certify' \\(its parts: none\\)"):
        score(Part("defence", member="certify"), inputs)
    seen = []
    extra = {"mine": lambda card, model, test, seed, device: seen.append((len(test.y), seed, device))}
    card = score(
        Part("defence", member="mine"), ScoreInputs(trained.model, digits_split.test, quick(), 3, extra=extra)
    )
    assert seen == [(len(digits_split.test.y), 3, "cpu")] and card.n_test == len(digits_split.test.y)


def test_features_of_a_shared_model_are_this_calls_own(trained, digits_split):
    """Scoring parts of one model run in several threads at once: the penultimate features one
    call collects hold its own images only, not the forward passes of the other threads (their
    extra rows used to break the Mahalanobis fit mid-run)."""
    import threading

    from robustops.evaluation.postprocess import features
    from robustops.inference import predict

    x = digits_split.train.x
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            predict(trained.model, digits_split.test.x[:64])

    others = [threading.Thread(target=busy) for _ in range(2)]
    for t in others:
        t.start()
    try:
        got = [features(trained.model, x, batch_size=32) for _ in range(3)]
    finally:
        stop.set()
        for t in others:
            t.join()
    alone = features(trained.model, x, batch_size=32)
    assert all(f.shape == alone.shape for f in got)
    np.testing.assert_allclose(got[0], alone, rtol=1e-5, atol=1e-6)
