"""Minority-class synthesis: detection, exact fill, valid samples, both generators, the judge."""

from __future__ import annotations

import numpy as np
import pytest

from robustops.config import SynthesisConfig
from robustops.data import thin_classes
from robustops.data.synthesis import GENERATORS, plan, synthesize
from robustops.errors import DataValidationError
from robustops.evaluation.synthetic import judge_synthetic


@pytest.fixture(scope="module")
def rare(digits_split):
    """The digits training split with class '3' cut to 5 %."""
    return thin_classes(digits_split.train, {"3": 0.05}, seed=0)


def test_plan_fills_only_minorities():
    counts = np.array([100, 100, 10, 49, 50])
    np.testing.assert_array_equal(plan(counts, 0.5, 1.0), [0, 0, 90, 51, 0])
    np.testing.assert_array_equal(plan(counts, 0.5, 0.6), [0, 0, 50, 11, 0])
    assert plan(np.array([10, 10]), 0.5, 1.0).sum() == 0


def test_thin_classes_keeps_the_share_and_at_least_one(digits_split, rare):
    before = digits_split.train.counts()
    after = rare.counts()
    assert after["3"] == round(before["3"] * 0.05) and after["4"] == before["4"]
    assert thin_classes(digits_split.train, {"3": 0.0001}, 0).counts()["3"] == 1
    with pytest.raises(DataValidationError, match="unknown class"):
        thin_classes(digits_split.train, {"cat": 0.5}, 0)


def test_balanced_data_is_left_alone(digits_split):
    r = synthesize(digits_split.train, SynthesisConfig(), seed=0)
    assert r.made == {} and r.train is digits_split.train and len(r.y) == 0


@pytest.mark.parametrize("name", GENERATORS.names())
def test_generators_fill_minority_with_valid_samples(name, rare):
    cfg = SynthesisConfig(generator=name, epochs=5)
    r = synthesize(rare, cfg, seed=0)
    top = max(rare.counts().values())
    assert r.made == {"3": top - rare.counts()["3"]}
    assert r.after["3"] == top and r.after["4"] == rare.counts()["4"]
    assert r.x.shape == (r.made["3"], 1, 8, 8) and r.x.dtype == np.float32
    assert r.x.min() >= 0 and r.x.max() <= 1 and (r.y == 3).all()
    assert len({x.tobytes() for x in r.x}) > 0.9 * len(r.x)  # varied, not copies
    np.testing.assert_array_equal(synthesize(rare, cfg, seed=0).x, r.x)  # seeded


def test_interpolated_samples_look_like_their_class(digits_split, rare):
    r = synthesize(rare, SynthesisConfig(generator="interpolate"), seed=0)
    q = judge_synthetic(rare, digits_split.val, r.x, r.y, seed=0)
    # The judge saw only 6 distinct real '3's (resampled to balance the classes); chance is 0.1.
    assert q["synth/judge/acc"] > 0.5 and q["synth/judge/real_val_acc"] > 0.85
    assert "synth/judge/acc/class_3" in q


def test_interpolate_mix_zero_without_jitter_copies_real_samples(rare):
    r = synthesize(rare, SynthesisConfig(generator="interpolate", mix=0.0, jitter=0.0), seed=0)
    real = rare.x[rare.y == 3].reshape(1, -1, 64)
    gap = np.abs(r.x.reshape(-1, 1, 64) - real).max(axis=2).min(axis=1)  # to the nearest real '3'
    assert gap.max() < 1e-5
    mixed = synthesize(rare, SynthesisConfig(generator="interpolate", mix=1.0, jitter=0.0), seed=0)
    gap = np.abs(mixed.x.reshape(-1, 1, 64) - real).max(axis=2).min(axis=1)
    assert np.median(gap) > 0.05  # blends lie between real samples, not on them


@pytest.mark.parametrize("style", ["borrowed", "prior"])
def test_cvae_samples_carry_the_minority_label(digits_split, rare, style):
    """A judge trained on all the real digits reads the cvae's samples as '3's: the label, not
    the borrowed latent of another class, decides the class."""
    r = synthesize(rare, SynthesisConfig(generator="cvae", style=style, jitter=0.0), seed=0)
    q = judge_synthetic(digits_split.train, digits_split.val, r.x, r.y, seed=0)
    assert q["synth/judge/acc"] > 0.8, q


def test_judge_trains_on_real_images_resampled_to_balance(rare):
    from robustops.evaluation.synthetic import balanced

    b = balanced(rare, seed=0)
    assert set(b.counts().values()) == {max(rare.counts().values())}
    real = {x.tobytes() for x in rare.x[rare.y == 3]}
    assert {x.tobytes() for x in b.x[b.y == 3]} == real  # repeats of the real '3's, nothing new
