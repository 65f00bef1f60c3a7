"""What a pipeline records in MLflow beyond params and metrics: the data stage's corruption
settings and samples, a model's adversarial set, certificates, checkpoint, drift reference and
guarded model, the link to the run's HTML scorecard, and a run marked FAILED on an error's way out."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from adapters import tracking
from adapters.log import logger
from robustops.config import AugmentPolicy, Config, DefenceConfig, MlflowConfig
from robustops.corruptions import describe, severity_rows
from robustops.data import Split
from robustops.data.adversarial import AdversarialSet, save_npz
from robustops.evaluation import Scorecard
from robustops.evaluation.plots import image_grid
from robustops.models import Blueprint
from robustops.training import checkpoint
from robustops.training.augment import augmix


def fail_quietly(m: MlflowConfig, run_id: str, killed: bool = False) -> None:
    """Marks a run FAILED (KILLED) on the way out of an error, without hiding that error."""
    try:
        tracking.end_run(m, run_id, False, killed)
    except Exception as e:  # noqa: BLE001 - the error on its way out is the one to report
        logger().warning("could not mark MLflow run %s FAILED (it stays RUNNING): %s", run_id, e)


def log_corruption_settings(cfg: Config, run_id: str, split: Split) -> None:
    """The augmentation and held-out corruptions' settings, with one image at severities 1..5."""
    m, aug = cfg.mlflow, cfg.augment
    used = aug.corruptions if aug.policy != AugmentPolicy.NONE else []
    table = {c["name"]: c for c in describe()}
    tracking.log_json(
        m,
        run_id,
        {"augment": aug.model_dump(mode="json"), "train_corruptions": [table[n] for n in used],
         "eval_corruptions": [table[n] for n in cfg.evaluation.corruptions]},
        "data/corruptions.json",
    )  # fmt: skip
    x = torch.from_numpy(split.train.x[:1])
    if used:
        rows = severity_rows(x, used, cfg.seed)
        if aug.policy == AugmentPolicy.AUGMIX:
            gen = torch.Generator().manual_seed(cfg.seed)
            rows["augmix"] = np.concatenate([augmix(x, aug, gen).numpy() for _ in range(5)])
        fig = image_grid(rows, f"training augmentation ({aug.policy.value}), severities 1-5", per_row=5)
        tracking.log_figure(m, run_id, fig, "data/augmentation_samples.png")
    if cfg.evaluation.corruptions:
        rows = severity_rows(x, cfg.evaluation.corruptions, cfg.seed)
        fig = image_grid(rows, "held-out evaluation corruptions, severities 1-5", per_row=5)
        tracking.log_figure(m, run_id, fig, "data/held_out_corruptions.png")


def log_adversarial_set(m: MlflowConfig, run_id: str, aset: AdversarialSet, test_x: np.ndarray) -> None:
    s = aset.settings
    name = f"{s['attack']}_eps_{s['eps']:g}"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.npz"
        save_npz(aset, path)
        tracking.log_file(m, run_id, path, "adversarial")
    tracking.log_metrics(
        m, run_id, {"adv_set/n": len(aset.y), "adv_set/robust_share": float(aset.robust.mean())}
    )
    k = min(8, len(aset.y))
    clean = test_x[aset.x_clean_index[:k]]
    fig = image_grid(
        {
            "clean": clean,
            "adversarial": aset.x[:k],
            "difference": np.abs(aset.x[:k] - clean) / max(s["eps"], 1e-6),
        },
        f"{s['attack']} eps {s['eps']:g} (difference scaled by 1/eps)",
        per_row=k,
    )
    tracking.log_figure(m, run_id, fig, "adversarial/examples.png")


def log_certificates(m: MlflowConfig, run_id: str, card: Scorecard) -> None:
    c = card.certificates
    if c is None:
        return
    curve = {f"{r:g}": c.certified_accuracy(r) for r in c.radii}
    tracking.log_json(
        m, run_id, {"settings": c.settings, "certified_accuracy": curve}, "evaluation/certificates.json"
    )


@dataclass(frozen=True)
class ReferenceFit:
    """How a logged model's accuracy estimators are fitted: the held-out corruptions and severities
    of its scorecard, how many validation images, the seed."""

    corruptions: tuple[str, ...] = ()
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    images: int = 2000
    seed: int = 0

    @classmethod
    def of(cls, cfg: Config) -> ReferenceFit:
        ev = cfg.evaluation
        return cls(tuple(ev.corruptions), tuple(ev.severities), cfg.monitor.estimate_images, cfg.seed)


def log_model(
    m: MlflowConfig,
    run_id: str,
    model: nn.Module,
    blueprint: Blueprint,
    card: Scorecard,
    split: Split,
    defence: DefenceConfig | None,
    fit: ReferenceFit = ReferenceFit(),  # noqa: B008 - frozen
) -> str:
    """The checkpoint, the drift reference (with its accuracy estimators, fitted as ``fit`` says)
    and the guarded model; returns the guarded model's URI."""
    from adapters.pyfunc import log_guarded
    from robustops.monitoring.reference import build_reference, save_reference
    from robustops.serving import settings_for

    with tempfile.TemporaryDirectory() as tmp:
        folder = checkpoint.save(model, blueprint, Path(tmp) / "checkpoint")
        for f in sorted(folder.iterdir()):
            tracking.log_file(m, run_id, f, "checkpoint")
        ref = build_reference(model, split.val, split.test.classes, corruptions=fit.corruptions,
                              severities=fit.severities, images=fit.images, seed=fit.seed)  # fmt: skip
        for f in save_reference(ref, Path(tmp) / "monitoring"):
            tracking.log_file(m, run_id, f, "monitoring")
        settings = settings_for(blueprint, card.thresholds, defence)
        return log_guarded(run_id, folder, settings, split.test.x)


REPORT = "report/scorecard.html"  # the parent run's HTML scorecard (tasks/gate.py log_report)


def scorecard_link(m: MlflowConfig, parent_id: str, whose: str = "the parent run") -> str:
    """Where the run's HTML scorecard is, as markdown: a link into the MLflow UI when the tracking
    URI is a server, otherwise ``whose`` run and the artifact path (a local store has no URL of
    its own)."""
    uri = tracking.tracking_uri(m)
    if uri.startswith(("http://", "https://")):
        return f"[{REPORT}]({tracking.ui_url(m, parent_id, artifact=REPORT)})"
    return f"`{REPORT}` of {whose} `{parent_id}`"
