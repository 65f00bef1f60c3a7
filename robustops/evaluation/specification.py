"""The specification dimension: behavioural checks of the whole guarded model.

Each check is registered by name and returns a value, a pass/fail against a threshold from
``evaluation.specification`` and a readable detail. Invariances keep the label under a change that
should not matter (the translation is a share of the image side, so it asks the same of an 8x8 digit
as of a 224x224 photo); floors bound per-class and rare-class recall; edge cases (blank, constant,
inverted, saturated and pure-noise images) must mostly be abstained on by the post-processing
layer rather than answered with a confident class. Users add invariances in config
(``specification.invariances: ["gaussian_blur:1", ...]``, any registered corruption at a
severity) or register a check of their own with ``@SPEC_CHECKS.register(name)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from robustops.config import SpecificationConfig
from robustops.corruptions import CORRUPTIONS
from robustops.evaluation.masking import Check
from robustops.inference import predict
from robustops.names import segment
from robustops.registry import Registry


@dataclass
class Thresholds:
    """The post-processing layer's thresholds (layer 3 of the guarded model), chosen on the
    validation split by the scorecard: abstain when the confidence is below ``threshold`` or the
    energy score below ``energy_threshold`` (an OOD flag)."""

    threshold: float
    energy_threshold: float

    def abstain(self, logits: np.ndarray) -> np.ndarray:
        from robustops.evaluation.postprocess import energy, softmax

        return (softmax(logits).max(1) < self.threshold) | (energy(logits) < self.energy_threshold)


@dataclass
class CheckContext:
    """What a specification check is run on: the model and the test images, the training counts
    per class (the rarest class), the thresholds the guarded model abstains with, the checks'
    settings, a seed and a device."""

    model: nn.Module
    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    train_counts: dict[str, int]
    thresholds: Thresholds
    cfg: SpecificationConfig
    seed: int = 0
    device: str = "cpu"

    def logits(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        return predict(self.model, x, device=self.device)


CheckFn = Callable[[CheckContext], Check]
SPEC_CHECKS: Registry[CheckFn] = Registry("specification check")


def _keep(ctx: CheckContext, changed: np.ndarray, name: str, what: str) -> Check:
    """Passes when ``changed`` (``k`` changed copies of each test image, stacked copy by copy)
    keeps the label of at least ``invariance_keep`` of the images the model gets right."""
    clean = ctx.logits(ctx.x).argmax(1)
    ok = clean == ctx.y
    copies = len(changed) // len(ctx.x)
    after = ctx.logits(changed).argmax(1).reshape(copies, len(ctx.x))
    kept = float((after[:, ok] == clean[ok]).mean()) if ok.any() else float("nan")
    return Check(
        name,
        kept >= ctx.cfg.invariance_keep,
        f"{what} keeps {kept:.3f} of correct labels (need {ctx.cfg.invariance_keep:g})",
    )


def _shift_axis(x: np.ndarray, s: float, axis: int) -> np.ndarray:
    n = x.shape[axis]
    k = math.floor(s)
    f = s - k
    # out[i] = x(i - s), linear between the pixels i - k and i - k - 1. The edge pixels extend:
    # a constant fill would draw a line along the border that the shift itself did not cause.
    src = np.arange(n) - k
    near = np.take(x, np.clip(src, 0, n - 1), axis=axis)
    if f == 0:
        return near
    far = np.take(x, np.clip(src - 1, 0, n - 1), axis=axis)
    return (1 - f) * near + f * far


def shift_images(x: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """Images (``N, C, H, W``) moved ``dy`` pixels down and ``dx`` right; a fractional shift
    resamples bilinearly, so a shift can be smaller than a pixel."""
    return _shift_axis(_shift_axis(x, dy, -2), dx, -1).astype(x.dtype, copy=False)


def translate_pixels(cfg: SpecificationConfig, shape: tuple[int, ...]) -> tuple[float, float]:
    """The translation check's shift in pixels (rows, columns) for images of ``shape``
    (``..., H, W``): ``translate_px`` when set, else ``translate_fraction`` of each side."""
    if cfg.translate_px is not None:
        return cfg.translate_px, cfg.translate_px
    h, w = shape[-2:]
    return cfg.translate_fraction * h, cfg.translate_fraction * w


@SPEC_CHECKS.register("invariance_translate")
def invariance_translate(ctx: CheckContext) -> Check:
    py, px = translate_pixels(ctx.cfg, ctx.x.shape)
    moved = np.concatenate([shift_images(ctx.x, dy, dx) for dy, dx in ((py, 0), (-py, 0), (0, px), (0, -px))])
    h, w = ctx.x.shape[-2:]
    size = f"{py:.3g}" if py == px else f"{py:.3g}/{px:.3g}"
    why = "" if ctx.cfg.translate_px is not None else f", {ctx.cfg.translate_fraction:g} of the {h}x{w} image"
    return _keep(ctx, moved, "invariance_translate", f"a {size}-pixel shift (4 directions{why})")


@SPEC_CHECKS.register("invariance_brightness")
def invariance_brightness(ctx: CheckContext) -> Check:
    b = ctx.cfg.brightness
    return _keep(ctx, np.clip(ctx.x + b, 0, 1), "invariance_brightness", f"brightness +{b:g}")


@SPEC_CHECKS.register("recall_floor")
def recall_floor(ctx: CheckContext) -> Check:
    pred = ctx.logits(ctx.x).argmax(1)
    recall = {
        c: float((pred[ctx.y == i] == i).mean()) for i, c in enumerate(ctx.classes) if (ctx.y == i).any()
    }
    worst = min(recall, key=recall.get)
    return Check(
        "recall_floor",
        recall[worst] >= ctx.cfg.recall_floor,
        f"lowest recall {recall[worst]:.3f} (class {worst}; need {ctx.cfg.recall_floor:g})",
    )


@SPEC_CHECKS.register("rare_class")
def rare_class(ctx: CheckContext) -> Check:
    rarest = min(ctx.train_counts, key=ctx.train_counts.get)
    i = ctx.classes.index(rarest)
    pred = ctx.logits(ctx.x[ctx.y == i]).argmax(1)
    r = float((pred == i).mean()) if len(pred) else float("nan")
    return Check(
        "rare_class",
        r >= ctx.cfg.rare_floor,
        f"recall {r:.3f} on the rarest class {rarest} ({ctx.train_counts[rarest]} training images; need {ctx.cfg.rare_floor:g})",
    )


def edge_inputs(x: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Valid but meaningless inputs of the data's shape."""
    shape = x.shape[1:]
    rng = np.random.default_rng(seed + 202)
    n = min(len(x), 100)
    return {
        "blank": np.zeros((4, *shape), np.float32),
        "constant": np.stack([np.full(shape, v, np.float32) for v in (0.25, 0.5, 0.75, 1.0)]),
        "inverted": (1 - x[:n]).astype(np.float32),
        "saturated": np.clip(x[:n] + 0.9, 0, 1).astype(np.float32),  # washed out: 90 % overexposed
        "noise": rng.random((n, *shape), dtype=np.float32),
    }


def _edge(kind: str) -> CheckFn:
    def check(ctx: CheckContext) -> Check:
        images = edge_inputs(ctx.x, ctx.seed)[kind]
        confident = float((~ctx.thresholds.abstain(ctx.logits(images))).mean())
        limit = ctx.cfg.edge_confident_max
        return Check(
            f"edge_{kind}",
            confident <= limit,
            f"{confident:.3f} of {len(images)} {kind} images answered confidently (allowed {limit:g})",
        )

    return check


for _kind in ("blank", "constant", "inverted", "saturated", "noise"):
    SPEC_CHECKS.register(f"edge_{_kind}")(_edge(_kind))


def _corruption_invariance(spec: str) -> CheckFn:
    name, _, sev = spec.partition(":")

    def check(ctx: CheckContext) -> Check:
        changed = CORRUPTIONS.get(name)(torch.from_numpy(ctx.x), int(sev or 1), ctx.seed).numpy()
        return _keep(
            ctx,
            changed,
            f"invariance_{segment(name)}_s{int(sev or 1)}",
            f"{name} at severity {int(sev or 1)}",
        )

    return check


def run_checks(ctx: CheckContext) -> list[Check]:
    """Every check named in ``cfg.checks``, then the configured corruption invariances."""
    out = [SPEC_CHECKS.get(name)(ctx) for name in ctx.cfg.checks]
    out += [_corruption_invariance(s)(ctx) for s in ctx.cfg.invariances]
    return out
