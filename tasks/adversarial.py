"""Adversarial-set task: attack the test split once and keep the examples."""

from __future__ import annotations

import numpy as np
from prefect import task
from torch import nn

from adapters.caching import hash_inputs
from adapters.log import logger
from robustops.attacks import build_attack
from robustops.data import Dataset
from robustops.data.adversarial import AdversarialSet, generate
from robustops.training import TrainResult


@task(name="generate-adversarial-set", cache_key_fn=hash_inputs, persist_result=True)
def generate_adversarial_set(
    model: nn.Module | TrainResult,
    test: Dataset,
    attack_name: str,
    eps: float,
    steps: int,
    rel_step: float,
    seed: int,
    device: str,
    max_samples: int | None,
) -> AdversarialSet:
    """Attacks the test split (or a seeded subsample of it) and returns the adversarial set.

    Args:
        model: the trained classifier.
        test: the test split; the set's indices point at its rows.
        attack_name: a name in the ``ATTACKS`` registry.
        eps: attack radius in the attack's own norm.
        steps: gradient steps (PGD attacks only).
        rel_step: step size relative to eps / steps (PGD attacks only).
        seed: seeds the subsample and the attack's random start.
        device: torch device the model lives on.
        max_samples: attack at most this many test images; None attacks them all.
    """
    model = model.model if isinstance(model, TrainResult) else model  # the pipeline passes results
    attack = build_attack(attack_name, eps, steps, rel_step, seed)
    index = np.arange(len(test.y))
    if max_samples is not None and max_samples < len(index):
        # The same subsample as the scorecard's for the same seed, so the two can be compared.
        index = np.sort(np.random.default_rng(seed).permutation(len(index))[:max_samples])
    aset = generate(model, attack, test.x[index], test.y[index], test.classes, device=device, index=index)
    logger().info(
        "adversarial set: %s eps=%g on %d of %d test images, %.4f still classified correctly",
        attack.name,
        attack.eps,
        len(aset),
        len(test.y),
        float(aset.robust.mean()) if len(aset) else float("nan"),
    )
    return aset
