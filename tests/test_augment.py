"""Training-time augmentation and the held-out guarantee."""

from __future__ import annotations

import pytest
import torch

from robustops.catalog import load_config
from robustops.config import EVAL_CORRUPTIONS, TRAIN_CORRUPTIONS, AugmentConfig
from robustops.errors import ConfigError
from robustops.training.augment import augmix, corrupt_batch, jsd, make_loss


def test_default_train_and_eval_corruptions_are_disjoint():
    assert not set(TRAIN_CORRUPTIONS) & set(EVAL_CORRUPTIONS)


def test_config_refuses_to_train_on_an_evaluation_corruption():
    with pytest.raises(ConfigError, match=r"\['fog'\] are in augment.corruptions and evaluation.corruptions"):
        load_config(None, ["augment.corruptions=[gaussian_noise, fog]"])
    load_config(None, ["augment.corruptions=[gaussian_noise, fog]", "augment.policy=none"])  # not trained on
    with pytest.raises(ConfigError, match="unknown corruption"):
        load_config(None, ["augment.corruptions=[snowstorm]"])
    with pytest.raises(ConfigError, match="augment.severity"):
        load_config(None, ["augment.severity=[4, 2]"])


def test_corrupt_batch_changes_the_chosen_share(digits):
    x = torch.from_numpy(digits.x[:400])
    g = torch.Generator().manual_seed(0)
    out = corrupt_batch(x, TRAIN_CORRUPTIONS, (1, 3), 0.5, g)
    changed = (out != x).flatten(1).any(1).float().mean()
    assert 0.35 < changed < 0.6  # about half (a few corruptions can leave an image unchanged)
    assert torch.equal(corrupt_batch(x, TRAIN_CORRUPTIONS, (1, 3), 0.0, g), x)
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("depth", [0, 2])
def test_augmix_view_is_a_valid_mix(digits, depth):
    x = torch.from_numpy(digits.x[:32])
    cfg = AugmentConfig(policy="augmix", depth=depth)
    out = augmix(x, cfg, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, x)


def test_jsd_is_zero_for_identical_views_and_positive_otherwise():
    a = torch.randn(8, 10)
    assert float(jsd([a, a, a])) == pytest.approx(0, abs=1e-6)
    assert float(jsd([a, a + torch.randn(8, 10), a])) > 0


@pytest.mark.parametrize(
    ("policy", "use_jsd"), [("none", False), ("corruptions", False), ("augmix", False), ("augmix", True)]
)
def test_losses_are_finite_and_seeded(trained, digits, policy, use_jsd):
    cfg = AugmentConfig(policy=policy, jsd=use_jsd)
    x, y = torch.from_numpy(digits.x[:64]), torch.from_numpy(digits.y[:64])
    a = make_loss(cfg, seed=1)(trained.model, x, y)
    b = make_loss(cfg, seed=1)(trained.model, x, y)
    assert torch.isfinite(a) and a.requires_grad
    trained.model.zero_grad(set_to_none=True)
    assert float(a.detach()) == pytest.approx(float(b.detach()))


def test_policies_train_on_different_images(digits):
    x, y = torch.from_numpy(digits.x[:64]), torch.from_numpy(digits.y[:64])
    seen = {}
    for policy in ("none", "corruptions", "augmix"):
        inputs = []
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        model.register_forward_pre_hook(lambda m, a, inputs=inputs: inputs.append(a[0].clone()))
        make_loss(AugmentConfig(policy=policy), seed=0)(model, x, y)
        seen[policy] = inputs[0]
    assert torch.equal(seen["none"], x)
    assert not torch.equal(seen["corruptions"], x) and not torch.equal(seen["augmix"], seen["corruptions"])
