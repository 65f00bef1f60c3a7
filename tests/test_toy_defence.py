"""A defence added in one file, as its author would add it: the file below is the whole change.

It is registered for this module only (a real plug-in adds one import line to
``robustops/defences/__init__.py``), then trained, scored and served by the unchanged pipeline.
"""

from __future__ import annotations

from typing import Any, Literal

import mlflow
import numpy as np
import pytest
from pydantic import Field
from torch import nn

from robustops.config import DefenceConfig
from robustops.data import Dataset
from robustops.defences import DEFENCES, Context, Defence
from robustops.defences.base import build_and_fit
from robustops.evaluation.postprocess import energy, softmax
from robustops.evaluation.scorecard import Scorecard, ScorePart
from robustops.inference import predict
from robustops.training.augment import make_loss
from robustops.training.standard import TrainResult

# ---- the toy defence: one file's worth -----------------------------------------------------------


class ToyConfig(DefenceConfig):
    """Plain training; the model answers only where the image and its mirror get the same class."""

    name: Literal["toy"] = "toy"
    margin: float = Field(0.2, gt=0, lt=1, description="scored: the share of top-two margins below this")


def margins(logits: np.ndarray) -> np.ndarray:
    p = np.sort(softmax(logits), axis=1)
    return p[:, -1] - p[:, -2]


def mirror_vote(model: nn.Module, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The class of each image where it and its mirror image agree (-1 where not), and its confidence."""
    logits, mirrored = predict(model, x), predict(model, np.ascontiguousarray(x[..., ::-1]))
    agree = logits.argmax(1) == mirrored.argmax(1)
    return np.where(agree, logits.argmax(1), -1), softmax(logits).max(1)


class Toy(Defence):
    name, settings = "toy", ToyConfig
    metric_prefixes = ("toy/",)
    undecided = "the toy defence's mirror vote disagrees"

    def train(self, train: Dataset, val: Dataset, ctx: Context, cfg: ToyConfig) -> TrainResult:
        result = build_and_fit(train, val, ctx, cfg, make_loss(ctx.augment, ctx.seed))
        result.extras["toy/trained"] = 1.0
        return result

    def scorecard_parts(self, cfg: ToyConfig) -> dict[str, ScorePart]:
        def close_calls(card: Scorecard, model: nn.Module, test: Dataset, seed: int, device: str) -> None:
            card.metrics["toy/abstain"] = float((margins(predict(model, test.x)) < cfg.margin).mean())

        return {"toy": close_calls}

    def serving(self, cfg: ToyConfig) -> dict[str, Any]:
        return {"margin": cfg.margin}

    def answer(
        self, model: nn.Module, x: np.ndarray, settings: dict[str, Any], num_classes: int, seed: int
    ) -> tuple[np.ndarray, np.ndarray]:
        return mirror_vote(model, x)


# ---- the proof -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_registered():
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(DEFENCES._items, "toy", Toy())
        yield


@pytest.fixture(scope="module")
def toy_run(prefect_harness, toy_registered, tmp_path_factory):
    from flows.pipeline import robustness_pipeline
    from robustops.catalog import load_config
    from tests.helpers.runs import TINY_CONFIG

    root = tmp_path_factory.mktemp("toy")
    cfg = load_config(
        TINY_CONFIG,
        [
            "defences=[{name: toy, margin: 0.3, label: toy-0.3}]",
            "adversarial_set={enabled: false}",
            "gate.enabled=false",
            "mlflow.registered_model=toy-digits",
            f"mlflow.tracking_uri=sqlite:///{root}/mlflow.db",
            f"mlflow.artifact_root={root}/mlartifacts",
        ],
    )
    return cfg, robustness_pipeline(cfg)


def test_a_config_types_the_toy_block_and_refuses_its_bad_settings(toy_registered):
    from robustops.catalog import load_config
    from robustops.errors import ConfigError

    cfg = load_config(None, ["defences=[{name: toy, margin: 0.3}]"])
    assert cfg.defences == [ToyConfig(margin=0.3)]
    with pytest.raises(ConfigError, match=r"defences\.0: margin: Input should be less than 1"):
        load_config(None, ["defences=[{name: toy, margin: 2}]"])


def test_the_toy_defence_is_trained_and_scored_with_its_own_part(toy_run):
    cfg, out = toy_run
    toy = out["models"]["toy-0.3"]
    assert toy["defence"] == "toy"
    assert 0 <= toy["metrics"]["toy/abstain"] <= 1
    assert "toy/abstain" not in out["models"]["baseline"]["metrics"]  # its part only
    run = mlflow.tracking.MlflowClient(cfg.mlflow.tracking_uri).get_run(toy["run_id"])
    assert run.data.metrics["toy/abstain"] == toy["metrics"]["toy/abstain"]
    assert run.data.params["defence.margin"] == "0.3"


def test_the_gate_check_knows_the_toy_metric(toy_run, digits_split):
    from robustops.catalog import check_gate, produced_metrics
    from robustops.errors import ConfigError

    cfg, out = toy_run
    shape, classes = digits_split.test.shape, digits_split.test.classes
    logged = set(out["models"]["toy-0.3"]["metrics"])
    assert "toy/abstain" in logged and logged <= produced_metrics(cfg, shape, classes)
    gated = cfg.model_copy(
        update={"gate": cfg.gate.model_copy(update={"enabled": True, "primary": "toy/abstain"})}
    )
    check_gate(gated, shape, classes)  # a metric the toy's part logs: accepted before any training
    off = gated.model_copy(update={"defences": []})
    with pytest.raises(ConfigError, match="it comes from a toy defence in defences"):
        check_gate(off, shape, classes)


def test_the_served_toy_model_answers_as_the_toy_defence(toy_run, digits_split):
    cfg, out = toy_run
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    served = mlflow.pyfunc.load_model(out["models"]["toy-0.3"]["model_uri"])
    x = digits_split.test.x[:120]
    got = served.predict(x)
    guarded = served.get_raw_model()
    vote, _ = mirror_vote(guarded.model, x)
    # The guard's own thresholds (confidence, OOD energy) speak first; the toy decides the rest.
    logits, s = predict(guarded.model, x), guarded.settings
    thresholds = (softmax(logits).max(1) < s.threshold) | (energy(logits) < s.energy_threshold)
    toy_said_no = got["reason"].to_numpy() == "abstained: the toy defence's mirror vote disagrees"
    assert (toy_said_no == ((vote < 0) & ~thresholds)).all() and toy_said_no.any()
    answered = ~got["abstain"].to_numpy()
    assert answered.any() and (got["class_index"].to_numpy()[answered] == vote[answered]).all()
    assert (answered == ((vote >= 0) & ~thresholds)).all()


def test_evaluate_rebuilds_the_toy_defence_from_the_checkpoint(toy_run):
    from flows.evaluate import load_registered

    cfg, out = toy_run
    uri = f"models:/{cfg.mlflow.registered_model}/{out['models']['toy-0.3']['version']}"
    _, info, defence = load_registered.fn(cfg, uri)
    assert defence == ToyConfig(margin=0.3, label="toy-0.3")
    assert info["blueprint"].defence["name"] == "toy"
