import re

import numpy as np
import pytest

from robustops.config import EvalConfig
from robustops.evaluation import confusion_matrix, evaluate, per_class_recall
from robustops.evaluation.metrics import safe
from robustops.evaluation.plots import accuracy_vs_eps_figure, confusion_figure

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


def test_scorecard_names_and_values(trained, digits_split):
    cfg = EvalConfig(eps=[0.05, 0.2], pgd_steps=5, max_samples=100)
    card = evaluate(trained.model, digits_split.test, cfg, seed=0)
    m = card.metrics
    assert set(m) >= {
        "clean/acc",
        "clean/recall/min",
        "clean/recall/class_0",
        "adv/fgsm/eps_0.05/acc",
        "adv/pgd_linf/eps_0.2/acc",
        "adv/pgd_linf_cw/eps_0.2/acc",
        "lipschitz/bound",
        "lipschitz/input_grad_l2",
    }
    assert all(MLFLOW_NAME.match(k) for k in m)
    assert all(0 <= v <= 1 for k, v in m.items() if not k.startswith("lipschitz/"))
    assert m["lipschitz/bound"] > 0 and m["lipschitz/input_grad_l2"] > 0
    assert m["clean/recall/min"] == pytest.approx(min(m[f"clean/recall/class_{c}"] for c in range(10)))
    assert m["adv/pgd_linf/eps_0.2/acc"] <= m["adv/pgd_linf/eps_0.05/acc"] <= m["clean/acc"] + 0.05
    assert card.n_attacked == 100 and card.confusion.sum() == card.n_test == len(digits_split.test.y)
    assert {a["label"] for a in card.attacks} == {"fgsm", "pgd_linf", "pgd_linf_cw"} and all(
        a["n"] == 100 for a in card.attacks
    )


def test_figures_render(trained, digits_split):
    card = evaluate(trained.model, digits_split.test, EvalConfig(eps=[0.1], pgd_steps=2, max_samples=20))
    fig = confusion_figure(card.confusion, card.classes)
    assert len(fig.axes) == 2
    fig2 = accuracy_vs_eps_figure(card.curves, card.metrics["clean/acc"], "t")
    assert len(fig2.axes[0].lines) == 3  # fgsm, pgd_linf, pgd_linf_cw


@pytest.mark.parametrize("name", ["big cat (wild)", "a/b", "näive+1", "", "x=y@z"])
def test_user_class_names_become_valid_metric_segments(name):
    seg = safe(name)
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
