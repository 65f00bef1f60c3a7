"""The gate against the registry (issue 15, items 4, 7, 10 and the gate half of 11): a challenger
of other data is refused, a lead within noise is not a win (paired McNemar test on the same
images, else a margin), every version says what it is, and a run ends with one line per model.

Real parts: the real scorecard, a real MLflow sqlite store, the real record and gate tasks, and
one real pipeline run through the CLI under Prefect's test harness (marked slow).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from scipy.stats import binomtest

from robustops import names
from robustops.catalog import load_config, resolve
from robustops.config import Config, GateConfig
from robustops.data import Dataset
from robustops.evaluation import evaluate
from robustops.evaluation.gate import (
    Candidate,
    Champion,
    DataSignature,
    decide,
    images_fingerprint,
    mcnemar,
    model_lines,
    primary_outcomes,
)
from robustops.evaluation.scorecard import Scorecard, ScoreInputs, ensemble_for
from tests.helpers.models import quick
from tests.helpers.runs import TINY_CONFIG, tiny_args

PRIMARY = "adv/autoattack/eps_0.1/acc"
DIGITS = DataSignature.of((1, 8, 8), [str(i) for i in range(10)], "digits")


def _cand(name: str, primary: float, outcomes: np.ndarray | None = None, clean: float = 0.97) -> Candidate:
    metrics = {"clean/acc": clean, PRIMARY: primary, "corruption/mce": 1.0, "calibration/ece": 0.02}
    return Candidate(name, metrics, True, {}, outcomes)


def _pair(n: int, both: int, only_new: int, only_old: int) -> tuple[np.ndarray, np.ndarray]:
    """Outcomes of two models on the same n images: ``both`` right for both, then the discordant
    images; the rest wrong for both."""
    new, old = np.zeros(n, bool), np.zeros(n, bool)
    new[:both] = old[:both] = True
    new[both : both + only_new] = True
    old[both + only_new : both + only_new + only_old] = True
    return new, old


# ---- item 11: a lead within noise is not a win ------------------------------------------------


def test_mcnemar_is_the_exact_one_sided_binomial_test_on_the_discordant_images():
    new, old = _pair(400, 300, 9, 3)
    b, c, p = mcnemar(new, old)
    assert (b, c) == (9, 3)
    assert p == pytest.approx(binomtest(9, 12, 0.5, alternative="greater").pvalue)
    assert mcnemar(old, old) == (0, 0, 1.0)  # identical outcomes: nothing says either is better
    assert mcnemar(old, new)[2] > 0.9  # the champion being better is not evidence for the challenger


def test_a_lead_within_noise_on_the_same_images_keeps_the_champion():
    """Old code promoted any higher primary: 0.7725 against 0.7575 on 400 images (6 images net)."""
    cfg = GateConfig()
    new, old = _pair(400, 300, 9, 3)
    champ = Champion({"clean/acc": 0.97, PRIMARY: old.mean()}, "champion (version 1)", DIGITS, old)
    d = decide([_cand("at", new.mean(), new)], champ, cfg, data=DIGITS)
    assert not d.promote and d.challenger == "at"
    assert (
        d.noise["method"] == "mcnemar" and d.noise["only_challenger"] == 9 and d.noise["only_champion"] == 3
    )
    p = binomtest(9, 12, 0.5, alternative="greater").pvalue
    assert d.noise["p_value"] == pytest.approx(p) and p >= cfg.significance
    assert "within noise" in d.summary and "McNemar" in d.summary and f"p = {p:.3g}" in d.summary
    assert "champion (version 1) unchanged" in d.summary
    assert any(line.startswith("noise: one-sided exact McNemar") for line in d.comparison)
    # A clear lead on the same images is promoted, and the decision says by which test.
    new, old = _pair(400, 300, 30, 5)
    champ = Champion({"clean/acc": 0.97, PRIMARY: old.mean()}, "champion", DIGITS, old)
    win = decide([_cand("at", new.mean(), new)], champ, cfg, data=DIGITS)
    assert win.promote and win.noise["method"] == "mcnemar" and win.noise["p_value"] < 0.05
    assert "beyond noise (McNemar p = " in win.summary and "on 400 paired images" in win.summary


def test_without_paired_outcomes_the_margin_decides_and_the_decision_says_why():
    cfg = GateConfig(margin=0.02)
    old = {"clean/acc": 0.97, PRIMARY: 0.80}
    small = decide([_cand("at", 0.815)], old, cfg)
    assert not small.promote and small.noise["method"] == "margin"
    assert "not above gate.margin 0.02" in small.summary and "no paired test" in small.summary
    big = decide([_cand("at", 0.83)], old, cfg)
    assert big.promote and big.noise["method"] == "margin" and "margin 0.02" in big.summary
    # Outcomes of different lengths are not the same images: the margin, with the reason.
    new, old_outcomes = np.ones(100, bool), np.ones(90, bool)
    champ = Champion(old, "champion", DIGITS, old_outcomes)
    d = decide([_cand("at", 0.815, new)], champ, cfg)
    assert d.noise["method"] == "margin" and "100 and 90 images" in d.noise["why"]


# ---- item 4: a challenger of other data is refused --------------------------------------------


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (DataSignature.of((3, 8, 8), [str(i) for i in range(10)]), "3 input channels, the champion's 1"),
        (DataSignature.of((1, 12, 12), [str(i) for i in range(10)]), "input size 12x12, the champion's 8x8"),
        (DataSignature.of((1, 8, 8), [str(i) for i in range(5)]), "5 classes, the champion's 10"),
        (DataSignature.of((1, 8, 8), list("abcdefghij")), "classes a, b, c"),
    ],
)
def test_a_challenger_of_other_data_is_refused_with_the_reason(data, said):
    champ = Champion({"clean/acc": 0.5, PRIMARY: 0.1}, "champion (version 2)", DIGITS)
    d = decide([_cand("at", 0.99)], champ, GateConfig(), data=data)
    assert not d.promote and d.challenger == "at"
    assert said in d.summary and "trained on other data" in d.summary
    assert "mlflow.registered_model" in d.summary  # the fix
    assert decide([_cand("at", 0.99)], champ, GateConfig(), data=DIGITS).promote  # same data: compared


# ---- the per-image outcomes are the scorecard's own numbers -----------------------------------


@pytest.fixture(scope="module")
def card(trained, digits_split) -> Scorecard:
    return evaluate(
        ScoreInputs(
            trained.model, digits_split.test, quick(corruptions=["fog"], severities=[1]), val=digits_split.val
        )
    )


def test_primary_outcomes_reproduce_the_scorecard_metric(card):
    members = [a.label for a in ensemble_for(quick(), 0.2, 0)]
    for key in ["adv/autoattack/eps_0.2/acc", "adv/worst/eps_0.2/acc", "adv/pgd_linf/eps_0.05/acc",
                "adv/apgd_dlr/eps_0.2/acc"]:  # fmt: skip
        outcomes = primary_outcomes(card.masks, key, members)
        assert outcomes is not None and len(outcomes) == card.n_attacked == 100
        assert outcomes.mean() == pytest.approx(card.metrics[key]), key
    assert primary_outcomes(card.masks, "clean/acc", members) is None  # not kept: the margin decides
    assert primary_outcomes(card.masks, "adv/autoattack/eps_0.3/acc", members) is None


# ---- items 4, 7, 11 against a real registry ---------------------------------------------------


def _store(root: Path, *extra: str) -> Config:
    return load_config(
        None,
        [f"mlflow.tracking_uri=sqlite:///{root}/mlflow.db", f"mlflow.artifact_root={root}/art",
         "mlflow.experiment=gate-registry", "evaluation.max_samples=100", "evaluation.autoattack.eps=[0.2]",
         "gate={primary: adv/autoattack/eps_0.2/acc, min: {clean/acc: 0.5}, max: {}, require_masking: false, "
         "spec_checks: []}", *extra],
    )  # fmt: skip


def _register(cfg: Config, card: Scorecard, name: str, test: Dataset) -> tuple[str, str, str]:
    """A parent run, a model run and a registered version of it, as the pipeline records them
    (the model files themselves are not needed by the gate)."""
    from adapters import tracking
    from tasks.record import open_pipeline_run, register_model

    m = cfg.mlflow
    parent = open_pipeline_run.fn(cfg, None)
    run_id = tracking.start_run(m, name, parent_id=parent)
    tracking.log_metrics(m, run_id, card.metrics)
    tracking.end_run(m, run_id, True)
    uri = f"{tracking.run_info(m, run_id).info.artifact_uri}/guarded_model"
    return parent, run_id, register_model.fn(cfg, uri, run_id, card, name, test, parent)


def _with_flips(card: Scorecard, n: int) -> Scorecard:
    """The card of a model that gets ``n`` more attacked images right under every attack."""
    masks = {k: v.copy() for k, v in card.masks.items()}
    members = [a.label for a in ensemble_for(quick(), 0.2, 0)]
    wrong = np.flatnonzero(~primary_outcomes(masks, "adv/autoattack/eps_0.2/acc", members))
    for v in masks.values():
        v[wrong[:n]] = True
    metrics = dict(card.metrics)
    for key in [k for k in metrics if k.startswith("adv/") and k.endswith("/acc")]:
        outcomes = primary_outcomes(masks, key, members)
        if outcomes is not None:
            metrics[key] = float(outcomes.mean())
    return Scorecard(metrics, card.confusion, card.classes, masks=masks, masking=card.masking,
                     n_test=card.n_test, n_attacked=card.n_attacked)  # fmt: skip


def test_versions_carry_scores_data_and_outcomes_and_the_gate_pairs_them(tmp_path, card, digits_split):
    from tasks.gate import promote

    cfg = _store(tmp_path)
    c = MlflowClient(cfg.mlflow.tracking_uri)
    model = cfg.mlflow.registered_model
    assert model == "robustops-digits"  # derived from the data: no name was configured
    parent, run_id, v1 = _register(cfg, card, "first", digits_split.test)
    first = promote.fn(cfg, parent, {"first": card}, {"first": v1})
    assert first.promote
    mv = c.get_model_version(model, v1)
    t = mv.tags
    assert "pgd_acc" not in t  # CE-PGD at the largest eps: the score masking fools
    assert t["primary"] == f"adv/autoattack/eps_0.2/acc = {card.metrics['adv/autoattack/eps_0.2/acc']:.4f}"
    assert t["worst_case"] == f"adv/worst/eps_0.2/acc = {card.metrics['adv/worst/eps_0.2/acc']:.4f}"
    assert t["masking"] == "passed" if card.masking_passed else t["masking"].startswith("FAILED: ")
    assert t["data.source"] == "digits" and t["data.shape"] == "1x8x8"
    assert t["data.classes"] == "10: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9" and t["parent_run"] == parent
    # The description: the gate's verdict first, then what the version is and where its scorecard is.
    assert mv.description.startswith("**Gate:** the challenger, promoted to @champion. The run's decision: ")
    assert "trained on digits (1x8x8, 10 classes)" in mv.description
    assert f"`report/scorecard.html` of the parent run `{parent}`" in mv.description
    # Its per-image outcomes on the primary, on a fingerprinted set of test images.
    local = c.download_artifacts(run_id, "gate/primary_outcomes.npz", str(tmp_path))
    with np.load(local, allow_pickle=False) as f:
        members = [a.label for a in ensemble_for(cfg.evaluation, 0.2, 0)]
        np.testing.assert_array_equal(f["correct"], primary_outcomes(card.masks, cfg.gate.primary, members))
        assert (
            str(f["metric"]) == cfg.gate.primary and str(f["fingerprint"]) == t["robustops.test_fingerprint"]
        )
    ix = np.sort(np.random.default_rng(cfg.seed).permutation(len(digits_split.test.y))[:100])
    assert t["robustops.test_fingerprint"] == images_fingerprint(
        digits_split.test.x[ix], digits_split.test.y[ix]
    )

    # Two more images right: a higher primary, within noise on the same 100 images.
    near = _with_flips(card, 2)
    assert near.metrics[cfg.gate.primary] > card.metrics[cfg.gate.primary]
    parent2, _, v2 = _register(cfg, near, "near", digits_split.test)
    d = promote.fn(cfg, parent2, {"near": near}, {"near": v2})
    assert not d.promote and d.noise["method"] == "mcnemar" and d.noise["n"] == 100
    assert (d.noise["only_challenger"], d.noise["only_champion"]) == (2, 0) and d.noise["p_value"] == 0.25
    assert c.get_model_version_by_alias(model, "champion").version == v1
    assert c.get_model_version(model, v2).description.startswith("**Gate:** the challenger, not promoted")
    decision = json.loads(
        Path(c.download_artifacts(parent2, "gate/decision.json", str(tmp_path))).read_text()
    )
    assert decision["noise"]["method"] == "mcnemar" and "McNemar" in decision["summary"]

    # Fifteen more images right: beyond noise (p = 0.5 ** 15), promoted.
    far = _with_flips(card, 15)
    parent3, _, v3 = _register(cfg, far, "far", digits_split.test)
    d = promote.fn(cfg, parent3, {"far": far}, {"far": v3})
    assert d.promote and d.noise["method"] == "mcnemar" and d.noise["p_value"] == pytest.approx(0.5**15)
    assert c.get_model_version_by_alias(model, "champion").version == v3

    # A model of other data under the same name: refused, whatever its scores; the champion stays.
    rgb = Dataset(
        np.repeat(digits_split.test.x, 3, axis=1), digits_split.test.y, digits_split.test.classes, "rgb"
    )
    better = _with_flips(card, 40)
    parent4, _, v4 = _register(cfg, better, "rgb", rgb)
    assert c.get_model_version(model, v4).tags["data.shape"] == "3x8x8"
    d = promote.fn(cfg, parent4, {"rgb": better}, {"rgb": v4})
    assert not d.promote and "3 input channels, the champion's 1" in d.summary
    assert c.get_model_version_by_alias(model, "champion").version == v3
    assert "trained on other data" in c.get_model_version(model, v4).description


def test_scorecard_link_is_an_mlflow_ui_url_without_credentials(monkeypatch):
    from adapters.tracking import ui_url
    from robustops.config import MlflowConfig

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://ml:secret@mlflow.example:5000/")
    url = ui_url(MlflowConfig(), "abc", "7", artifact="report/scorecard.html")
    assert url == (
        "https://mlflow.example:5000/#/experiments/7/runs/abc/artifacts/report/scorecard.html"
        "?workflowType=machine_learning"
    )


# ---- item 4: the default registered model name says which data ---------------------------------


def test_the_default_registered_model_is_named_after_the_data(tmp_path):
    assert Config().mlflow.registered_model == "robustops-digits"
    assert Config().monitored_model == "models:/robustops-digits@champion"
    npz = load_config(None, ["data.source=npz", f"data.path={tmp_path}/new writers (v2).npz"])
    assert npz.mlflow.registered_model == "robustops-new-writers-v2"
    assert npz.monitored_model == "models:/robustops-new-writers-v2@champion"  # monitor/predict/serve
    folder = load_config(None, ["data.source=folder", "data.path=photos/cams/"])
    assert folder.mlflow.registered_model == "robustops-cams"
    odd = load_config(None, ["data.source=folder", "data.path=/tmp/:@/"])
    assert odd.mlflow.registered_model == "robustops-folder"
    for cfg in (npz, folder, odd):
        assert names.registered_model_name(cfg.mlflow.registered_model)  # a valid MLflow name
        assert resolve(Config.model_validate(cfg.model_dump(mode="json"))) == cfg  # resolved once, stable
    named = load_config(None, ["data.source=npz", "data.path=a.npz", "mlflow.registered_model=mine"])
    assert named.mlflow.registered_model == "mine" and named.monitored_model == "models:/mine@champion"


# ---- item 10: one line per model at the end of a run ------------------------------------------


def test_model_lines_say_pass_or_fail_the_primary_and_the_first_reason():
    scores = {"baseline": {PRIMARY: 0.01}, "pgd_at": {PRIMARY: 0.74}, "trades": {PRIMARY: 0.71}}
    decision = {
        "challenger": "pgd_at",
        "reason": "promoted: first champion",
        "failures": {"baseline": [f"{PRIMARY} 0.0100 < 0.7", "failed specification check recall_floor"],
                     "pgd_at": [], "trades": []},
    }  # fmt: skip
    lines = model_lines(decision, scores, PRIMARY)
    assert lines == [
        f"  FAIL  baseline  {PRIMARY} 0.0100  {PRIMARY} 0.0100 < 0.7 (+1 more)",
        f"  PASS  pgd_at    {PRIMARY} 0.7400  the challenger: promoted: first champion",
        f"  PASS  trades    {PRIMARY} 0.7100  passed; pgd_at scores higher on the primary",
    ]
    # No model passed: every reason of every model, not only the summary.
    none = {"challenger": None, "failures": {"a": ["x < 1", "y > 2"], "b": ["z missing"]}}
    assert model_lines(none, {"a": {PRIMARY: 0.5}, "b": {}}, PRIMARY) == [
        f"  FAIL  a  {PRIMARY} 0.5000  x < 1",
        "           - y > 2",
        f"  FAIL  b  {PRIMARY} -  z missing",
    ]


# On top of tests/tiny.yaml: a run on a user's own data, named after it (no registered model
# name), every class whole, a baseline and one fast defence, no synthesis, no adversarial set.
OWN_DATA_RUN = [
    "train.epochs=4",
    "model.hidden=32",
    "data.train_class_fraction={}",
    "mlflow.registered_model=null",
    "evaluation.eps=[0.1]",
    "evaluation.l2_eps=[0.5]",
    "evaluation.pgd_steps=2",
    "evaluation.max_samples=48",
    "evaluation.autoattack={eps: [0.1], apgd_steps: 5, square_queries: 20}",
    "evaluation.masking.more_steps=4",
    "evaluation.corruptions=[fog]",
    "evaluation.severities=[1]",
    "adversarial_set={enabled: false}",
    "synthesis={enabled: false}",
    "defences=[{name: fgsm_rs, epochs: 1}]",
    "gate={primary: adv/autoattack/eps_0.1/acc, min: {clean/acc: 0.3}, max: {}, require_masking: false, "
    "spec_checks: []}",
]


@pytest.mark.slow
def test_a_run_on_own_data_registers_under_its_name_and_prints_a_line_per_model(
    prefect_harness, tmp_path, digits, capsys
):
    from adapters import tracking
    from app.cli import main

    path = tmp_path / "writers.npz"
    np.savez(path, x=digits.x[:, 0], y=digits.y)  # the digits, as a user's own .npz file
    sets = [*OWN_DATA_RUN, "data.source=npz", f"data.path={path}",
            f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db", f"mlflow.artifact_root={tmp_path}/art"]  # fmt: skip
    assert main(["run", *tiny_args(sets)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    gate = next(i for i, line in enumerate(lines) if line.startswith("gate:"))
    per_model = lines[gate + 1 : gate + 3]
    assert sorted(line.split()[1] for line in per_model) == ["baseline", "fgsm_rs"]
    for line in per_model:
        verdict, _, primary, score, *reason = line.split()
        assert verdict in ("PASS", "FAIL") and primary == PRIMARY and 0 <= float(score) <= 1 and reason
    assert "registered: robustops-writers:" in out
    cfg = load_config(TINY_CONFIG, sets)
    assert cfg.monitored_model == "models:/robustops-writers@champion"
    champion = tracking.resolve_model(cfg.mlflow, cfg.monitored_model)  # what monitor/predict/serve load
    assert champion.tags["data.source"] == f"npz: {path}" and champion.tags["data.shape"] == "1x8x8"
    assert champion.description.startswith("**Gate:** the challenger, promoted to @champion")
