"""What a registered model version records for the gate, and reading it back: the data it was
trained on and its lineage (tags), its per-image outcomes on ``gate.primary`` (an artifact of its run, with the
fingerprint of those test images as a tag) and the scores its tags show."""

from __future__ import annotations

import json

import numpy as np

from robustops.config import Config, DefenceConfig
from robustops.data import Dataset
from robustops.evaluation.gate import DataSignature, classes_digest, classes_text, primary_outcomes
from robustops.evaluation.scorecard import Scorecard, ensemble_for
from robustops.models import Blueprint

OUTCOMES = "gate/primary_outcomes.npz"  # on a model's run: per-image correctness on gate.primary
FINGERPRINT_TAG = "robustops.test_fingerprint"  # the images those outcomes are on
DIGEST_TAG = "robustops.data.classes_digest"  # the class names, in the model's output order


def outcomes_of(card: Scorecard, cfg: Config) -> np.ndarray | None:
    """The card's per-image correctness on ``gate.primary`` (None: the card does not keep it)."""
    ev = cfg.evaluation
    ensemble = [a.label for a in ensemble_for(ev, (ev.autoattack.eps or [0.1])[0], 0)]
    ensemble_l2 = [a.label for a in ensemble_for(ev, (ev.autoattack.l2_eps or [0.5])[0], 0, l2=True)]
    return primary_outcomes(card.masks, cfg.gate.primary, ensemble, ensemble_l2)


def data_tags(cfg: Config, test: Dataset, source: str | None = None) -> dict[str, str]:
    """What a version was trained on (``cfg.data``), or scored on (``source``: an audited user's
    model); the gate reads shape and classes back (:func:`signature`)."""
    d = cfg.data
    return {
        "data.source": source or (d.source.value if d.path is None else f"{d.source.value}: {d.path}"),
        "data.shape": "x".join(map(str, test.shape)),
        "data.classes": f"{test.num_classes}: {classes_text(test.classes)}",
        DIGEST_TAG: classes_digest(test.classes),
    }


def lineage_tags(
    cfg: Config, defence: DefenceConfig | None, blueprint: Blueprint | None = None
) -> dict[str, str]:
    """Where a version comes from: the model it started from (a built-in architecture, or the
    user's source as it was opened: each file's SHA-256, an MLflow version, the declared
    preprocessing, what its outputs are and whether they are random), the fine-tuning settings,
    and the defence with its settings."""
    tags = {
        "lineage.defence": json.dumps(defence.model_dump(mode="json"), sort_keys=True) if defence else "none"
    }
    source = blueprint.source if blueprint is not None else None
    if source is None:
        return tags | {"lineage.source": f"built-in {cfg.model.name}"}
    found = source["lineage"]
    hashes = {k.removesuffix("_sha256"): v for k, v in found.items() if k.endswith("_sha256")}
    version = f" (version {found['version']}, run {found.get('run_id')})" if found.get("version") else ""
    tags |= {
        "lineage.source": f"{found['kind']}: {found['source']}{version}",
        "lineage.preprocess": json.dumps(found["preprocess"], sort_keys=True),
        "lineage.finetune": json.dumps(cfg.finetune.model_dump(mode="json"), sort_keys=True),
        "source.outputs": source["outputs"],
        "source.random": str(source["random"]).lower(),
    }
    if source["random"]:
        tags["robustops.warning"] = (
            "random eval output: attacked with EoT over evaluation.eot_draws draws, judged by one draw"
        )
    if hashes:
        tags["lineage.sha256"] = ", ".join(f"{role} {digest}" for role, digest in hashes.items())
    return tags


def signature(tags: dict[str, str]) -> DataSignature | None:
    """The data a version was trained on, from its tags (:func:`data_tags`)."""
    try:
        shape = tuple(int(v) for v in tags["data.shape"].split("x"))
        n = int(tags["data.classes"].split(":", 1)[0])
    except (KeyError, ValueError):
        return None
    text = tags["data.classes"].split(":", 1)[1].strip()
    return DataSignature(shape, n, tags.get(DIGEST_TAG), text, tags.get("data.source", ""))


def score(metrics: dict[str, float], key: str | None) -> str:
    """A score as a version's tag shows it: ``key = value``, or why there is none."""
    return f"{key} = {metrics[key]:.4f}" if key and key in metrics else f"{key or 'none'} (not scored)"
