"""The robustness scorecard: AutoAttack-grade attacks, masking checks, the four dimensions, the
post-processing layer, the gate's decision and the HTML report."""

from __future__ import annotations

import html.parser

import numpy as np
import pytest
import torch
from torch import nn

from robustops.attacks import APGD, APGDT, PGD, Square
from robustops.catalog import load_config
from robustops.config import EvalConfig, GateConfig, MaskingConfig, SpecificationConfig
from robustops.data import Dataset
from robustops.data.loaders import load_for_model
from robustops.errors import ConfigError, DataValidationError
from robustops.evaluation import evaluate
from robustops.evaluation import postprocess as pp
from robustops.evaluation.gate import Candidate, decide
from robustops.evaluation.html import render
from robustops.evaluation.masking import masking_checks
from robustops.evaluation.perturbation import flip_rate, noise_curves
from robustops.evaluation.scorecard import Scorecard, ScoreInputs, relative_corruption_metrics
from robustops.evaluation.specification import (
    SPEC_CHECKS,
    CheckContext,
    Thresholds,
    edge_inputs,
    run_checks,
    shift_images,
    translate_pixels,
)
from robustops.inference import robust_accuracy
from tests.helpers.models import planted_linear, quick


def _xy(split, n=200):
    return split.test.x[:n], split.test.y[:n]


# ---- AutoAttack-grade attacks ------------------------------------------------------------------


def test_apgd_is_at_least_as_strong_as_pgd(trained, digits_split):
    x, y = _xy(digits_split)
    pgd = robust_accuracy(trained.model, PGD(0.1, steps=20), x, y)
    for loss in ("ce", "dlr"):
        assert robust_accuracy(trained.model, APGD(0.1, steps=50, loss=loss), x, y) <= pgd + 0.02


def test_ours_agree_with_torchattacks(trained, digits_split):
    """APGD-CE, APGD-DLR and APGD-T land within 3 points of torchattacks 3.3.0 on the same model and
    batch; our Square draws its square per image (theirs shares one per batch), so it is at least
    as strong."""
    torchattacks = pytest.importorskip("torchattacks")
    x, y = _xy(digits_split)
    model = trained.model.eval()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def theirs(attack) -> float:
        return float((model(attack(xt, yt)).argmax(1) == yt).float().mean())

    for loss in ("ce", "dlr"):
        ours = robust_accuracy(model, APGD(0.1, steps=50, loss=loss), x, y)
        assert ours == pytest.approx(
            theirs(torchattacks.APGD(model, eps=0.1, steps=50, loss=loss, seed=0)), abs=0.03
        )
    ours = robust_accuracy(model, Square(0.1, queries=300), x, y)
    assert ours <= theirs(torchattacks.Square(model, eps=0.1, n_queries=300, seed=0)) + 0.03
    # APGD-T: 9 targets of 50 steps each, theirs with the same targets and steps.
    ours = robust_accuracy(model, APGDT(0.1, steps=50, targets=9), x, y)
    reference = torchattacks.APGDT(model, eps=0.1, steps=50, n_classes=10, seed=0)
    assert ours == pytest.approx(theirs(reference), abs=0.03)
    assert ours <= robust_accuracy(model, APGD(0.1, steps=50, loss="dlr"), x, y) + 0.03


def test_targeted_dlr_rises_as_the_target_overtakes_and_ignores_scale():
    from robustops.attacks.autoattack import targeted_dlr

    logits = torch.tensor([[3.0, 1.0, 0.5, 0.0, -1.0], [0.0, 2.0, 1.0, -1.0, -2.0]])
    y, t = torch.tensor([0, 1]), torch.tensor([1, 0])
    loss = targeted_dlr(logits, y, t)
    assert (loss < 0).all()  # the target is still below the true class
    assert torch.allclose(targeted_dlr(10 * logits, y, t), loss)  # a temperature changes nothing
    swapped = logits[:, [1, 0, 2, 3, 4]]  # the target now on top
    assert (targeted_dlr(swapped, y, t) > 0).all()


class Quantized(nn.Module):
    """A planted gradient mask: inputs rounded to 4 grey levels before a trained model. The
    rounding has zero gradient almost everywhere, so gradient attacks stall; the model is no more
    robust than the one behind it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * 3) / 3)


def test_masking_checks_flag_a_planted_gradient_mask(trained, digits_split):
    cfg = quick(
        eps=[0.1, 0.2], max_samples=150, autoattack={"eps": [0.2], "apgd_steps": 20, "square_queries": 300}
    )
    honest = evaluate(ScoreInputs(trained.model, digits_split.test, cfg, val=digits_split.val))
    masked = evaluate(
        ScoreInputs(Quantized(trained.model).eval(), digits_split.test, cfg, val=digits_split.val)
    )
    assert honest.masking_passed, [c.detail for c in honest.masking if not c.passed]
    failed = {c.name for c in masked.masking if not c.passed}
    assert {"chance_at_large_eps", "white_box_beats_black_box"} <= failed
    assert masked.metrics["masking/pass"] == 0.0
    # It looks robust to PGD, and the black-box attack shows it is not.
    m = masked.metrics
    assert m["adv/pgd_linf/eps_0.2/acc"] > m["adv/square/eps_0.2/acc"] + 0.2


def test_each_masking_check_by_hand():
    cfg = MaskingConfig(tolerance=0.01, large_eps=0.5)
    good = masking_checks(
        {0.1: 0.5, 0.2: 0.3}, {0.1: 0.4, 0.2: 0.2}, cfg, 0.1, 0.05, {0.1: 0.39}, {0.1: 0.4}, {0.1: 0.45}
    )
    assert all(c.passed for c in good)
    bad = masking_checks(
        {0.1: 0.3, 0.2: 0.3}, {0.1: 0.4, 0.2: 0.5}, cfg, 0.1, 0.6, {0.1: 0.5}, {0.1: 0.4}, {0.1: 0.2}
    )
    assert not any(c.passed for c in bad) and len(bad) == 5
    assert "PGD 0.400 > FGSM 0.300" in bad[0].detail


# ---- perturbation and distribution -----------------------------------------------------------


def test_noise_curves_fall_and_a_constant_model_never_flips(trained, digits_split):
    curves = noise_curves(trained.model, *_xy(digits_split), EvalConfig().noise)
    for name, c in curves.items():
        s = sorted(c)
        assert c[s[-1]] < c[s[0]], name  # the strongest noise hurts most
    const = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    nn.init.zeros_(const[1].weight)
    assert flip_rate(const, digits_split.test.x[:50], EvalConfig().noise) == 0.0


def test_mce_and_relative_mce_by_hand():
    def card(clean, acc):
        return Scorecard({"clean/acc": clean}, np.zeros((2, 2)), ["a", "b"], corruption=acc)

    base = card(0.9, {"fog": {1: 0.8, 2: 0.6}, "blur": {1: 0.7, 2: 0.5}})
    model = card(0.95, {"fog": {1: 0.9, 2: 0.8}, "blur": {1: 0.7, 2: 0.5}})
    m = relative_corruption_metrics(model, base)
    assert m["corruption/fog/ce"] == pytest.approx((0.1 + 0.2) / (0.2 + 0.4))
    assert m["corruption/blur/ce"] == pytest.approx(1.0)
    assert m["corruption/mce"] == pytest.approx((0.5 + 1.0) / 2)
    rel_fog = ((0.1 - 0.05) + (0.2 - 0.05)) / ((0.2 - 0.1) + (0.4 - 0.1))
    rel_blur = ((0.3 - 0.05) + (0.5 - 0.05)) / ((0.3 - 0.1) + (0.5 - 0.1))
    assert m["corruption/relative_mce"] == pytest.approx((rel_fog + rel_blur) / 2)
    assert relative_corruption_metrics(base, base)["corruption/mce"] == 1.0


def test_shift_data_maps_classes_by_name(tmp_path, digits):
    x = (digits.x[:40, 0] * 255).astype(np.uint8)
    y = digits.y[:40]
    keep = y >= 3  # only some classes, labelled as the training class names
    np.savez(tmp_path / "shift.npz", x=x[keep], y=y[keep])
    ds = load_for_model("npz", tmp_path / "shift.npz", (1, 8, 8), digits.classes)
    np.testing.assert_array_equal(ds.y, y[keep])
    assert ds.classes == digits.classes
    big = load_for_model("npz", tmp_path / "shift.npz", (3, 16, 16), digits.classes)
    assert big.x.shape[1:] == (3, 16, 16)
    np.savez(tmp_path / "bad.npz", x=x, y=y + 100)
    with pytest.raises(DataValidationError, match="class\\(es\\) .*'100'.* the model does not know"):
        load_for_model("npz", tmp_path / "bad.npz", (1, 8, 8), digits.classes)


def test_shift_data_in_the_scorecard(trained, digits_split, digits):
    shifted = Dataset(
        np.clip(digits_split.test.x * 0.6 + 0.3, 0, 1), digits_split.test.y, digits.classes, "shift"
    )
    card = evaluate(
        ScoreInputs(trained.model, digits_split.test, quick(autoattack={"enabled": False}), shift=shifted)
    )
    assert card.metrics["shift/acc"] < card.metrics["clean/acc"]


# ---- post-processing ---------------------------------------------------------------------------


def test_threshold_meets_the_target_risk_by_hand():
    conf = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6])
    correct = np.array([True, True, True, False, True, False])
    assert pp.threshold_for_risk(conf, correct, 0.0) == 0.9  # the top three are right
    assert pp.threshold_for_risk(conf, correct, 0.2) == 0.7  # 1 error in 5 accepted
    assert pp.threshold_for_risk(conf, ~correct | True, 0.0) == 0.6  # all right: accept all
    assert pp.threshold_for_risk(conf, np.zeros(6, bool), 0.1) > 1.0  # nothing meets it: reject all
    cov, risk = pp.risk_coverage(conf, correct)
    assert cov[-1] == 1.0 and risk[2] == 0.0 and risk[-1] == pytest.approx(2 / 6)


def test_calibration_and_auroc_by_hand():
    conf = np.array([0.9] * 10 + [0.6] * 10)
    correct = np.array([True] * 9 + [False] + [True] * 6 + [False] * 4)
    assert pp.calibration(conf, correct, 10).ece == pytest.approx(0.0)  # 90 % right at 0.9, 60 % at 0.6
    assert pp.calibration(conf, np.ones(20, bool), 10).ece == pytest.approx((0.1 * 10 + 0.4 * 10) / 20)
    assert pp.auroc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert pp.auroc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 0.0


def test_ood_scores_separate_noise_from_digits(trained, digits_split):
    cfg = quick(autoattack={"enabled": False})
    m = evaluate(
        ScoreInputs(trained.model, digits_split.test, cfg, val=digits_split.val, train=digits_split.train)
    ).metrics
    assert m["ood/uniform_noise/auroc_energy"] > 0.8 and m["ood/uniform_noise/auroc_mahalanobis"] > 0.8
    assert m["selective/risk"] <= 0.05 and m["selective/coverage"] > 0.5


# ---- specification -----------------------------------------------------------------------------


NO_GUARD = Thresholds(0.0, -np.inf)  # answers everything


def _ctx(model, split, thresholds=NO_GUARD, **cfg) -> CheckContext:
    counts = dict(zip(split.train.classes, map(int, np.bincount(split.train.y)), strict=True))
    return CheckContext(
        model, split.test.x, split.test.y, split.test.classes, counts, thresholds, SpecificationConfig(**cfg)
    )


def test_spec_checks_on_a_trained_model(trained, digits_split):
    ctx = _ctx(trained.model, digits_split, invariances=["gaussian_blur:1"], recall_floor=0.8)
    got = {c.name: c for c in run_checks(ctx)}
    assert set(got) == set(SpecificationConfig().checks) | {"invariance_gaussian_blur_s1"}
    assert got["invariance_brightness"].passed and got["recall_floor"].passed
    # With no guard every edge input is answered: noise images confidently, so the check fails.
    assert not got["edge_noise"].passed
    guarded = {c.name: c for c in run_checks(_ctx(trained.model, digits_split, Thresholds(1.01, np.inf)))}
    assert all(guarded[f"edge_{k}"].passed for k in ("blank", "constant", "inverted", "saturated", "noise"))


def test_the_translation_check_scales_with_the_image_size():
    """The default shift is a share of the side: a quarter pixel on 8x8, one pixel on 32x32;
    ``translate_px`` still sets pixels. The shift is bilinear and moves content the right way."""
    cfg = SpecificationConfig()
    assert translate_pixels(cfg, (5, 1, 8, 8)) == (0.25, 0.25)
    assert translate_pixels(cfg, (5, 3, 32, 32)) == (1.0, 1.0)
    assert translate_pixels(cfg, (5, 3, 16, 64)) == (0.5, 2.0)
    assert translate_pixels(SpecificationConfig(translate_px=2), (5, 3, 32, 32)) == (2, 2)
    dot = np.zeros((1, 1, 6, 6), np.float32)
    dot[..., 2, 3] = 1.0
    down = shift_images(dot, 0.25, 0)
    assert down.dtype == np.float32 and down[0, 0, 2, 3] == 0.75 and down[0, 0, 3, 3] == 0.25
    assert down.sum() == pytest.approx(1.0)
    left = shift_images(dot, 0, -1)
    assert left[0, 0, 2, 2] == 1.0 and left.sum() == 1.0  # a whole pixel is an exact move
    # At the border the edge pixels extend: a bright frame stays bright, no dark line enters.
    frame = np.ones((1, 1, 6, 6), np.float32)
    assert np.array_equal(shift_images(frame, 0.25, -1.5), frame)


def test_the_default_translation_check_passes_a_good_digits_model(trained, digits_split):
    """A 1-pixel shift is an eighth of an 8x8 digit: an accurate model fails it (the check once
    failed every model of the default run). The default asks what a 1-pixel shift asks of a 32x32
    image, which an accurate model meets; a shift of a quarter of the side still fails it."""
    ctx = _ctx(trained.model, digits_split, checks=["invariance_translate"])
    check = run_checks(ctx)[0]
    assert check.passed and "0.25-pixel shift" in check.detail, check.detail
    whole = run_checks(_ctx(trained.model, digits_split, checks=["invariance_translate"], translate_px=1))[0]
    assert not whole.passed and "1-pixel shift" in whole.detail, whole.detail
    large = run_checks(
        _ctx(trained.model, digits_split, checks=["invariance_translate"], translate_fraction=0.25)
    )[0]
    assert not large.passed, large.detail


def test_spec_floors_catch_a_model_that_ignores_a_class(trained, digits_split):
    import copy

    never3 = copy.deepcopy(trained.model)
    with torch.no_grad():
        [m for m in never3.modules() if isinstance(m, nn.Linear)][-1].bias[3] = -1e4
    got = {c.name: c for c in run_checks(_ctx(never3, digits_split, recall_floor=0.0))}
    assert got["recall_floor"].passed  # a floor of 0 allows anything
    got = {c.name: c for c in run_checks(_ctx(never3, digits_split, checks=["recall_floor"]))}
    assert not got["recall_floor"].passed and "class 3" in got["recall_floor"].detail


def test_users_extend_the_suite():
    with pytest.raises(ConfigError, match="unknown specification check 'telepathy'"):
        load_config(None, ["evaluation.specification.checks=[telepathy]"])
    with pytest.raises(ConfigError, match="severity must be 1..5"):
        load_config(None, ["evaluation.specification.invariances=[fog:9]"])
    assert "edge_noise" in SPEC_CHECKS and set(edge_inputs(np.zeros((5, 1, 8, 8), np.float32), 0)) == {
        "blank", "constant", "inverted", "saturated", "noise"
    }  # fmt: skip


# ---- the gate ---------------------------------------------------------------------------------


def _cand(name, primary, clean=0.97, masking=True, spec=True):
    m = {
        "clean/acc": clean,
        "adv/autoattack/eps_0.1/acc": primary,
        "corruption/mce": 1.0,
        "calibration/ece": 0.02,
    }
    return Candidate(name, m, masking, {"recall_floor": spec})


def test_gate_picks_the_best_passing_model_and_explains_the_rest():
    cfg = GateConfig()
    d = decide([_cand("base", 0.6), _cand("at", 0.85), _cand("masked", 0.95, masking=False)], None, cfg)
    assert d.promote and d.challenger == "at"
    assert "adv/autoattack/eps_0.1/acc 0.6000 < 0.7" in d.failures["base"]
    assert any("gradient-masking" in r for r in d.failures["masked"]) and d.failures["at"] == []


def test_gate_against_a_champion():
    cfg = GateConfig(tolerance=0.01)
    champ = _cand("old", 0.80).metrics
    assert decide([_cand("new", 0.85)], champ, cfg).promote
    keep = decide([_cand("new", 0.79)], champ, cfg)
    assert not keep.promote and "does not beat" in keep.summary
    regress = decide([_cand("new", 0.85, clean=0.955)], champ, cfg)  # 1.5 points of clean accuracy lost
    assert not regress.promote and "clean/acc regresses by 0.0150" in regress.summary
    none = decide([_cand("x", 0.5)], champ, cfg)
    assert not none.promote and none.challenger is None and "unchanged" in none.summary


def test_html_report_is_self_contained(trained, digits_split):
    from robustops.evaluation.html import png
    from robustops.evaluation.plots import scorecard_figures

    card = evaluate(
        ScoreInputs(
            trained.model, digits_split.test, quick(autoattack={"enabled": False}), val=digits_split.val
        )
    )
    d = decide(
        [Candidate("mlp", card.metrics, card.masking_passed, {})],
        None,
        GateConfig(min={}, max={}, primary="clean/acc"),
    )
    plots = {"mlp": {k: png(f) for k, f in scorecard_figures(card, "mlp").items()}}
    page = render("t", {"mlp": card.metrics, "other": {"clean/acc": 0.5}}, {"mlp": [c.as_dict() for c in card.masking]},
                  {"mlp": [c.as_dict() for c in card.specification]}, plots, d)  # fmt: skip
    parser = html.parser.HTMLParser()
    parser.feed(page)
    assert page.count("data:image/png;base64,") == len(plots["mlp"]) + 1  # and accuracy over eps, every model
    assert "http" not in page.replace("http-equiv", "")  # nothing to fetch
    assert "mlp passed the gate" in page and "<td>-</td>" in page  # the other model lacks most metrics


def test_report_strikes_through_untrusted_adversarial_scores():
    metrics = {"honest": {"adv/pgd_linf/eps_0.1/acc": 0.6, "clean/acc": 0.9},
               "masked": {"adv/pgd_linf/eps_0.1/acc": 0.9, "clean/acc": 0.95}}  # fmt: skip
    masking = {"honest": [{"name": "c", "passed": True, "detail": ""}],
               "masked": [{"name": "c", "passed": False, "detail": "x"}]}  # fmt: skip
    page = render("t", metrics, masking, {}, {})
    assert '<td class="untrusted" title="failed a gradient-masking check">0.9000</td>' in page
    assert '<td class="best">0.6000</td>' in page  # the honest model is the best trusted score
    assert '<td class="best">0.9500</td>' in page  # clean accuracy is not an adversarial score


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_standard_autoattack_finds_the_planted_robust_subset(norm):
    """On a model whose robust images are known in closed form, our standard version (in either
    ball) scores exactly the planted share, and so do the members torchattacks'
    AutoAttack(version="standard") runs, at the same budgets, where torchattacks is installed."""
    from robustops.evaluation.scorecard import ensemble_for
    from robustops.inference import robust_mask

    l2 = norm == "L2"
    eps = 0.3 if l2 else 0.05
    model, x, y, robust = planted_linear(eps, norm)
    radii = {"l2_eps": [eps], "eps": []} if l2 else {"eps": [eps]}
    cfg = quick(autoattack={"version": "standard", "apgd_steps": 20, "square_queries": 200} | radii)
    members = ensemble_for(cfg, eps, 0, l2)
    suffix = "_l2" if l2 else ""
    assert [a.label for a in members] == [f"{m}{suffix}" for m in ("apgd", "apgd_t", "fab_t", "square")]
    masks = [robust_mask(model, a, x, y, batch_size=8) for a in members]
    assert np.array_equal(np.logical_and.reduce(masks), robust)  # exactly the planted robust images survive
    for a in members:  # every example each member returns lies in its ball and in [0, 1]
        adv = a(model, torch.from_numpy(x), torch.from_numpy(y)) - torch.from_numpy(x)
        size = adv.flatten(1).norm(dim=1) if l2 else adv.flatten(1).abs().amax(1)
        assert float(size.max()) <= eps + 1e-5, a.label
    try:
        import torchattacks
    except ImportError:
        return
    # The members torchattacks' AutoAttack(version="standard") builds, at this test's budgets.
    kw = {"model": model, "eps": eps, "norm": norm, "seed": 0, "n_restarts": 1}
    reference = torchattacks.MultiAttack([
        torchattacks.APGD(**kw, loss="ce", steps=20),
        torchattacks.APGDT(**kw, n_classes=10, steps=20),
        torchattacks.FAB(**kw, multi_targeted=True, n_classes=10, steps=20),
        torchattacks.Square(**kw, n_queries=200),
    ])  # fmt: skip
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    theirs = (model(reference(xt, yt)).argmax(1) == yt).numpy()
    assert np.array_equal(theirs, robust)
