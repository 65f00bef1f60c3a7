"""The guarded model: layer 1 rejects malformed input, layer 3 abstains on edge cases, and
the served model answers real HTTP requests (tests/test_hostile.py: ``robustops serve-model``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from robustops.config import ModelConfig, TrainConfig
from robustops.defences.smoothing import SmoothingConfig
from robustops.evaluation import evaluate
from robustops.evaluation.scorecard import ScoreInputs
from robustops.evaluation.specification import edge_inputs
from robustops.serving import GuardedModel, RequestError, settings_for
from robustops.training import train_baseline
from tests.helpers.models import quick


@pytest.fixture(scope="module")
def cnn(digits_split):
    """A small CNN: the guard's thresholds come from its own scorecard, as in the pipeline."""
    cfg = TrainConfig(epochs=10, patience=10, progress=False)
    return train_baseline(
        digits_split.train, digits_split.val, ModelConfig(name="cnn", width=16, hidden=64), cfg, 0
    )


@pytest.fixture(scope="module")
def guarded(cnn, digits_split):
    card = evaluate(
        ScoreInputs(cnn.model, digits_split.test, quick(autoattack={"enabled": False}), val=digits_split.val)
    )
    return GuardedModel(cnn.model, settings_for(cnn.blueprint, card.thresholds))


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (np.zeros((3, 64)).tolist()[0], "this model takes (N, 1, 8, 8)"),  # one flat row, rank 1
        (np.zeros((3, 1, 8, 9), np.float32), "shape (3, 1, 8, 9); this model takes (N, 1, 8, 8)"),
        (np.zeros((3, 3, 8, 8), np.float32), "this model takes (N, 1, 8, 8)"),
        (np.zeros((2, 1, 1, 8, 8), np.float32), "this model takes"),
        (np.full((2, 8, 8), "a"), "dtype <U1; send numbers in [0, 1]"),
        (np.array([[[None] * 8] * 8] * 2, dtype=object), "dtype object"),
        ({"x": 1}, "send the images as an array"),
        ([[0.0] * 8, [0.0] * 7], "not a rectangular array"),
        (np.zeros((10_001, 8, 8), np.float32), "send at most 10000 per request"),
    ],
)
def test_malformed_requests_are_refused_with_the_reason(guarded, request_, expected):
    with pytest.raises(RequestError, match=None) as err:
        guarded.predict(request_)
    assert expected in str(err.value)


def test_bad_images_are_rejected_row_by_row(guarded, digits_split):
    x = digits_split.test.x[:6].copy()
    x[0, 0, 3, 3] = np.nan
    x[1, 0, 0, 0] = np.inf
    x[2] *= 255  # 0..255 instead of 0..1
    x[3, 0, 0, 0] = -0.1
    out = guarded.predict(x)
    assert out["rejected"].tolist() == [True, True, True, True, False, False]
    assert out["reason"][0] == out["reason"][1] == "rejected: NaN or inf pixels"
    assert "outside [0, 1]" in out["reason"][2] and out["label"][:4].isna().all()
    assert (out["class_index"][:4] == -1).all() and not out["abstain"][:4].any()
    # (N, H, W) for a one-channel model and flattened rows are accepted too.
    flat = guarded.predict(pd.DataFrame(digits_split.test.x[4:6].reshape(2, 64)))
    assert flat["class_index"].tolist() == out["class_index"][4:].tolist()


def test_answers_most_real_digits_and_abstains_on_edge_cases(guarded, digits_split):
    out = guarded.predict(digits_split.test.x)
    answered = ~out["abstain"] & ~out["rejected"]
    assert answered.mean() > 0.8
    assert (out["class_index"][answered] == digits_split.test.y[answered]).mean() > 0.97
    for kind, images in edge_inputs(digits_split.test.x, 0).items():  # blank, constant, inverted, ...
        edge = guarded.predict(images)
        assert edge["abstain"].mean() >= 0.8, (kind, edge["reason"].tolist()[:3])
        assert edge["reason"][edge["abstain"]].str.startswith("abstained:").all()


def test_smoothed_guard_abstains_when_unsure(trained, digits_split):
    s = settings_for(trained.blueprint, None, SmoothingConfig(sigma=0.5, n=100))
    out = GuardedModel(trained.model, s).predict(
        np.concatenate([digits_split.test.x[:20], np.full((4, 1, 8, 8), 0.5, np.float32)])
    )
    assert out["abstain"][:20].mean() < 0.5 and "smoothed classifier" in " ".join(out["reason"])
