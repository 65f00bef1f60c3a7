"""Model-centric defences: config, every registered defence, adversarial training, the
catastrophic-overfitting stop, distillation's masking, randomized smoothing and checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from robustops.attacks import APGD, PGD
from robustops.catalog import load_config
from robustops.config import ModelConfig, RegularizeConfig, TrainConfig
from robustops.data import split_dataset
from robustops.data.loaders import resize
from robustops.defences import DEFENCES, Context, train_defence
from robustops.defences.adversarial import collapse_stop
from robustops.defences.fgsm_rs import FGSMRSConfig, overfitting_stop
from robustops.defences.pgd_at import PGDATConfig
from robustops.errors import ConfigError
from robustops.evaluation.lipschitz import input_grad_norm, lipschitz_bound
from robustops.inference import predict, robust_accuracy
from robustops.training import checkpoint
from robustops.training.adversarial import AdversarialObjective, misalignment

TINY_MODEL = ModelConfig(name="mlp", hidden=64, dropout=0.0)
# Each defence's settings, small enough for seconds on CPU; every defence accepts them.
TINY_DEFENCE_SETTINGS = {
    "standard": {},
    "pgd_at": {"steps": 3, "select_steps": 3},
    "fgsm_rs": {"overfit_samples": 64, "select_steps": 3},
    "n_fgsm": {"select_steps": 3},
    "trades": {"steps": 3, "select_steps": 3},
    "distillation": {"temperature": 5.0},
    "smoothing": {"n0": 10, "n": 50},
}


def _ctx(epochs: int = 3, model: ModelConfig = TINY_MODEL, **reg) -> Context:
    cfg = load_config(None, ["augment.policy=none"])
    train = TrainConfig(epochs=epochs, patience=epochs, progress=False)
    return Context(model, train, cfg.augment, RegularizeConfig(**reg), seed=0)


def _defence(name: str, **kw):
    return DEFENCES.get(name).settings.model_validate({"name": name} | TINY_DEFENCE_SETTINGS[name] | kw)


def _pgd_acc(model, split, eps=0.1, loss="ce", n=200):
    x, y = split.test.x[:n], split.test.y[:n]
    return robust_accuracy(model, PGD(eps, steps=10, seed=0, loss=loss), x, y)


# ---- config ------------------------------------------------------------------------------------


def test_defences_list_takes_names_and_blocks_and_set_reaches_into_it():
    cfg = load_config(
        None, ["defences=[pgd_at, {name: trades, beta: 2.0, label: trades-b2}]", "defences.0.eps=0.2"]
    )
    assert [d.run_name for d in cfg.defences] == ["pgd_at", "trades-b2"]
    assert cfg.defences[0].eps == 0.2 and cfg.defences[1].beta == 2.0
    assert isinstance(cfg.defences[0], PGDATConfig)
    dumped = cfg.model_dump(mode="json")["defences"]
    assert dumped[1]["beta"] == 2.0  # subclass fields survive serialization (logged config)
    assert load_config(None, ["defences=[]"]).defences == []


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["defences=[fortress]"], "defences.0: unknown defence 'fortress'; known: distillation, fgsm_rs"),
        (["defences=[{name: pgd_at, epz: 0.1}]"], "defences.0: epz: unknown key"),
        (
            ["defences=[pgd_at, {name: smoothing, sigma: -1}]"],
            "defences.1: sigma: Input should be greater than 0",
        ),
        (["defences=[pgd_at, pgd_at]"], "labels must be unique"),
        (["defences=[{name: standard, label: baseline}]"], "not 'baseline'"),
        (["defences=[pgd_at]", "defences.3.eps=0.2"], "index 3 is out of range: defences has items 0 to 0"),
        (["defences=[{eps: 0.1}]"], "a block with a 'name' key"),
    ],
)
def test_bad_defence_config_names_the_item(overrides, expected):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert expected in str(err.value) and "\n" not in str(err.value)


# ---- every registered defence ------------------------------------------------------------------


@pytest.mark.parametrize("name", DEFENCES.names())
def test_every_defence_trains_and_checkpoints_round_trip(name, digits_split, tmp_path):
    assert name in TINY_DEFENCE_SETTINGS, f"add tiny settings for the new defence {name!r}"
    result = train_defence(digits_split.train, digits_split.val, _ctx(2), _defence(name))
    assert len(result.history) == 2 and 1 <= result.best_epoch <= 2 and result.seconds > 0
    acc = (predict(result.model, digits_split.test.x).argmax(1) == digits_split.test.y).mean()
    assert acc > 0.5  # two epochs of any defence learn the digits
    folder = checkpoint.save(result.model, result.blueprint, tmp_path / name)
    loaded = checkpoint.load(folder)
    np.testing.assert_allclose(
        predict(loaded, digits_split.test.x), predict(result.model, digits_split.test.x)
    )


def test_checkpoint_errors(digits_split, tmp_path, trained):
    with pytest.raises(checkpoint.CheckpointError, match="no state_dict.pt"):
        checkpoint.load(tmp_path)
    blueprint = trained.blueprint
    folder = checkpoint.save(trained.model, blueprint, tmp_path / "ok")
    (folder / "state_dict.pt").write_bytes(b"garbage")
    with pytest.raises(checkpoint.CheckpointError, match="unreadable or not plain weights"):
        checkpoint.load(folder)
    torch.save({"evil": torch.nn.ReLU()}, folder / "state_dict.pt")  # pickled code: refused
    with pytest.raises(checkpoint.CheckpointError, match="unreadable or not plain weights"):
        checkpoint.load(folder)
    checkpoint.save(trained.model, blueprint.model_copy(update={"hidden": 7}), tmp_path / "mismatch")
    with pytest.raises(checkpoint.CheckpointError, match="weights do not fit the blueprint"):
        checkpoint.load(tmp_path / "mismatch")
    (tmp_path / "mismatch" / "blueprint.json").write_text('{"name": "mlp"}')
    with pytest.raises(checkpoint.CheckpointError, match="not a model blueprint \\(shape: Field required"):
        checkpoint.load(tmp_path / "mismatch")


# ---- adversarial training ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def standard(digits_split):
    return train_defence(digits_split.train, digits_split.val, _ctx(8), _defence("standard"))


@pytest.mark.parametrize("name", ["pgd_at", "trades", "fgsm_rs", "n_fgsm"])
def test_adversarial_training_beats_standard_under_pgd(name, digits_split, standard):
    robust = train_defence(digits_split.train, digits_split.val, _ctx(8), _defence(name))
    assert _pgd_acc(robust.model, digits_split) > _pgd_acc(standard.model, digits_split) + 0.1
    # The best epoch is chosen on validation PGD accuracy, and that is what the model returns.
    best = robust.history[robust.best_epoch - 1]["val_pgd_acc"]
    assert best == max(h["val_pgd_acc"] for h in robust.history)
    assert robust.extras["train/val_pgd_acc"] == best


def test_apgd_selection_keeps_the_epoch_apgd_ce_scores_best_on_its_validation_sample(digits_split):
    cfg = _defence("pgd_at", select_attack="apgd", select_steps=5, select_samples=60)
    result = train_defence(digits_split.train, digits_split.val, _ctx(3), cfg)
    scores = [h["val_apgd_acc"] for h in result.history]
    assert all("val_pgd_acc" not in h for h in result.history)
    assert scores[result.best_epoch - 1] == max(scores) == result.extras["train/val_apgd_acc"]
    # The score is APGD-CE's on a seeded sample of 60 validation images: the returned weights,
    # attacked again on that sample, give it back.
    idx = np.sort(np.random.default_rng(0).permutation(len(digits_split.val.y))[:60])
    again = robust_accuracy(
        result.model, APGD(0.1, steps=5, seed=0), digits_split.val.x[idx], digits_split.val.y[idx]
    )
    assert again == pytest.approx(max(scores))
    with pytest.raises(ValueError, match="select_attack"):
        _defence("pgd_at", select_attack="fab")


def test_eps_warmup_ramps_linearly():
    obj = DEFENCES.get("pgd_at").objective(PGDATConfig(eps=0.2, warmup_epochs=4), _ctx())
    eps = []
    for epoch in range(1, 7):
        obj.begin_epoch(epoch, 6)
        eps.append(obj.attack().eps)
    assert eps == pytest.approx([0.05, 0.1, 0.15, 0.2, 0.2, 0.2])


def test_mixed_batches_weigh_clean_and_adversarial_loss(trained, digits_split):
    x, y = torch.from_numpy(digits_split.test.x[:64]), torch.from_numpy(digits_split.test.y[:64])
    losses = {}
    for w in (0.0, 0.5, 1.0):
        obj = DEFENCES.get("pgd_at").objective(PGDATConfig(clean_weight=w, steps=3), _ctx())
        losses[w] = float(obj(trained.model, x, y).detach())
    with torch.no_grad():
        clean = float(nn.functional.cross_entropy(trained.model(x), y))
    assert losses[1.0] == pytest.approx(clean, rel=1e-5)
    assert losses[0.0] > clean and losses[0.5] == pytest.approx((losses[0.0] + clean) / 2, rel=1e-4)


def test_overfitting_stop_fires_on_collapse_not_on_a_noisy_dip():
    stop = overfitting_stop(FGSMRSConfig())

    def hist(pgd, fgsm):
        return [{"watch_pgd_acc": p, "watch_fgsm_acc": f} for p, f in zip(pgd, fgsm, strict=True)]

    assert stop(hist([0.3, 0.5, 0.3], [0.4, 0.6, 0.45])) is None  # both dipped: noise, not CO
    assert stop(hist([0.05, 0.0], [0.9, 0.95])) is None  # never robust yet: nothing to collapse
    assert stop(hist([0.4, 0.5, 0.2], [0.5, 0.6, 0.4])) is None  # collapsed, but FGSM fell too
    reason = stop(hist([0.4, 0.5, 0.1], [0.5, 0.6, 0.9]))
    assert reason.startswith("catastrophic overfitting at epoch 3") and "0.500 to 0.100" in reason


def test_fgsm_rs_stops_on_forced_catastrophic_overfitting(digits):
    """A step of 2 eps (plain FGSM: the random start is projected away) from a start clipped to
    [0, 1], at a large eps on digits upscaled to 16x16, overfits catastrophically within a few
    epochs: PGD accuracy on the watched training images collapses while FGSM accuracy climbs.
    The overfitting stop ends training and rolls back."""
    big = type(digits)(resize(digits.x, (16, 16)), digits.y, digits.classes, digits.source)
    split = split_dataset(big, 0.15, 0.2, seed=0)
    model = ModelConfig(name="cnn", width=16, hidden=64, dropout=0.0)
    cfg = _defence("fgsm_rs", eps=0.2, alpha=2.0, clip_start=True, overfit_samples=256, select_steps=10)
    result = train_defence(split.train, split.val, _ctx(10, model), cfg)
    assert result.stop_reason and result.stop_reason.startswith("catastrophic overfitting")
    assert result.extras["train/overfitting_stopped"] == 1.0 and len(result.history) < 10
    last = result.history[-1]
    assert last["watch_fgsm_acc"] - last["watch_pgd_acc"] > 0.3  # the signature of CO
    # Rolled back: the returned weights are the best epoch's, not the collapsed last one.
    assert result.best_epoch < len(result.history)
    val_pgd = robust_accuracy(result.model, PGD(0.2, steps=10, seed=0), split.val.x, split.val.y)
    assert val_pgd == pytest.approx(result.history[result.best_epoch - 1]["val_pgd_acc"])


def test_grad_align_measures_how_far_the_input_gradient_turns_inside_the_ball(digits):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    x, y = torch.from_numpy(digits.x[:64]), torch.from_numpy(digits.y[:64]).long()
    gen = torch.Generator().manual_seed(0)
    # A ball too small to leave the ReLU pattern: the gradient does not turn.
    assert misalignment(net, x, y, 1e-7, gen).item() == pytest.approx(0.0, abs=1e-4)
    wide = misalignment(net, x, y, 0.5, gen)
    assert 0.01 < wide.item() <= 2.0
    wide.backward()  # differentiable in the weights (double backpropagation)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters() if p.dim() > 1)

    # The objective adds exactly weight * the term, on the same random draws.
    def fgsm(e: float, g: torch.Generator) -> PGD:
        return PGD(e, steps=1, step_size=1.25 * e, generator=g)

    plain = AdversarialObjective(0.3, fgsm, seed=0)
    aligned = AdversarialObjective(0.3, fgsm, seed=0, grad_align=0.5)
    base = plain(net, x, y)
    term = misalignment(net, x, y, 0.3, plain.gen)
    assert aligned(net, x, y).item() == pytest.approx(base.item() + 0.5 * term.item(), rel=1e-5)
    with pytest.raises(
        ConfigError, match="defences.0: grad_align: Input should be greater than or equal to 0"
    ):
        load_config(None, ["defences=[{name: fgsm_rs, grad_align: -1}]"])


# ---- distillation: robustness that only cross-entropy PGD believes ---------------------------


def test_distillation_masks_gradients_and_a_margin_loss_sees_through(digits_split, standard):
    student = train_defence(
        digits_split.train, digits_split.val, _ctx(8), _defence("distillation", temperature=50.0)
    )
    ce, cw = _pgd_acc(student.model, digits_split, 0.2), _pgd_acc(student.model, digits_split, 0.2, "cw")
    assert ce > cw + 0.3  # CE-PGD is masked by the saturated softmax; the margin loss is not
    assert _pgd_acc(standard.model, digits_split, 0.2, "ce") < ce
    assert student.extras["distill/teacher_val_acc"] > 0.8


# ---- regularizers and Lipschitz figures ------------------------------------------------------


def test_lipschitz_bound_holds_on_random_pairs(trained):
    model = trained.model
    bound = lipschitz_bound(model, (1, 8, 8))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(256, 1, 8, 8, generator=g)
    d = 0.05 * torch.randn(256, 1, 8, 8, generator=g)
    with torch.no_grad():
        ratio = (model(x + d) - model(x)).norm(dim=1) / d.flatten(1).norm(dim=1)
    assert float(ratio.max()) <= bound


def test_lipschitz_bound_of_a_conv_layer_matches_its_operator_norm():
    conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
    torch.manual_seed(0)
    model = nn.Sequential(conv)
    # The dense matrix of the conv on 6x6 inputs: its exact largest singular value.
    basis = torch.eye(36).reshape(36, 1, 6, 6)
    dense = conv(basis).detach().reshape(36, -1).T
    exact = float(torch.linalg.matrix_norm(dense, ord=2))
    assert lipschitz_bound(model, (1, 6, 6), iters=200) == pytest.approx(exact, rel=1e-3)


def test_spectral_norm_and_gradient_penalty_shrink_lipschitz_figures(digits_split, standard):
    sn = train_defence(
        digits_split.train, digits_split.val, _ctx(8, spectral_norm=True), _defence("standard")
    )
    gp = train_defence(digits_split.train, digits_split.val, _ctx(8, grad_penalty=5.0), _defence("standard"))
    base_bound = lipschitz_bound(standard.model, (1, 8, 8))
    assert lipschitz_bound(sn.model, (1, 8, 8)) < base_bound / 2
    x, y = digits_split.test.x, digits_split.test.y
    assert input_grad_norm(gp.model, x, y) < 0.7 * input_grad_norm(standard.model, x, y)


def test_label_smoothing_lowers_confidence(digits_split, standard):
    smooth = train_defence(
        digits_split.train, digits_split.val, _ctx(8, label_smoothing=0.3), _defence("standard")
    )

    def confidence(model):
        return torch.softmax(torch.from_numpy(predict(model, digits_split.test.x)), 1).max(1).values.mean()

    assert confidence(smooth.model) < confidence(standard.model) - 0.05


def test_collapse_stop_fires_on_a_flat_run_not_on_a_slow_start(digits_split):
    val = digits_split.val
    stop = collapse_stop(val, PGDATConfig(eps=0.3))
    share = np.bincount(val.y).max() / len(val.y)

    def hist(*rows):
        return [{"val_acc": a, "loss": loss} for a, loss in rows]

    flat = (share, 2.303)
    assert stop(hist(flat)) is None  # one epoch is not yet a collapse
    assert stop(hist((0.12, 2.25), flat)) is None  # the loss has moved off a uniform guess once
    assert stop(hist(flat, (0.3, 2.29))) is None  # learning: accuracy above the largest class
    reason = stop(hist((0.5, 1.2), flat, flat))
    assert reason.startswith("training collapsed at epoch 3") and "warmup_epochs" in reason


def test_pgd_at_stops_when_the_inner_attack_collapses_training(digits_split):
    """At eps 1 the attack may draw any image, so the best the model can do is a constant guess:
    training collapses, and the run stops after two flat epochs instead of running them all."""
    cfg = _defence("pgd_at", eps=1.0, steps=2)
    model = ModelConfig(name="cnn", width=8, hidden=32, dropout=0.0)
    result = train_defence(digits_split.train, digits_split.val, _ctx(6, model), cfg)
    assert result.stop_reason and result.stop_reason.startswith("training collapsed at epoch")
    assert len(result.history) < 6


def test_n_fgsm_steps_from_wide_noise_and_keeps_the_whole_step(trained, digits_split):
    """The training perturbation is noise of half-width 2 eps plus a full eps step, in [0, 1], not
    projected back onto the eps ball; the step follows the gradient's sign at the noisy start."""
    eps = 0.1
    x, y = torch.from_numpy(digits_split.test.x[:128]), torch.from_numpy(digits_split.test.y[:128])
    attack = DEFENCES.get("n_fgsm").objective(_defence("n_fgsm", eps=eps), _ctx()).attack()
    x_adv = attack(trained.model, x, y)
    move = (x_adv - x).abs()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert move.max() <= 3 * eps + 1e-6 and move.max() > 2 * eps  # beyond the ball, within noise + step
    # Replaying the draw: the step is +-eps from the clipped start wherever [0, 1] does not cut it.
    replay = DEFENCES.get("n_fgsm").objective(_defence("n_fgsm", eps=eps), _ctx()).attack()
    u = torch.rand(x.shape, generator=replay.generator)
    start = (x + (2 * u - 1) * 2 * eps).clamp(0, 1)
    inside = (start > eps) & (start < 1 - eps)
    assert torch.allclose((x_adv - start).abs()[inside], torch.tensor(eps), atol=1e-6)
