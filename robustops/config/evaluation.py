"""The evaluation section: attacks, masking checks, noise, corruptions, specification checks."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from robustops import names
from robustops.config.base import Strict, distinct, radii, severities
from robustops.config.data import ShiftDataConfig

EVAL_CORRUPTIONS = [
    "shot_noise",
    "speckle_noise",
    "defocus_blur",
    "zoom_blur",
    "gamma",
    "fog",
    "jpeg",
    "elastic",
]


class AutoAttackConfig(Strict):
    """The AutoAttack ensemble, worst case per example: ``fast`` (APGD-CE, APGD-DLR, Square with
    1,000 queries) or ``standard`` (AutoAttack's standard version: APGD-CE, APGD-T and FAB-T with
    9 target classes, Square with 5,000 queries), at each L-inf radius of ``eps`` and, with the
    members' L2 versions, at each L2 radius of ``l2_eps``."""

    enabled: bool = True
    version: Literal["fast", "standard"] = Field(
        "fast",
        description="fast: APGD-CE, APGD-DLR, Square; standard: AutoAttack's standard version, "
        "comparable with papers and RobustBench (several times slower)",
    )
    eps: list[float] = Field([0.1], description="L-inf radii to run the whole ensemble at")
    l2_eps: list[float] = Field(
        [],
        description="L2 radii to run the ensemble's L2 version at (AutoAttack's L2 members; "
        "RobustBench's CIFAR-10 L2 radius is 0.5)",
    )

    @field_validator("eps")
    @classmethod
    def _eps_range(cls, v: list[float]) -> list[float]:
        return radii(v, "evaluation.autoattack.eps", top=1)

    @field_validator("l2_eps")
    @classmethod
    def _l2_eps_range(cls, v: list[float]) -> list[float]:
        if 0 in v:
            raise ValueError("evaluation.autoattack.l2_eps: a radius of 0 attacks nothing; drop it")
        return radii(v, "evaluation.autoattack.l2_eps")

    apgd_steps: int = Field(
        100,
        ge=1,
        description="APGD iterations per restart, and APGD-T's and FAB-T's per target (AutoAttack: 100)",
    )
    apgd_restarts: int = Field(1, ge=1, description="APGD-CE's (and fast's APGD-DLR's) restarts")
    targets: int = Field(9, ge=1, description="standard: APGD-T's and FAB-T's target classes (AutoAttack: 9)")
    square_queries: int | None = Field(
        None,
        ge=1,
        description="Square queries per image (None: the version's, 1,000 fast and 5,000 standard)",
    )

    @property
    def queries(self) -> int:
        """Square's queries per image."""
        return self.square_queries or (5000 if self.version == "standard" else 1000)


class MaskingConfig(Strict):
    """Gradient-masking sanity checks (Carlini et al., 2019; Athalye et al., 2018)."""

    tolerance: float = Field(0.02, ge=0, le=1, description="accuracy slack allowed before a check fails")
    large_eps: float = Field(
        0.5, gt=0, le=1, description="an L-inf radius at which accuracy must reach chance"
    )
    more_steps: int = Field(100, ge=2, description="PGD steps of the longer run, vs evaluation.pgd_steps")


class NoiseConfig(Strict):
    """The perturbation dimension: random, non-malicious noise of rising strength."""

    gaussian: list[float] = Field([0.05, 0.1, 0.2, 0.3, 0.5], description="noise std, each in (0, 1]")
    uniform: list[float] = Field(
        [0.05, 0.1, 0.2, 0.3, 0.5], description="half-width of uniform noise, each in (0, 1]"
    )
    salt_pepper: list[float] = Field(
        [0.02, 0.05, 0.1, 0.2, 0.3], description="share of pixels set to 0 or 1, each in (0, 1]"
    )
    flip_sigma: float = Field(
        0.05, gt=0, description="std of the small noise the flip rate is measured under"
    )
    flip_draws: int = Field(5, ge=1, description="noise draws per image for the flip rate")

    @field_validator("gaussian", "uniform", "salt_pepper")
    @classmethod
    def _strengths(cls, v: list[float], info: Any) -> list[float]:
        bad = [s for s in v if not 0 < s <= 1]
        if bad:
            raise ValueError(f"strengths must lie in (0, 1] for pixels in [0, 1], got {bad}")
        names.distinct_numbers(v, f"evaluation.noise.{info.field_name}")
        return sorted(set(v))


SPEC_CHECK_NAMES = [
    "invariance_translate",
    "invariance_brightness",
    "recall_floor",
    "rare_class",
    "edge_blank",
    "edge_constant",
    "edge_inverted",
    "edge_saturated",
    "edge_noise",
]


class SpecificationConfig(Strict):
    """The specification dimension: behavioural checks, each with a pass threshold."""

    checks: list[str] = Field(SPEC_CHECK_NAMES, description="registered checks to run")
    invariances: list[str] = Field(
        [], description="more invariances, each 'corruption:severity' (e.g. gaussian_blur:1)"
    )

    # A shift in pixels means different things at different sizes (1 px is 12.5 % of an 8x8
    # digit, 0.4 % of a 224 px photo), so the default is a share of the side, resampled bilinearly.
    # 1/32 is one pixel of the 32x32 bitmaps the 8x8 digits were pooled from: 0.25 px on 8x8.
    translate_fraction: float = Field(
        1 / 32,
        gt=0,
        lt=0.5,
        description="invariance: shift by this share of the image side (each direction; bilinear, "
        "so 0.25 px on 8x8, 1 px on 32x32)",
    )
    translate_px: float | None = Field(
        None, gt=0, description="invariance: shift by this many pixels instead (None: translate_fraction)"
    )
    brightness: float = Field(0.1, gt=0, lt=1, description="invariance: add this much brightness")
    invariance_keep: float = Field(0.9, ge=0, le=1, description="share of labels an invariance must keep")
    recall_floor: float = Field(0.9, ge=0, le=1, description="every class's recall must reach this")
    rare_floor: float = Field(0.85, ge=0, le=1, description="recall of the rarest training class")
    edge_confident_max: float = Field(
        0.2, ge=0, le=1, description="edge inputs: at most this share answered confidently (not abstained)"
    )

    @field_validator("checks")
    @classmethod
    def _checks(cls, v: list[str]) -> list[str]:
        return distinct(v, "evaluation.specification.checks")

    @field_validator("invariances")
    @classmethod
    def _invariances(cls, v: list[str]) -> list[str]:
        for item in v:
            name, _, sev = item.partition(":")
            if sev and sev not in {"1", "2", "3", "4", "5"}:
                raise ValueError(f"invariance {item!r}: severity must be 1..5, e.g. {name}:1")
        return v


# The 15 corruptions of CIFAR-10-C, CIFAR-100-C, Tiny-ImageNet-C and ImageNet-C (Hendrycks &
# Dietterich, 2019), and the 15 of MNIST-C (Mu & Gilmer, 2019), by their file and folder names.
C_CORRUPTIONS = [
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
    "jpeg_compression",
]  # fmt: skip
MNIST_C_CORRUPTIONS = [
    "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear", "scale", "rotate",
    "brightness", "translate", "stripe", "fog", "spatter", "dotted_line", "zigzag", "canny_edges",
]  # fmt: skip


class CorruptionBenchmarkConfig(Strict):
    """Corrupted test sets read from files in a standard layout, scored as published."""

    path: str = Field(description="the folder holding the benchmark")
    layout: Literal["cifar_c", "imagenet_c", "mnist_c"] = Field(
        description="cifar_c: <corruption>.npy (the five severities stacked) and labels.npy; "
        "imagenet_c: <corruption>/<severity>/<class>/<image> (Tiny-ImageNet-C too); "
        "mnist_c: <corruption>/test_images.npy and test_labels.npy (one severity)"
    )
    corruptions: list[str] | None = Field(
        None, description="the corruptions to score (None: the layout's standard 15)"
    )
    severities: list[int] = Field([1, 2, 3, 4, 5], description="ignored for mnist_c, which has one")
    max_images: int | None = Field(
        None, ge=1, description="score a seeded subsample of this many images per corruption and severity"
    )
    reference_errors: dict[str, float | list[float]] = Field(
        {},
        description="a reference model's error per corruption (one number: the mean over severities, "
        "or one per severity 1..5), e.g. AlexNet's on ImageNet-C; normalises corruption_benchmark/mce",
    )

    @field_validator("corruptions")
    @classmethod
    def _distinct(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else distinct(v, "evaluation.corruption_benchmark.corruptions")

    @field_validator("severities")
    @classmethod
    def _severities(cls, v: list[int]) -> list[int]:
        return severities(v, "evaluation.corruption_benchmark.severities")

    @field_validator("reference_errors")
    @classmethod
    def _errors(cls, v: dict[str, float | list[float]]) -> dict[str, float | list[float]]:
        for name, e in v.items():
            values = e if isinstance(e, list) else [e]
            if isinstance(e, list) and len(e) != 5:
                raise ValueError(
                    f"reference_errors.{name}: give one error or five (severities 1..5), got {len(e)}"
                )
            if any(not 0 < x <= 1 for x in values):
                raise ValueError(f"reference_errors.{name}: errors are shares in (0, 1], got {e}")
        return v

    @model_validator(mode="after")
    def _every_reference(self) -> CorruptionBenchmarkConfig:
        missing = [c for c in self.names if c not in self.reference_errors]
        if self.reference_errors and missing:
            raise ValueError(
                f"reference_errors has no error for {', '.join(missing)}: mCE is a mean over every scored "
                "corruption; give each one, or list only those in corruptions"
            )
        return self

    @property
    def names(self) -> list[str]:
        """The corruptions scored."""
        if self.corruptions is not None:
            return self.corruptions
        return MNIST_C_CORRUPTIONS if self.layout == "mnist_c" else C_CORRUPTIONS

    @property
    def levels(self) -> list[int]:
        """The severities scored: MNIST-C has one."""
        return [1] if self.layout == "mnist_c" else self.severities


class EvalConfig(Strict):
    eps: list[float] = Field([0.05, 0.1, 0.2], description="L-inf radii, pixels in [0, 1]")
    l2_eps: list[float] = Field([0.5, 1.0], description="L2 radii for PGD-L2 (the norm sums over pixels)")
    pgd_steps: int = Field(20, ge=1)
    pgd_rel_step: float = Field(
        2.5, gt=0, description="PGD step size as a multiple of eps / steps (Madry et al.)"
    )
    pgd_restarts: int = Field(1, ge=1)
    margin_loss: Literal["cw", "dlr", "none"] = Field(
        "cw", description="also run PGD on this logit-margin loss, which softmax saturation cannot mask"
    )
    batch_size: int = Field(256, ge=1)
    eot_draws: int = Field(
        8,
        ge=1,
        description="a model whose served output is random (smoothing, a random user model) is attacked "
        "through the mean of its softmax over this many draws (EoT) and judged by what it serves",
    )
    max_samples: int | None = Field(
        None, ge=1, description="attack at most this many test samples (None: all)"
    )
    corruptions: list[str] = Field(EVAL_CORRUPTIONS, description="held out: never used in training")
    severities: list[int] = Field([1, 2, 3, 4, 5])
    autoattack: AutoAttackConfig = AutoAttackConfig()
    masking: MaskingConfig = MaskingConfig()
    noise: NoiseConfig = NoiseConfig()
    specification: SpecificationConfig = SpecificationConfig()
    target_risk: float = Field(
        0.01, gt=0, lt=1, description="post-processing: the confidence threshold keeps the error below this"
    )
    ood_tpr: float = Field(
        0.95, gt=0, lt=1, description="post-processing: the OOD threshold keeps this share of real images"
    )
    mahalanobis: bool = Field(
        True, description="also score OOD by Mahalanobis distance of penultimate features"
    )
    calibration_bins: int = Field(15, ge=2, le=100)
    shift_data: ShiftDataConfig | None = Field(
        None, description="a naturally shifted test set, e.g. another camera"
    )
    ood_data: ShiftDataConfig | None = Field(
        None, description="a second dataset of out-of-distribution images"
    )
    corruption_benchmark: CorruptionBenchmarkConfig | None = Field(
        None, description="corrupted test sets from files (CIFAR-10-C, ImageNet-C, MNIST-C layouts)"
    )

    @field_validator("corruptions")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        return distinct(v, "evaluation.corruptions")

    @field_validator("severities")
    @classmethod
    def _severities(cls, v: list[int]) -> list[int]:
        return severities(v, "evaluation.severities")

    @field_validator("eps")
    @classmethod
    def _eps_range(cls, v: list[float]) -> list[float]:
        return radii(v, "evaluation.eps", top=1)

    @field_validator("l2_eps")
    @classmethod
    def _l2_range(cls, v: list[float]) -> list[float]:
        return radii(v, "evaluation.l2_eps")
