"""The attack contract, checked for every registered attack."""

import inspect

import numpy as np
import pytest
import torch

from robustops.attacks import ATTACKS, FGSM, PGD, PGDL2, ThreatModel
from robustops.inference import robust_accuracy

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


def test_eps_zero_takes_the_step_the_scorecard_derives_from_it(trained, digits_split):
    """The scorecard sets step = rel_step * eps / steps: 0 at eps 0, which must not fail the run
    (the names fuzz found `evaluation.autoattack.eps: [0]` failing mid-run)."""
    x, y = _batch(digits_split)
    for attack in (PGD(0.0, steps=2, step_size=0.0), PGDL2(0.0, steps=2, step_size=0.0)):
        assert torch.equal(attack(trained.model, x, y), x)
    with pytest.raises(ValueError, match="step_size must be > 0"):
        PGD(0.1, steps=2, step_size=0.0)


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


def _quick(name: str, eps: float):
    """The attack with few iterations, targets and queries: the tests that take it check the
    model's mode and the batch layout, which every iteration shares, not the attack's strength."""
    params = inspect.signature(ATTACKS.get(name)).parameters
    few = {k: v for k, v in (("steps", 3), ("targets", 2), ("queries", 20)) if k in params}
    return ATTACKS.get(name)(eps, **few)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_runs_in_eval_mode_and_restores_mode_and_grads(name, trained, digits_split):
    model = trained.model
    seen = []
    hook = model.register_forward_pre_hook(lambda m, _: seen.append(m.training))
    model.zero_grad(set_to_none=True)
    model.train()
    try:
        x, y = _batch(digits_split, 8)
        _quick(name, EPS)(model, x, y)
        _quick(name, EPS).worst_case(model, x, y)
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
        "early_stop": True,
        "clip_start": True,
    }
    assert PGD(0.1, early_stop=False).settings()["early_stop"] is False
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
        "early_stop": True,
        "clip_start": True,
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


class _Counting(torch.nn.Module):
    """Counts the inputs the model is run on: the gradient work an attack spends."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, 0

    def forward(self, x):
        self.seen += len(x)
        return self.model(x)


@pytest.mark.parametrize("cls", [PGD, PGDL2])
def test_early_stop_is_never_weaker_and_stops_attacking_broken_inputs(cls, trained, digits_split):
    """robust_mask scores PGD's worst case: an input broken by any iterate counts as broken and
    leaves the batch. Against the classic last iterate, on the same seeds and the undefended
    MLP: robust accuracy no higher, and fewer inputs run through the model."""
    x, y = digits_split.test.x, digits_split.test.y
    eps = 0.2 if cls is PGD else 0.8  # the radii at which the MLP mostly breaks, as above
    for restarts in (1, 2):
        scores, seen = {}, {}
        for early in (False, True):
            model = _Counting(trained.model).eval()
            scores[early] = robust_accuracy(
                model, cls(eps, steps=10, restarts=restarts, early_stop=early), x, y
            )
            seen[early] = model.seen
        assert scores[True] <= scores[False]
        assert scores[True] < 0.3  # the attack still breaks most of this MLP
        assert seen[True] < 0.8 * seen[False]  # inputs left the batch once broken
    # The examples it returns still obey the contract.
    xt, yt = _batch(digits_split, 128)
    x_adv = cls(eps, steps=10).worst_case(trained.model, xt, yt)
    assert _size(cls.name, x_adv - xt).max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1


def test_calling_pgd_is_the_classic_attack_whatever_early_stop(trained, digits_split):
    """Adversarial training and the adversarial-set export call the attack: every input is
    attacked for every step, misclassified ones too, and the last iterate comes back."""
    x, y = _batch(digits_split, 128)
    classic = PGD(EPS, steps=5, seed=2, early_stop=False)
    assert torch.equal(PGD(EPS, steps=5, seed=2)(trained.model, x, y), classic(trained.model, x, y))
    assert torch.equal(classic.worst_case(trained.model, x, y), classic(trained.model, x, y))
    model = _Counting(trained.model).eval()
    PGD(EPS, steps=5)(model, x, y)
    assert model.seen == 5 * len(x)  # no early exit, no extra forward pass


def test_pgd_agrees_with_torchattacks(trained, digits_split):
    """PGD-20 at eps 0.1 lands within 3 points of torchattacks 3.3.0's PGD on the same model and
    batch, both as the classic last iterate and as the early-stopping worst case."""
    torchattacks = pytest.importorskip("torchattacks")
    x, y = digits_split.test.x, digits_split.test.y
    model = trained.model.eval()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    theirs = torchattacks.PGD(model, eps=EPS, alpha=2.5 * EPS / 20, steps=20, random_start=True)
    torch.manual_seed(0)  # torchattacks draws its start from the global stream
    x_adv = theirs(xt, yt)
    with torch.no_grad():
        ref = float(((model(xt).argmax(1) == yt) & (model(x_adv).argmax(1) == yt)).float().mean())
    for early in (False, True):
        ours = robust_accuracy(model, PGD(EPS, steps=20, early_stop=early), x, y)
        assert ours == pytest.approx(ref, abs=0.03)


@pytest.mark.parametrize("strides", [(64, 64, 8, 1), (64, 8, 8, 1), (64, 1, 8, 1)])
@pytest.mark.parametrize("name", ATTACKS.names())
def test_the_model_sees_one_channel_batches_channels_last(name, strides, trained, digits_split):
    """Every forward pass of an attack gets a one-channel CPU batch strided channels-last (the
    same bytes; torch's faster kernels), whatever strides the caller's batch had (numpy slices
    and subsets give any of these), and x_adv comes back in the caller's layout."""
    x, y = _batch(digits_split)
    x = torch.as_strided(x.contiguous().clone(), x.shape, strides)
    seen = set()
    hook = trained.model.register_forward_pre_hook(lambda m, a: seen.add(a[0].stride()[1:]))
    try:
        attack = _quick(name, EPS)
        outs = [attack(trained.model, x, y), attack.worst_case(trained.model, x[:16], y[:16])]
    finally:
        hook.remove()
    assert seen == {(1, 8, 1)}
    assert all(o.stride()[1:] == x.stride()[1:] for o in outs)


def test_fgsm_rs_training_starts_unclipped_like_wong_et_al(trained, digits_split):
    """FGSM-RS takes its gradient at x + uniform noise without clipping to [0, 1] (Wong et al.),
    so on black pixels the step lands anywhere in (0, eps], not only on 0 or eps as with a
    clipped start; the example itself stays in the ball and in [0, 1]."""
    from robustops.catalog import load_config
    from robustops.config import ModelConfig, RegularizeConfig, TrainConfig
    from robustops.defences import DEFENCES, Context
    from robustops.defences.fgsm_rs import FGSMRSConfig

    base = load_config(None, ["augment.policy=none"])
    ctx = Context(ModelConfig(), TrainConfig(), base.augment, RegularizeConfig())
    fgsm_rs = DEFENCES.get("fgsm_rs")
    attack = fgsm_rs.objective(FGSMRSConfig(eps=0.3, alpha=1.25), ctx).attack()
    assert attack.clip_start is False and attack.steps == 1
    assert fgsm_rs.objective(FGSMRSConfig(clip_start=True), ctx).attack().clip_start is True
    _, y = _batch(digits_split, 128)
    x = torch.zeros(len(y), *digits_split.test.shape)  # all black
    inside = {}
    for clip in (True, False):
        a = PGD(0.3, steps=1, step_size=0.375, generator=torch.Generator().manual_seed(0), clip_start=clip)
        x_adv = a(trained.model, x, y)
        assert x_adv.min() >= 0 and x_adv.max() <= 0.3 + 1e-6
        inside[clip] = float(((x_adv > 0.01) & (x_adv < 0.29)).float().mean())
    assert inside[True] == 0.0  # a clipped start: every pixel ends on 0 or eps
    assert inside[False] > 0.1


def test_fab_linf_projection_is_the_smallest_radius_onto_the_hyperplane_inside_the_box():
    from robustops.attacks.fab import project_linf, smallest_reaching

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 4, 4, generator=gen)
    w = torch.randn(64, 1, 4, 4, generator=gen)
    w[:, :, 0] = 0  # coordinates the hyperplane ignores stay put
    b = torch.randn(64, generator=gen) * 2
    d = project_linf(x, w, b)
    up = torch.where(w * b.view(-1, 1, 1, 1) > 0, 1 - x, -x) * (w != 0)
    ok = (w * up).flatten(1).sum(1).abs() >= b.abs()
    assert ok.sum() > 10 and (~ok).sum() > 0  # both cases occur
    torch.testing.assert_close((w * d).flatten(1).sum(1)[ok], b[ok], atol=1e-5, rtol=0)
    torch.testing.assert_close(d[~ok], up[~ok])  # unreachable: as close as the box allows
    assert ((x + d) >= -1e-6).all() and ((x + d) <= 1 + 1e-6).all() and (d[:, :, 0] == 0).all()
    # Smallest: the same move clipped to a radius 1 % shorter falls short of the hyperplane.
    r = d.flatten(1).abs().amax(1)
    shorter = torch.maximum(torch.minimum(d, 0.99 * r.view(-1, 1, 1, 1)), -0.99 * r.view(-1, 1, 1, 1))
    assert ((w * shorter).flatten(1).sum(1)[ok].abs() < b[ok].abs()).all()
    # The piecewise-linear root against a fine grid on a hand-sized row: sum 2 min(t, 0.1) + 1 min(t, 0.5).
    breaks, slope = torch.tensor([[0.5, 0.1]]), torch.tensor([[1.0, 2.0]])
    grid = torch.linspace(0, 0.6, 60001)
    reach = (slope[0] * torch.minimum(grid[:, None], breaks[0])).sum(1)
    for target in (0.1, 0.3, 0.7):
        t = float(smallest_reaching(breaks, slope, torch.tensor([target]))[0])
        assert t == pytest.approx(float(grid[(reach >= target).nonzero()[0]]), abs=2e-5)
    assert (
        float(smallest_reaching(breaks, slope, torch.tensor([5.0]))[0]) == 0.5
    )  # unreachable: the last break
