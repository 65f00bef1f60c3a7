"""Models whose served answers are random are attacked with EoT and judged by what they serve."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from robustops.attacks import PGD
from robustops.attacks.eot import EoT, Noisy
from robustops.config import EvalConfig, GateConfig
from robustops.data import Dataset, Split
from robustops.defences import settings_from
from robustops.defences.base import randomized_of, score_inputs
from robustops.evaluation.gate import Candidate, decide
from robustops.evaluation.scorecard import Part, score

EDGE = 0.7  # class 0 below it, in the first pixel


class HalfSpace(nn.Module):
    """Class 0 while the first pixel is below EDGE, class 1 above, with a soft boundary. Its
    smoothed classifier decides the same way but abstains near the edge, where the votes under
    noise of std 0.25 split almost evenly: a shift of 0.19 leaves the base network right (0.01
    from its edge) and the smoothed classifier unable to decide."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        below = 20 * (EDGE - x.flatten(1)[:, 0])
        return torch.stack([below, torch.zeros_like(below)], 1)


def _split() -> Split:
    rng = np.random.default_rng(0)
    x = rng.random((24, 1, 2, 2), dtype=np.float32)
    y = np.array([0] * 20 + [1] * 4)
    x[:20, 0, 0, 0], x[20:, 0, 0, 0] = 0.5, 0.95
    ds = Dataset(x, y, ["below", "above"], "half-space")
    return Split(ds, ds, ds)


def test_a_smoothed_model_robust_only_through_its_base_network_is_scored_by_what_it_serves():
    split = _split()
    ev = EvalConfig(eps=[0.19], l2_eps=[], margin_loss="none", pgd_steps=20, eot_draws=8)
    smoothing = settings_from({"name": "smoothing", "sigma": 0.25, "n": 1000, "alpha": 0.001})
    inputs = score_inputs(HalfSpace(), split, ev, 0, "cpu", smoothing)
    assert inputs.randomized is not None and inputs.randomized.draws == 8
    card = score(Part("linf", 0.19), inputs)
    honest, base = card.metrics["adv/pgd_linf/eps_0.19/acc"], card.metrics["base/adv/pgd_linf/eps_0.19/acc"]
    # The base network keeps every image (0.2 from its edge, eps 0.19); what is served does not:
    # the images of class 0 are pushed to abstentions, only the 4 far above the edge stay right.
    assert base == 1.0 and honest <= 6 / 24, honest
    assert all(a["eot_draws"] == 8 and a["judged_by"] == "served prediction" for a in card.attacks)
    # The gate reads the honest figure: a limit the base network would pass fails the model.
    gate = GateConfig(primary="adv/pgd_linf/eps_0.19/acc", min={"adv/pgd_linf/eps_0.19/acc": 0.5}, max={},
                      require_masking=False, spec_checks=[])  # fmt: skip
    decision = decide([Candidate("smoothing", card.metrics, True, {}, None)], None, gate, "champion", None)
    assert not decision.promote and "adv/pgd_linf/eps_0.19/acc" in " ".join(decision.failures["smoothing"])
    # Scored again from fresh inputs (as each part's task builds them), the same figures: the
    # noise is drawn from a seeded generator of its own.
    again = score_inputs(HalfSpace(), split, ev, 0, "cpu", smoothing)
    assert score(Part("linf", 0.19), again).metrics == card.metrics


class Shaky(nn.Module):
    """A deterministic linear classifier plus dropout left on in eval: its output is random."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 2)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.drop.train()  # left on, as a user's model may do
        return self.lin(self.drop(x.flatten(1)))


def test_a_random_users_model_is_attacked_through_eot_and_judged_by_one_draw():
    model = Shaky()
    model.robustops_random = True  # what adapters.sources records when the contract check finds it
    found = randomized_of(model, None, 2, 16, 0)
    assert found is not None and isinstance(found.attacked, EoT) and found.attacked.draws == 16
    x = torch.rand(64, 1, 2, 2)
    # EoT's output is the mean of 16 draws: far less random than one draw.
    one = torch.stack([model(x)[:, 0] - model(x)[:, 1] for _ in range(2)])
    mean = torch.stack([found.attacked(x)[:, 0] - found.attacked(x)[:, 1] for _ in range(2)])
    assert (mean[0] - mean[1]).abs().mean() < 0.5 * (one[0] - one[1]).abs().mean()
    assert randomized_of(nn.Linear(4, 2), None, 2, 16, 0) is None  # deterministic: attacked as it is


def test_noisy_draws_fresh_noise_and_eot_averages_probabilities():
    base = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    noisy = Noisy(base, 0.5)
    x = torch.zeros(2, 1, 2, 2)
    assert not torch.equal(noisy(x), noisy(x))
    eot = EoT(noisy, 4)
    assert torch.allclose(eot(x).exp().sum(1), torch.ones(2))  # log of a probability vector
    with pytest.raises(ValueError, match="draws must be >= 1"):
        EoT(noisy, 0)
    # A gradient flows through every draw.
    xr = x.clone().requires_grad_(True)
    PGD(0.1, steps=1).perturb(eot, xr.detach(), torch.zeros(2, dtype=torch.long))
