"""The attack contract, checked for every registered attack."""

import numpy as np
import pytest
import torch

from robustops.attacks import ATTACKS, FGSM, PGD, PGDL2, ThreatModel
from robustops.evaluation import robust_accuracy

EPS = 0.1
BAD_EPS = [-0.1, float("nan"), float("inf"), 1.5, "0.1"]


def _size(name, delta):
    """Per-example size of a perturbation in the attack's own norm."""
    p = 2 if ATTACKS.get(name).threat is ThreatModel.L2 else float("inf")
    return torch.linalg.vector_norm(delta.flatten(1), ord=p, dim=1)


def _batch(split, n=64):
    return torch.from_numpy(split.test.x[:n]), torch.from_numpy(split.test.y[:n])


@pytest.mark.parametrize("name", ATTACKS.names())
def test_stays_in_eps_ball_and_unit_range(name, trained, digits_split):
    x, y = _batch(digits_split)
    x_adv = ATTACKS.get(name)(EPS)(trained.model, x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert _size(name, x_adv - x).max() <= EPS + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not x_adv.requires_grad


@pytest.mark.parametrize("name", ATTACKS.names())
def test_eps_zero_is_identity(name, trained, digits_split):
    x, y = _batch(digits_split)
    assert torch.equal(ATTACKS.get(name)(0.0)(trained.model, x, y), x)


@pytest.mark.parametrize(
    ("name", "eps"),
    [
        (name, eps)
        for name in ATTACKS.names()
        for eps in BAD_EPS
        # An L2 radius above 1 is legitimate: the norm sums over all pixels.
        if not (eps == 1.5 and ATTACKS.get(name).threat is ThreatModel.L2)
    ],
)
def test_bad_eps_raises(name, eps):
    with pytest.raises(ValueError, match="eps"):
        ATTACKS.get(name)(eps)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_input_outside_unit_range_raises(name, trained, digits_split):
    x, y = _batch(digits_split)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ATTACKS.get(name)(EPS)(trained.model, x * 2 + 0.5, y)
    with pytest.raises(ValueError, match="one label per input"):
        ATTACKS.get(name)(EPS)(trained.model, x, y[:-1])


@pytest.mark.parametrize("name", ATTACKS.names())
def test_runs_in_eval_mode_and_restores_mode_and_grads(name, trained, digits_split):
    model = trained.model
    seen = []
    hook = model.register_forward_pre_hook(lambda m, _: seen.append(m.training))
    model.zero_grad(set_to_none=True)
    model.train()
    try:
        x, y = _batch(digits_split, 8)
        ATTACKS.get(name)(EPS)(model, x, y)
    finally:
        hook.remove()
        model.eval()
    assert seen and not any(seen)  # attacked in eval mode (dropout off)
    assert all(p.grad is None for p in model.parameters())  # no stray parameter gradients


@pytest.mark.parametrize("name", ATTACKS.names())
def test_attack_lowers_accuracy_of_a_trained_model(name, trained, digits_split):
    x, y = digits_split.test.x, digits_split.test.y
    clean = float((trained.model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())
    # An L-inf eps of 0.2 matches an L2 radius of about 0.2 * sqrt(64) / 2 = 0.8 on the 8x8 digits;
    # PGD-L2 at 0.8 takes this MLP from ~0.94 to ~0.16.
    eps = 0.8 if ATTACKS.get(name).threat is ThreatModel.L2 else 0.2
    adv = robust_accuracy(trained.model, ATTACKS.get(name)(eps), x, y)
    assert clean > 0.9
    assert adv < clean - 0.3


def test_pgd_is_at_least_as_strong_as_fgsm_and_more_steps_help(trained, digits_split):
    x, y = digits_split.test.x, digits_split.test.y
    fgsm = robust_accuracy(trained.model, FGSM(EPS), x, y)
    pgd10 = robust_accuracy(trained.model, PGD(EPS, steps=10), x, y)
    pgd1 = robust_accuracy(trained.model, PGD(EPS, steps=1, random_start=False, step_size=EPS), x, y)
    assert pgd10 <= fgsm
    assert pgd1 == pytest.approx(fgsm)  # one full-size step from x is FGSM


def test_pgd_is_reproducible_and_restarts_never_help_the_model(trained, digits_split):
    x, y = _batch(digits_split, 128)
    a = PGD(EPS, steps=5, seed=3)(trained.model, x, y)
    b = PGD(EPS, steps=5, seed=3)(trained.model, x, y)
    assert torch.equal(a, b)
    one = robust_accuracy(trained.model, PGD(EPS, steps=5, seed=3), x.numpy(), y.numpy())
    three = robust_accuracy(trained.model, PGD(EPS, steps=5, seed=3, restarts=3), x.numpy(), y.numpy())
    assert three <= one


def test_settings_describe_the_attack():
    s = PGD(0.1, steps=7, restarts=2, seed=5).settings()
    assert s == {
        "attack": "pgd_linf",
        "threat": "Linf",
        "eps": 0.1,
        "steps": 7,
        "step_size": pytest.approx(2.5 * 0.1 / 7),
        "random_start": True,
        "restarts": 2,
        "seed": 5,
        "loss": "ce",
    }
    assert np.isclose(FGSM(0.3).settings()["eps"], 0.3)


def test_pgd_l2_stays_in_the_l2_ball_per_example(trained, digits_split):
    x, y = _batch(digits_split)
    for eps in (0.3, 1.5):  # an L2 radius may exceed 1
        x_adv = PGDL2(eps, steps=10)(trained.model, x, y)
        assert (torch.linalg.vector_norm((x_adv - x).flatten(1), dim=1) <= eps + 1e-5).all()
        assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_pgd_l2_is_reproducible_and_more_steps_and_restarts_help(trained, digits_split):
    x, y = _batch(digits_split, 128)
    assert torch.equal(
        PGDL2(0.5, steps=5, seed=3)(trained.model, x, y), PGDL2(0.5, steps=5, seed=3)(trained.model, x, y)
    )
    x, y = x.numpy(), y.numpy()
    one = robust_accuracy(trained.model, PGDL2(0.5, steps=1), x, y)
    ten = robust_accuracy(trained.model, PGDL2(0.5, steps=10), x, y)
    restarts = robust_accuracy(trained.model, PGDL2(0.5, steps=10, restarts=2), x, y)
    assert restarts <= ten <= one  # a restart only replaces examples the first run failed to break


def test_pgd_l2_settings_describe_the_attack():
    assert PGDL2(2.0, steps=8, seed=1).settings() == {
        "attack": "pgd_l2",
        "threat": "L2",
        "eps": 2.0,
        "steps": 8,
        "step_size": pytest.approx(2.5 * 2.0 / 8),
        "random_start": True,
        "restarts": 1,
        "seed": 1,
        "loss": "ce",
    }


class _Saturated(torch.nn.Module):
    """A trained model with its logits scaled by 1e4: the same decisions, a saturated softmax."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x) * 1e4


def test_margin_losses_see_through_softmax_saturation(trained, digits_split):
    x, y = digits_split.test.x[:128], digits_split.test.y[:128]
    masked = _Saturated(trained.model).eval()
    ce = robust_accuracy(masked, PGD(0.1, steps=10, loss="ce"), x, y)
    plain = robust_accuracy(trained.model, PGD(0.1, steps=10, loss="ce"), x, y)
    for loss in ("cw", "dlr"):
        margin = robust_accuracy(masked, PGD(0.1, steps=10, loss=loss), x, y)
        assert margin < ce - 0.2  # cross-entropy's gradient vanished; the margin's did not
        assert margin <= plain + 0.05  # as strong as CE-PGD on the unmasked model


def test_unknown_loss_and_labels():
    with pytest.raises(ValueError, match="unknown attack loss 'hinge'"):
        PGD(0.1, loss="hinge")
    assert PGD(0.1).label == "pgd_linf" and PGD(0.1, loss="cw").label == "pgd_linf_cw"
    assert FGSM(0.1, loss="dlr").label == "fgsm_dlr"


def test_kl_loss_starts_off_the_clean_point_and_moves_the_prediction(trained, digits_split):
    x, y = _batch(digits_split, 64)
    x_adv = PGD(0.1, steps=5, loss="kl")(trained.model, x, y)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and not torch.equal(x_adv, x)
    with torch.no_grad():
        p, q = torch.softmax(trained.model(x), 1), torch.log_softmax(trained.model(x_adv), 1)
    assert float(torch.nn.functional.kl_div(q, p, reduction="batchmean")) > 0.05
