import numpy as np
import torch

from robustops.config import ModelConfig, TrainConfig
from robustops.inference import predict
from robustops.training import train_baseline

QUICK = TrainConfig(epochs=3, patience=3, progress=False)


def _states_equal(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_training_reaches_high_accuracy(trained, digits_split):
    pred = predict(trained.model, digits_split.test.x).argmax(1)
    assert (pred == digits_split.test.y).mean() > 0.93
    assert len(trained.history) == 8 and trained.history[-1]["loss"] < trained.history[0]["loss"]


def test_training_is_deterministic_on_cpu(digits_split):
    m = ModelConfig(name="cnn", width=8, hidden=32)
    a = train_baseline(digits_split.train, digits_split.val, m, QUICK, seed=7)
    b = train_baseline(digits_split.train, digits_split.val, m, QUICK, seed=7)
    c = train_baseline(digits_split.train, digits_split.val, m, QUICK, seed=8)
    assert _states_equal(a.model.state_dict(), b.model.state_dict())
    assert not _states_equal(a.model.state_dict(), c.model.state_dict())
    assert a.history == b.history


def test_early_stopping_restores_the_best_epoch(digits_split):
    # A huge SGD learning rate diverges after the first epochs, so validation accuracy stops improving.
    cfg = TrainConfig(optimizer="sgd", lr=5.0, epochs=30, patience=2, progress=False)
    r = train_baseline(digits_split.train, digits_split.val, ModelConfig(name="mlp", hidden=32), cfg, seed=0)
    assert r.stopped_early and len(r.history) < 30
    assert len(r.history) == r.best_epoch + 2
    val = (predict(r.model, digits_split.val.x).argmax(1) == digits_split.val.y).mean()
    assert np.isclose(val, r.best_val_acc)  # the returned weights are the best epoch's
    assert r.best_val_acc == max(h["val_acc"] for h in r.history)


def test_learning_rate_schedules(digits_split):
    m = ModelConfig(name="mlp", hidden=16)
    lrs = {}
    for schedule in ("constant", "cosine", "onecycle"):
        cfg = TrainConfig(epochs=10, patience=10, lr=0.01, schedule=schedule, progress=False)
        r = train_baseline(digits_split.train, digits_split.val, m, cfg, seed=0)
        lrs[schedule] = [h["lr"] for h in r.history]  # lr after each epoch
    assert lrs["constant"] == [0.01] * 10
    assert (
        all(b < a for a, b in zip(lrs["cosine"], lrs["cosine"][1:], strict=False))
        and lrs["cosine"][-1] < 1e-6
    )
    one = lrs["onecycle"]
    peak = int(np.argmax(one))
    assert peak in (3, 4) and one[peak] > 0.009 and one[-1] < 1e-4  # up for 40 % of the steps, then down


def test_model_normalize_false_feeds_the_raw_pixels(digits_split):
    from robustops.training.standard import build

    train = digits_split.train
    on, _ = build(train, ModelConfig(name="mlp", hidden=16), seed=0)
    off, _ = build(train, ModelConfig(name="mlp", hidden=16, normalize=False), seed=0)
    x = torch.from_numpy(train.x[:4])
    assert torch.equal(off[0](x), x)  # the identity
    torch.testing.assert_close(on[0].mean.flatten(), torch.from_numpy(train.x.mean(axis=(0, 2, 3))))
    assert not torch.equal(on[0](x), x)
    # Same layout either way: one checkpoint format.
    assert on.state_dict().keys() == off.state_dict().keys()
