"""Expected accuracy without labels: the estimators on a tiny model, their storage with the drift
reference, and the monitor's alerts (the flow's end-to-end check is in test_flow)."""

from __future__ import annotations

import typing

import numpy as np
import pytest
import torch

from robustops.config import MonitorConfig
from robustops.corruptions import CORRUPTIONS
from robustops.monitoring import estimate
from robustops.monitoring.features import batch_features
from robustops.monitoring.monitor import alerts, expect, score
from robustops.monitoring.reference import (
    build_reference,
    fit_estimators,
    load_reference,
    save_reference,
    signals,
)
from robustops.serving import GuardedModel, settings_for

HELD_OUT = ("fog", "defocus_blur")


@pytest.fixture(scope="module")
def fitted(trained, digits_split) -> estimate.Fitted:
    return fit_estimators(trained.model, digits_split.val, digits_split.train.classes, HELD_OUT, (1, 3, 5))


def _signals(model, x, classes) -> estimate.Signals:
    table, logits, _ = batch_features(model, x, classes)
    return signals(table, logits)


def test_every_estimator_is_a_plug_in_the_config_can_name():
    assert set(estimate.ESTIMATORS.names()) == {
        "atc_msp",
        "atc_ne",
        "atc_logit_z",
        "doc",
        "temperature",
        "scorecard_match",
    }
    allowed = typing.get_args(MonitorConfig.model_fields["estimator"].annotation)
    assert set(allowed) == set(estimate.ESTIMATORS.names())


def test_on_the_validation_split_itself_the_estimates_are_exact(trained, digits_split, fitted):
    val = _signals(trained.model, digits_split.val.x, digits_split.train.classes)
    acc = float((val.logits.argmax(1) == digits_split.val.y).mean())
    assert fitted.val_acc == pytest.approx(acc) and fitted.n_val == len(digits_split.val.y)
    est = {n: e.estimate(val) for n, e in fitted.estimators.items()}
    # ATC's threshold leaves exactly the validation accuracy's share above it; DoC moves by zero;
    # the clean profile is the nearest to itself.
    for name in ("atc_msp", "atc_ne", "atc_logit_z", "doc", "scorecard_match"):
        assert est[name] == pytest.approx(acc, abs=1e-6), name
    assert abs(est["temperature"] - acc) < 0.05  # calibrated confidence: close, not exact
    # A batch of copies of validation images gives the validation estimate.
    twice = estimate.Signals(np.concatenate([val.logits] * 3), np.concatenate([val.stats] * 3))
    for name, e in fitted.estimators.items():
        assert e.estimate(twice) == pytest.approx(est[name], abs=1e-6), name


def test_estimates_fall_with_a_corruption_that_lowers_accuracy(trained, digits_split, fitted):
    test = digits_split.test
    classes = digits_split.train.classes
    clean = _signals(trained.model, test.x, classes)
    worse = CORRUPTIONS.get("motion_blur")(torch.from_numpy(test.x), 5, 0).numpy()
    dark = _signals(trained.model, worse, classes)
    acc_clean = float((clean.logits.argmax(1) == test.y).mean())
    acc_dark = float((dark.logits.argmax(1) == test.y).mean())
    assert acc_dark < acc_clean - 0.05  # the corruption costs accuracy
    for name, e in fitted.estimators.items():
        assert e.estimate(dark) < e.estimate(clean), name


def test_the_logit_z_score_ignores_a_shift_that_scales_every_logit(trained, digits_split, fitted):
    s = _signals(trained.model, digits_split.test.x, digits_split.train.classes)
    # A fading image shrinks the logits about evenly: the ranking, and so the accuracy, holds.
    faded = estimate.Signals(0.2 * s.logits + 3.0, s.stats)
    z, msp = fitted.estimators["atc_logit_z"], fitted.estimators["atc_msp"]
    assert z.estimate(faded) == pytest.approx(z.estimate(s), abs=1e-9)
    assert msp.estimate(faded) < msp.estimate(s) - 0.2  # the softmax's confidence falls with the scale
    # Images whose logits are all equal carry no ranking: a z-score of 0, not a division by zero.
    assert estimate.top_logit_z(np.ones((2, 10))).tolist() == [0.0, 0.0]


def test_the_bootstrap_interval_holds_the_estimate_and_narrows_with_more_images(
    trained, digits_split, fitted
):
    s = _signals(trained.model, digits_split.test.x, digits_split.train.classes)
    few = estimate.estimate(fitted, s.take(np.arange(30)), boot=100)
    many = estimate.estimate(fitted, s, boot=100)
    for name in fitted.estimators:
        for e in (few[name], many[name]):
            assert e.low <= e.value <= e.high
        assert many[name].high - many[name].low <= few[name].high - few[name].low + 1e-9, name
    assert estimate.estimate(fitted, s, boot=100) == many  # seeded
    with pytest.raises(ValueError, match="no images"):
        estimate.estimate(fitted, s.take(np.arange(0)))


def test_each_estimators_error_under_shift_is_measured_with_the_corruption_left_out(
    trained, digits_split, fitted
):
    classes = digits_split.train.classes
    val = _signals(trained.model, digits_split.val.x, classes)
    y = digits_split.val.y
    shifted = []
    for c in HELD_OUT:
        for sev in (1, 3, 5):
            x = CORRUPTIONS.get(c)(torch.from_numpy(digits_split.val.x), sev, 0).numpy()
            s = _signals(trained.model, x, classes)
            shifted.append(estimate.Shifted(f"{c}/{sev}", s, float((s.logits.argmax(1) == y).mean())))
    # ATC ignores the corrupted splits when fitted: its figure is its plain error on each of them.
    atc = fitted.estimators["atc_msp"]
    direct = np.sqrt(np.mean([(atc.estimate(s.signals) - s.acc) ** 2 for s in shifted]))
    assert estimate.shift_rmse("atc_msp", val, y, shifted) == pytest.approx(direct)
    assert set(fitted.shift_rmse) == set(fitted.estimators)
    # The scorecard match reads its own profiles exactly; with each corruption left out it has to
    # guess from the other, so its figure is a real error, not zero.
    match = fitted.estimators["scorecard_match"]
    assert all(match.estimate(s.signals) == pytest.approx(s.acc, abs=0.02) for s in shifted if s.acc < 0.9)
    assert fitted.shift_rmse["scorecard_match"] > 0.01
    assert estimate.shift_rmse("atc_msp", val, y, []) == 0.0


def test_the_interval_widens_the_bootstrap_by_the_error_under_shift(trained, digits_split, fitted):
    s = _signals(trained.model, digits_split.test.x, digits_split.train.classes)
    wide = estimate.estimate(fitted, s, boot=100)
    plain = estimate.Fitted(fitted.estimators, fitted.val_acc, fitted.n_val, fitted.shifted)
    boot = estimate.estimate(plain, s, boot=100)
    for name, e in wide.items():
        assert e.sampling == boot[name].sampling == (boot[name].low, boot[name].high)
        shift = 1.959964 * fitted.shift_rmse[name]
        assert e.high == pytest.approx(min(e.value + np.hypot(e.sampling[1] - e.value, shift), 1.0), abs=1e-5)
        assert e.low == pytest.approx(max(e.value - np.hypot(e.value - e.sampling[0], shift), 0.0), abs=1e-5)
        assert e.low <= e.sampling[0] <= e.value <= e.sampling[1] <= e.high


def test_an_alert_needs_the_estimate_past_its_bound_and_the_batch_below_beyond_sampling_error():
    cfg = MonitorConfig(max_expected_drop=0.04)

    def fired(value, sampling, cfg=cfg, reference=0.99):
        return alerts(
            estimate.Estimate("atc_msp", value, sampling[0] - 0.1, sampling[1] + 0.1, sampling),
            reference,
            cfg,
        )

    assert fired(0.94, (0.92, 0.965))  # 5 points down, and below 0.99 beyond sampling error
    assert not fired(0.90, (0.70, 1.0))  # a small batch: far down, but within its sampling error
    assert not fired(0.96, (0.95, 0.97))  # surely down, but by less than the drop
    (reason,) = fired(0.94, (0.92, 0.965))
    assert (
        reason.startswith("expected accuracy 0.94 (atc_msp")
        and "0.05 below the validation accuracy 0.99" in reason
    )
    floor = MonitorConfig(max_expected_drop=None, min_expected_acc=0.95)
    assert fired(0.93, (0.90, 0.94), floor) == [fired(0.93, (0.90, 0.94), floor)[0]]
    assert fired(0.93, (0.90, 0.94), floor)[0].endswith("below 0.95")
    assert not fired(0.93, (0.90, 0.96), floor)  # the bound lies within its sampling error
    assert not fired(0.96, (0.95, 0.97), floor)
    assert not fired(0.5, (0.4, 0.6), MonitorConfig(max_expected_drop=None))  # both off


def test_fitted_estimators_are_stored_and_reloaded_with_the_reference(trained, digits_split, tmp_path):
    classes = digits_split.train.classes
    ref = build_reference(trained.model, digits_split.val, classes, corruptions=HELD_OUT, severities=(2, 4))
    assert ref.fitted is not None and ref.fitted.shifted == [f"{c}/{s}" for c in HELD_OUT for s in (2, 4)]
    files = save_reference(ref, tmp_path)
    assert (tmp_path / "estimators.json") in files
    back = load_reference(tmp_path)
    s = _signals(trained.model, digits_split.test.x, classes)
    assert back.fitted.shift_rmse == ref.fitted.shift_rmse and ref.fitted.shift_rmse["atc_msp"] > 0
    assert estimate.estimate(back.fitted, s, boot=20) == estimate.estimate(ref.fitted, s, boot=20)
    (tmp_path / "estimators.json").unlink()  # a model logged before the estimators existed
    assert load_reference(tmp_path).fitted is None


def _guarded(trained) -> GuardedModel:
    return GuardedModel(trained.model, settings_for(trained.blueprint, None))


def test_the_monitor_alerts_on_expected_accuracy_with_its_reason(trained, digits_split, fitted):
    ref = build_reference(trained.model, digits_split.val, digits_split.train.classes, corruptions=HELD_OUT)
    guarded = _guarded(trained)
    test = digits_split.test
    clean = score(guarded, ref, test.x)
    # The tiny model's ATC rests on a dozen validation errors and reads its clean test split 3
    # points low; the default bound is measured on real models by benchmarks/estimate_calibration.py.
    quiet = expect(ref, clean, MonitorConfig(max_expected_drop=0.1), test.y)
    assert quiet is not None and not quiet.alert  # a clean batch fires nothing
    assert quiet.truth == pytest.approx(float((clean.logits.argmax(1) == test.y).mean()))
    m = quiet.metrics()
    default = MonitorConfig().estimator
    assert (
        m["estimate/acc"] == m[f"estimate/acc/{default}"]
        and m["estimate/reference_acc"] == ref.fitted.val_acc
    )
    assert m["estimate/error/doc"] == pytest.approx(m["estimate/acc/doc"] - quiet.truth)
    strict = expect(ref, clean, MonitorConfig(min_expected_acc=1.0), test.y)
    assert strict.alert and strict.reasons[0].endswith("below 1.00")
    assert strict.reasons[0].startswith("expected accuracy ")
    blurred = CORRUPTIONS.get("motion_blur")(torch.from_numpy(test.x), 5, 0).numpy()
    dropped = expect(ref, score(guarded, ref, blurred), MonitorConfig(max_expected_drop=0.05))
    assert dropped.alert and "below the validation accuracy" in dropped.reasons[0]
    assert dropped.truth is None and "estimate/truth" not in dropped.metrics()
    with pytest.raises(Exception, match="logged without it"):
        ref.fitted.estimators.pop("atc_ne")
        expect(ref, clean, MonitorConfig(estimator="atc_ne"))
