"""AutoAttack's L2 version: the members' L2 projections, the config, and the scorecard's
``autoattack_l2`` score (the planted-subset check against torchattacks is in test_scorecard)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from robustops.attacks import APGDL2, APGDTL2, FABTL2, SquareL2
from robustops.attacks.fab import project_l2
from robustops.config import EvalConfig
from robustops.evaluation import evaluate
from robustops.evaluation.gate import primary_outcomes
from robustops.evaluation.scorecard import ScoreInputs, ensemble_for, plan
from robustops.inference import robust_mask
from tests.helpers.models import quick


def test_project_l2_is_the_smallest_step_onto_the_hyperplane_inside_the_box():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 4, 4, generator=gen)
    w = torch.randn(64, 1, 4, 4, generator=gen)
    b = torch.randn(64, generator=gen) * 3
    d = project_l2(x, w, b)
    reach = (w * d).flatten(1).sum(1)
    # The most each row can reach: every coordinate at its bound in the direction of b.
    up = torch.where(w * b.view(-1, 1, 1, 1) > 0, 1 - x, -x)
    most = (w * up).flatten(1).sum(1)
    ok = most.abs() >= b.abs()
    assert ok.sum() > 10 and (~ok).sum() > 0  # both cases occur
    torch.testing.assert_close(reach[ok], b[ok], atol=1e-5, rtol=0)
    torch.testing.assert_close(d[~ok], up[~ok])  # unreachable: as close as the box allows
    assert ((x + d) >= -1e-6).all() and ((x + d) <= 1 + 1e-6).all()
    # Optimality (KKT): d is w times one multiplier per row, clipped to the box.
    free = (d.abs() > 1e-6) & ((x + d) > 1e-6) & ((x + d) < 1 - 1e-6) & (w.abs() > 1e-3)
    lam = torch.where(free, d / w, torch.nan).flatten(1)
    for row in torch.nonzero(ok).flatten():
        vals = lam[row][~torch.isnan(lam[row])]
        if len(vals) > 1:
            assert float(vals.max() - vals.min()) < 1e-3 * float(vals.abs().max())
    # Far from the box's walls the answer is the textbook one, b w / |w|^2.
    mid = torch.full_like(x, 0.5)
    small = b * 1e-3
    torch.testing.assert_close(
        project_l2(mid, w, small),
        w * (small / w.flatten(1).pow(2).sum(1)).view(-1, 1, 1, 1),
        atol=1e-7,
        rtol=1e-4,
    )


@pytest.mark.parametrize("cls", [APGDL2, APGDTL2, FABTL2, SquareL2])
def test_every_l2_member_stays_in_its_ball_and_breaks_more_as_eps_grows(cls, trained, digits_split):
    x, y = digits_split.test.x[:60], digits_split.test.y[:60]
    kw = {"queries": 150} if cls is SquareL2 else {"steps": 15}
    small, large = (robust_mask(trained.model, cls(eps, **kw), x, y) for eps in (0.2, 1.2))
    assert large.mean() < small.mean()
    assert not (large & ~small).any() or large.mean() <= small.mean()
    adv = cls(0.5, **kw)(trained.model, torch.from_numpy(x), torch.from_numpy(y)) - torch.from_numpy(x)
    assert float(adv.flatten(1).norm(dim=1).max()) <= 0.5 + 1e-5
    assert cls(0.5, **kw).threat.value == "L2"


def test_l2_radii_are_checked_and_planned():
    with pytest.raises(ValidationError, match="l2_eps: a radius of 0"):
        EvalConfig(autoattack={"l2_eps": [0.0, 0.5]})
    cfg = EvalConfig(autoattack={"version": "standard", "l2_eps": [0.5]})
    labels = [str(p) for p in plan(cfg)]
    assert [lbl for lbl in labels if lbl.startswith("adv/l2/")] == [
        f"adv/l2/eps_0.5/{m}" for m in ("apgd_l2", "apgd_t_l2", "fab_t_l2", "square_l2")
    ]
    fast = [a.label for a in ensemble_for(EvalConfig(), 0.5, 0, l2=True)]
    assert fast == ["apgd_l2", "apgd_l2_dlr", "square_l2"]
    assert not any("/l2/eps" in lbl for lbl in map(str, plan(EvalConfig())))  # off by default


def test_the_scorecard_scores_the_l2_ensemble_per_image(trained, digits_split):
    cfg = quick(autoattack={"eps": [0.2], "l2_eps": [0.6], "apgd_steps": 8, "square_queries": 40})
    card = evaluate(ScoreInputs(trained.model, digits_split.test, cfg))
    m = card.metrics
    members = [a.label for a in ensemble_for(cfg, 0.6, 0, l2=True)]
    accs = [m[f"adv/{a}/eps_0.6/acc"] for a in members]
    key = "adv/autoattack_l2/eps_0.6/acc"
    masks = [card.masks[f"l2/eps_0.6/{a}"] for a in members]
    assert m[key] == pytest.approx(np.logical_and.reduce(masks).mean())
    assert m[key] <= min(accs) and m[key] < m["clean/acc"]
    entry = next(a for a in card.attacks if a["label"] == "autoattack_l2")
    assert entry["threat"] == "L2" and entry["members"] == members and entry["version"] == "fast"
    # The L-inf ensemble and worst case are untouched by the L2 masks.
    linf = [card.masks[f"eps_0.2/{a.label}"] for a in ensemble_for(cfg, 0.2, 0)]
    assert m["adv/autoattack/eps_0.2/acc"] == pytest.approx(np.logical_and.reduce(linf).mean())
    assert "adv/worst_l2/eps_0.6/acc" not in m and "adv/worst/eps_0.6/acc" not in m
    # The gate's paired test reads the same per-image outcomes back.
    linf_members = [a.label for a in ensemble_for(cfg, 0.2, 0)]
    out = primary_outcomes(card.masks, key, linf_members, members)
    assert out is not None and out.mean() == pytest.approx(m[key])
    out = primary_outcomes(card.masks, "adv/pgd_l2/eps_0.5/acc", linf_members, members)
    assert out is not None and out.mean() == pytest.approx(m["adv/pgd_l2/eps_0.5/acc"])
