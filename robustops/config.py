"""Pydantic models of the YAML configs: the one place that holds defaults.

Every model forbids unknown keys, so a typo such as ``train.epoch`` is an error that names the
key instead of a silently ignored setting.
"""

from __future__ import annotations

import copy
import difflib
import json
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from robustops import names
from robustops.errors import ConfigError

# A metric name MLflow accepts (the gate's names): checked by the same rule as every name we hand on.
MetricName = Annotated[str, AfterValidator(names.metric_name)]


class Strict(BaseModel):
    # NaN and infinity are never a setting: a NaN threshold is never crossed, a NaN radius turns
    # a whole dimension off without a word.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class DataSource(StrEnum):
    DIGITS = "digits"
    NPZ = "npz"
    FOLDER = "folder"


class Optimizer(StrEnum):
    ADAM = "adam"
    SGD = "sgd"


class Schedule(StrEnum):
    CONSTANT = "constant"
    COSINE = "cosine"
    ONECYCLE = "onecycle"


class AugmentPolicy(StrEnum):
    NONE = "none"
    CORRUPTIONS = "corruptions"
    AUGMIX = "augmix"


# Disjoint by design: each held-out corruption has a trained relative (shot vs gaussian noise,
# defocus vs gaussian blur, fog vs contrast), as in Hendrycks' protocol, but is never trained on.
TRAIN_CORRUPTIONS = [
    "gaussian_noise",
    "impulse_noise",
    "gaussian_blur",
    "motion_blur",
    "contrast",
    "brightness",
    "pixelate",
    "affine",
    "cutout",
]
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


def _radii(values: list[float], what: str, top: float | None = None) -> list[float]:
    """A sorted list of distinct radii >= 0 (at most ``top``) whose metric keys differ."""
    bad = [e for e in values if e < 0 or (top is not None and e > top)]
    if bad:
        within = f"[0, {top:g}] for pixels in [0, 1]" if top is not None else "[0, inf)"
        raise ValueError(f"values must lie in {within}, got {bad}")
    names.distinct_numbers(values, what)
    return sorted(set(values))


def _registered(registry: Any, name: str) -> str:
    """A name in a plug-in registry; the registry's own error lists the known names."""
    try:
        registry.get(name)
    except KeyError as e:
        raise ValueError(e.args[0]) from None
    return name


def _known_corruptions(names: list[str]) -> list[str]:
    from robustops.corruptions import CORRUPTIONS  # late import: corruptions import torch

    bad = [n for n in names if n not in CORRUPTIONS]
    if bad:
        raise ValueError(f"unknown corruption(s) {bad}; known: {', '.join(CORRUPTIONS.names())}")
    if len(set(names)) != len(names):
        raise ValueError("corruption names repeat")
    return names


class DataConfig(Strict):
    source: DataSource = DataSource.DIGITS
    path: Path | None = Field(None, description="an .npz file or an image folder")
    image_size: tuple[int, int] | None = Field(
        None, description="resize every image to (height, width); one int means a square"
    )
    channels: Literal[1, 3] | None = Field(
        None, description="force grayscale (1) or RGB (3); None keeps the data's own"
    )
    test_path: Path | None = Field(
        None,
        description="a fixed test set in data.source's format (e.g. MNIST's test file): the test "
        "split, instead of test_fraction of data.path",
    )
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0, lt=0.5, description="ignored when test_path is set")
    extra_train: list[Path] = Field(
        [],
        description="labelled .npz files or image folders appended to the training split only "
        "(e.g. drifted production batches, for retraining)",
    )
    train_class_fraction: dict[str, float] = Field(
        {},
        description="keep only this share of a class's training samples, e.g. {'3': 0.05}: "
        "simulates a rare class (validation and test stay whole)",
    )

    @field_validator("train_class_fraction")
    @classmethod
    def _fractions(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: f for k, f in v.items() if not 0 < f <= 1}
        if bad:
            raise ValueError(f"fractions must lie in (0, 1], got {bad}")
        return v

    @field_validator("image_size", mode="before")
    @classmethod
    def _square(cls, v: Any) -> Any:
        return (v, v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("image_size")
    @classmethod
    def _positive(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and min(v) < 4:
            raise ValueError("image_size must be at least 4x4")
        if v is not None and max(v) > 4096:
            raise ValueError("image_size must be at most 4096x4096 (a classifier's input, not a photo)")
        return v

    @model_validator(mode="after")
    def _path_matches_source(self) -> DataConfig:
        if self.source is DataSource.DIGITS and self.path is not None:
            raise ValueError("data.path is set but data.source is 'digits'; set data.source to npz or folder")
        if self.source is not DataSource.DIGITS and self.path is None:
            raise ValueError(f"data.source is {self.source.value!r} but data.path is not set")
        if self.source is DataSource.DIGITS and self.test_path is not None:
            raise ValueError("data.test_path needs data.source npz or folder (digits has no test file)")
        if self.val_fraction + self.test_fraction >= 0.8:
            raise ValueError("val_fraction + test_fraction must leave at least 20% for training")
        return self


class SynthesisConfig(Strict):
    """Synthetic samples for minority classes, made only when the training split is imbalanced."""

    enabled: bool = True
    generator: str = Field("cvae", description="a registered generator: cvae | interpolate")
    imbalance_ratio: float = Field(
        0.5, gt=0, le=1, description="a class with fewer than this share of the largest class is a minority"
    )
    target_ratio: float = Field(1.0, gt=0, le=1, description="fill minority classes up to this share")
    neighbours: int = Field(5, ge=1, description="interpolate: partners drawn from the k nearest")
    mix: float = Field(
        0.3, ge=0, le=1, description="interpolate: largest step towards the partner (1: plain SMOTE)"
    )
    jitter: float = Field(1.5, ge=0, description="strength of the random shape jitter of new samples")
    latent: int = Field(16, ge=2, description="cvae: latent dimensions")
    style: Literal["borrowed", "prior"] = Field(
        "borrowed",
        description="cvae: latents of real images of other classes (borrowed) or of N(0, I) (prior)",
    )
    epochs: int = Field(80, ge=1, description="cvae: training epochs")
    grid_per_class: int = Field(8, ge=1, le=32, description="samples per class in the logged grid")

    @field_validator("generator")
    @classmethod
    def _registered(cls, v: str) -> str:
        from robustops.data.synthesis import GENERATORS  # late import: synthesis imports torch

        return _registered(GENERATORS, v)


class AugmentConfig(Strict):
    """Training-time augmentation; never uses an evaluation corruption."""

    policy: AugmentPolicy = AugmentPolicy.CORRUPTIONS
    corruptions: list[str] = Field(TRAIN_CORRUPTIONS, description="drawn at random per sample")
    severity: tuple[int, int] = Field((1, 5), description="severities drawn uniformly from [min, max]")
    p: float = Field(0.5, ge=0, le=1, description="corruptions policy: share of each batch augmented")
    width: int = Field(3, ge=1, le=8, description="augmix: chains mixed per image")
    depth: int = Field(0, ge=0, le=5, description="augmix: ops per chain (0: random 1..3)")
    alpha: float = Field(1.0, gt=0, description="augmix: Dirichlet and Beta concentration")
    jsd: bool = Field(False, description="augmix: add the Jensen-Shannon consistency loss")
    jsd_weight: float = Field(12.0, ge=0)

    @field_validator("corruptions")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        return _known_corruptions(v)

    @field_validator("severity")
    @classmethod
    def _range(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not 1 <= v[0] <= v[1] <= 5:
            raise ValueError(f"severity must be [min, max] with 1 <= min <= max <= 5, got {list(v)}")
        return v


class AdversarialSetConfig(Strict):
    """The adversarial examples exported for audits and adversarial training."""

    enabled: bool = True
    attack: Literal["fgsm", "pgd_linf", "pgd_l2"] = "pgd_linf"
    eps: float = Field(0.1, gt=0, description="L-inf radius (at most 1), or the L2 radius for pgd_l2")
    steps: int = Field(20, ge=1)
    rel_step: float = Field(2.5, gt=0)
    max_samples: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _linf_at_most_one(self) -> AdversarialSetConfig:
        if self.attack != "pgd_l2" and self.eps > 1:
            raise ValueError(f"eps must be at most 1 for an L-inf attack on pixels in [0, 1], got {self.eps}")
        return self


class ModelConfig(Strict):
    name: str = Field("cnn", description="a registered model: see robustops.models.MODELS")
    width: int = Field(32, ge=4, le=1024, description="channels of the first conv layer")
    hidden: int = Field(128, ge=8, le=8192, description="units of the hidden dense layers")
    dropout: float = Field(0.25, ge=0, lt=1)

    @field_validator("name")
    @classmethod
    def _registered(cls, v: str) -> str:
        from robustops.models import MODELS  # late import: models import torch

        return _registered(MODELS, v)


class TrainConfig(Strict):
    optimizer: Optimizer = Optimizer.ADAM
    lr: float = Field(2e-3, gt=0, le=10)
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD only")
    batch_size: int = Field(64, ge=1)
    epochs: int = Field(40, ge=1)
    patience: int = Field(10, ge=1, description="epochs without a better validation accuracy")
    schedule: Schedule = Field(
        Schedule.CONSTANT, description="learning rate over the epochs: constant | cosine | onecycle"
    )
    progress: bool = Field(True, description="show a progress bar on a terminal")


class AutoAttackConfig(Strict):
    """The AutoAttack-grade ensemble: APGD-CE, APGD-DLR and Square, worst case per example."""

    enabled: bool = True
    eps: list[float] = Field([0.1], description="L-inf radii to run it at (it costs about 6 s per radius)")

    @field_validator("eps")
    @classmethod
    def _eps_range(cls, v: list[float]) -> list[float]:
        return _radii(v, "evaluation.autoattack.eps", top=1)

    apgd_steps: int = Field(100, ge=1, description="APGD iterations per restart (AutoAttack: 100)")
    apgd_restarts: int = Field(1, ge=1)
    square_queries: int = Field(1000, ge=1, description="Square queries per image (AutoAttack: 5000)")


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


class SpecConfig(Strict):
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
        from robustops.evaluation.specification import SPEC_CHECKS  # late import: checks import torch

        return [_registered(SPEC_CHECKS, n) for n in v]

    @field_validator("invariances")
    @classmethod
    def _invariances(cls, v: list[str]) -> list[str]:
        for item in v:
            name, _, sev = item.partition(":")
            _known_corruptions([name])
            if sev and sev not in {"1", "2", "3", "4", "5"}:
                raise ValueError(f"invariance {item!r}: severity must be 1..5, e.g. {name}:1")
        return v


class ShiftDataConfig(Strict):
    """An extra dataset in the formats of `data` (npz or image folder) with the training classes."""

    source: Literal[DataSource.NPZ, DataSource.FOLDER] = DataSource.NPZ
    path: Path
    image_size: tuple[int, int] | None = None
    channels: Literal[1, 3] | None = None

    @field_validator("image_size", mode="before")
    @classmethod
    def _square(cls, v: Any) -> Any:
        return (v, v) if isinstance(v, int) and not isinstance(v, bool) else v


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
    max_samples: int | None = Field(
        None, ge=1, description="attack at most this many test samples (None: all)"
    )
    corruptions: list[str] = Field(EVAL_CORRUPTIONS, description="held out: never used in training")
    severities: list[int] = Field([1, 2, 3, 4, 5])
    autoattack: AutoAttackConfig = AutoAttackConfig()
    masking: MaskingConfig = MaskingConfig()
    noise: NoiseConfig = NoiseConfig()
    specification: SpecConfig = SpecConfig()
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

    @field_validator("corruptions")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        return _known_corruptions(v)

    @field_validator("severities")
    @classmethod
    def _severities(cls, v: list[int]) -> list[int]:
        if not v or any(s not in (1, 2, 3, 4, 5) for s in v):
            raise ValueError(f"severities must be a non-empty subset of 1..5, got {v}")
        return sorted(set(v))

    @field_validator("eps")
    @classmethod
    def _eps_range(cls, v: list[float]) -> list[float]:
        return _radii(v, "evaluation.eps", top=1)

    @field_validator("l2_eps")
    @classmethod
    def _l2_range(cls, v: list[float]) -> list[float]:
        return _radii(v, "evaluation.l2_eps")


class RegularizeConfig(Strict):
    """Regularizers that apply to any training method."""

    label_smoothing: float = Field(0.0, ge=0, lt=1, description="cross-entropy label smoothing")
    spectral_norm: bool = Field(
        False, description="spectral normalization of every conv and dense layer (a Lipschitz control)"
    )
    grad_penalty: float = Field(
        0.0, ge=0, description="weight of the squared input-gradient norm of the loss (double backprop)"
    )


class DefenceConfig(Strict):
    """Settings every defence has; each registered defence extends it with its own."""

    name: str = Field(description="a registered defence")
    label: Annotated[str, AfterValidator(names.label)] | None = Field(
        None, description="the model's name in MLflow (default: the defence's name); must be unique"
    )
    epochs: int | None = Field(None, ge=1, description="overrides train.epochs for this defence")
    regularize: RegularizeConfig | None = Field(None, description="overrides the top-level regularize")

    @property
    def run_name(self) -> str:
        return self.label or self.name


class StandardConfig(DefenceConfig):
    """Plain training under the augmentation policy (what the baseline gets)."""

    name: Literal["standard"] = "standard"


class AdversarialConfig(DefenceConfig):
    """Settings shared by the adversarial-training defences: the inner attack's threat model."""

    eps: float = Field(0.1, gt=0, le=1, description="L-inf radius of the training attack")
    warmup_epochs: int = Field(0, ge=0, description="ramp eps linearly from 0 over this many epochs")
    select_steps: int = Field(
        10, ge=1, description="PGD steps of the validation attack that picks the best epoch"
    )


class IterativeConfig(AdversarialConfig):
    """Adversarial training whose inner maximisation is a multi-step PGD."""

    steps: int = Field(10, ge=1, description="PGD steps of the inner maximisation")
    rel_step: float = Field(2.5, gt=0, description="PGD step size as a multiple of eps / steps")


class PGDATConfig(IterativeConfig):
    """PGD adversarial training (Madry et al., 2018)."""

    name: Literal["pgd_at"] = "pgd_at"
    clean_weight: float = Field(
        0.0, ge=0, le=1, description="mixed batches: loss = w * clean CE + (1 - w) * adversarial CE"
    )


class FGSMRSConfig(AdversarialConfig):
    """FGSM from a random start ("Fast is better than free", Wong et al., 2020)."""

    name: Literal["fgsm_rs"] = "fgsm_rs"
    clean_weight: float = Field(
        0.0, ge=0, le=1, description="mixed batches: loss = w * clean CE + (1 - w) * adversarial CE"
    )
    alpha: float = Field(1.25, gt=0, description="FGSM step size as a multiple of eps")
    clip_start: bool = Field(
        False,
        description="clip the random start to [0, 1] before the gradient; False (default) takes it "
        "at x + noise unclipped, as Wong et al. do (a clipped start on black backgrounds drifts into "
        "gradient masking)",
    )
    guard_samples: int = Field(256, ge=1, description="training images the overfitting guard attacks")
    guard_drop: float = Field(
        0.5, gt=0, le=1, description="guard: PGD accuracy fell below (1 - guard_drop) x its best so far"
    )
    guard_gap: float = Field(
        0.3, ge=0, le=1, description="guard: and FGSM accuracy exceeds PGD accuracy by more than this"
    )
    guard_min: float = Field(
        0.1, ge=0, le=1, description="guard: acts only once the guard's PGD accuracy has reached this"
    )


class TRADESConfig(IterativeConfig):
    """TRADES (Zhang et al., 2019): clean cross-entropy plus beta * KL(clean || adversarial)."""

    name: Literal["trades"] = "trades"
    beta: float = Field(6.0, ge=0, description="weight of the robust KL term")


class DistillationConfig(DefenceConfig):
    """Defensive distillation (Papernot et al., 2016): teacher and student trained at temperature T,
    the student deployed at T = 1."""

    name: Literal["distillation"] = "distillation"
    temperature: float = Field(50.0, gt=0, description="softmax temperature T of teacher and student")
    student: ModelConfig | None = Field(None, description="the student's architecture (default: model)")


class SmoothingConfig(DefenceConfig):
    """Randomized smoothing (Cohen et al., 2019): Gaussian-noise training, certified L2 radii."""

    name: Literal["smoothing"] = "smoothing"
    sigma: float = Field(0.25, gt=0, description="std of the Gaussian noise, for training and certifying")
    n0: int = Field(100, ge=1, description="noise samples that select the top class")
    n: int = Field(1000, ge=1, description="noise samples that estimate its probability")
    alpha: float = Field(0.001, gt=0, lt=0.5, description="failure probability of each certificate")
    radii: list[float] = Field(
        [0.0, 0.125, 0.25, 0.375, 0.5],
        description="L2 radii to report; n caps the radius at sigma * Phi^-1(alpha ** (1 / n))",
    )
    batch_size: int = Field(2000, ge=1, description="noisy copies classified at once")
    max_samples: int | None = Field(None, ge=1, description="certify at most this many test images")

    @field_validator("radii")
    @classmethod
    def _radii(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("radii must be a non-empty list of numbers >= 0")
        return _radii(v, "radii")


def _defence_class(item: Any) -> type[DefenceConfig]:
    """The registered defence's own config class for a list entry (a name or a block)."""
    from robustops.training.defences import DEFENCES  # late import: defences import torch

    name = item if isinstance(item, str) else item.get("name") if isinstance(item, dict) else None
    if name is None:
        return DefenceConfig
    return DEFENCES.get(_registered(DEFENCES, name)).config


def _defence(item: Any) -> Any:
    """A list entry: a name (shorthand for its defaults) or a block, validated by the registered
    defence's own config class."""
    if isinstance(item, DefenceConfig):
        return item
    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, dict) or "name" not in item:
        raise ValueError(f"each defence is a name or a block with a 'name' key, got {item!r}")
    return _defence_class(item).model_validate(item)


class MonitorConfig(Strict):
    """Drift monitoring of production batches against the champion's reference."""

    model: str | None = Field(
        None, description="the monitored model; None: models:/<registered_model>@<gate.alias>"
    )
    alpha: float = Field(
        0.01, gt=0, lt=1, description="false-alarm budget per batch (Bonferroni over columns)"
    )
    mmd_threshold: float = Field(0.015, gt=0, description="embedding drift: MMD above this is drift")
    embeddings: bool = Field(True, description="test the projected embeddings too")
    chunk: int = Field(4096, ge=1, description="images scored at once: memory stays bounded on big batches")
    min_batch: int = Field(
        20, ge=3, description="a batch needs this many usable images for the drift tests (they fail below 3)"
    )
    emit_event: bool = Field(True, description="emit robustops.drift.detected to Prefect on drift")
    cron: str | None = Field(None, description="serve: monitor batch_path on this schedule")
    batch_path: Path | None = Field(None, description="serve: the batch the scheduled monitor scores")

    @field_validator("model")
    @classmethod
    def _uri(cls, v: str | None) -> str | None:
        if v is not None:
            names.model_uri(v)
        return v


class RetrainConfig(Strict):
    """Retraining: on a schedule, and when the monitor detects drift."""

    cron: str | None = Field(
        "0 3 * * 0", description="serve: retrain on this schedule (default Sundays 03:00)"
    )
    timezone: str = "UTC"
    on_drift: bool = Field(True, description="serve: a drift event triggers a retrain")
    labels: Literal["batch", "store"] = Field(
        "batch", description="the drifted batch's labels come with it (batch) or from label_store (store)"
    )
    label_store: Path | None = Field(
        None, description="labels='store': labelled images (npz or folder) to add"
    )


class GateConfig(Strict):
    """Promotion: the best model that passes the gate becomes the challenger; it takes the alias
    only if it beats the current champion on ``primary`` and regresses no gated metric by more
    than ``tolerance``."""

    enabled: bool = True
    alias: Annotated[str, AfterValidator(names.alias)] = Field(
        "champion", min_length=1, description="the registry alias the gate moves"
    )
    primary: MetricName = Field(
        "adv/autoattack/eps_0.1/acc", description="the score that ranks passing models"
    )
    min: dict[MetricName, float] = Field(
        {"clean/acc": 0.95, "adv/autoattack/eps_0.1/acc": 0.7},
        description="metric -> lowest allowed value",
    )
    max: dict[MetricName, float] = Field(
        {"corruption/mce": 1.2, "calibration/ece": 0.1}, description="metric -> highest allowed value"
    )
    require_masking: bool = Field(
        True, description="a model failing a gradient-masking check is not promoted"
    )
    spec_checks: list[str] = Field(
        ["invariance_brightness", "recall_floor", "rare_class", "edge_blank", "edge_constant", "edge_noise",
         "edge_saturated"],
        description="specification checks that block promotion (the others are reported only)",
    )  # fmt: skip
    tolerance: float = Field(0.01, ge=0, description="allowed regression of a gated metric vs the champion")
    significance: float = Field(
        0.05,
        gt=0,
        lt=0.5,
        description="paired test: when both models' per-image outcomes on primary are known for the same "
        "test images, the challenger must beat the champion with a one-sided exact McNemar p below this",
    )
    margin: float = Field(
        0.02,
        ge=0,
        lt=1,
        description="otherwise (no per-image outcomes, or another test set): the challenger must beat the "
        "champion's primary by more than this (0.02: about one standard error of an accuracy on 400 images)",
    )


class RunnerConfig(Strict):
    """Where the pipeline's training and scoring tasks run: the flow submits every model's
    training and every part of every scorecard at once, and the runner executes them."""

    kind: Literal["threads", "dask"] = Field(
        "threads", description="threads: in this process; dask: on a Dask cluster (prefect-dask)"
    )
    workers: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto",
        description="threads: scoring tasks at once beside the one training lane (models train one "
        "at a time: training seeds torch's global generator); dask without an address: LocalCluster "
        "worker processes. auto: from the CPUs this process may use and the image size",
    )
    torch_threads: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto",
        description="torch threads per task (and per Dask worker). auto: 1 for images under 3x32x32 "
        "values, else the usable CPUs shared among the tasks running at once",
    )
    address: str | None = Field(
        None, description="dask: a running scheduler, e.g. tcp://dask-scheduler:8786 (None: a LocalCluster)"
    )

    @model_validator(mode="after")
    def _address_needs_dask(self) -> RunnerConfig:
        if self.address and self.kind != "dask":
            raise ValueError("runner.address is a Dask scheduler: set runner.kind: dask as well")
        return self


class MlflowConfig(Strict):
    tracking_uri: str | None = Field(None, description="None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db")

    @field_validator("tracking_uri")
    @classmethod
    def _no_credentials(cls, v: str | None) -> str | None:
        from robustops.redact import has_credentials

        # The config is logged (MLflow params, resolved.yaml, Prefect parameters): no secrets in it.
        if v is not None and has_credentials(v):
            raise ValueError(
                "holds a password; keep credentials out of configs (they are logged): set "
                "MLFLOW_TRACKING_URI in the environment, or MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD for a tracking server"
            )
        return v

    experiment: Annotated[str, AfterValidator(names.experiment)] = Field("robustops", min_length=1)
    registered_model: Annotated[str, AfterValidator(names.registered_model_name)] | None = Field(
        None,
        description="None: named after the data, robustops-<data> (see MlflowConfig.model_name), so data "
        "of another shape or classes never lands under the same name by default",
    )

    artifact_root: str = Field("mlartifacts", description="artifact folder of new experiments")
    register_model: bool = Field(True, description="register the model in the MLflow registry")

    def model_name(self, data: DataConfig) -> str:
        """The registered model's name: ``registered_model`` when set, else one derived from the
        data: ``robustops-digits`` for the embedded digits, ``robustops-<file stem>`` for an
        .npz file, ``robustops-<folder name>`` for an image folder. The one place that resolves
        it: a :class:`Config` fills ``registered_model`` with it when it is validated, so every
        reader (the pipeline, monitor, predict, serve, deployments) sees the same name."""
        if self.registered_model is not None:
            return self.registered_model
        if data.source is DataSource.DIGITS or data.path is None:
            stem = data.source.value
        else:
            path = Path(data.path).expanduser()
            # "data/" and "." name their folder; an .npz names its file without the suffix.
            stem = (path if path.name not in ("", ".", "..") else path.absolute()).name
            stem = stem.removesuffix(".npz") if data.source is DataSource.NPZ else stem
        # Only characters every MLflow store, models:/ URI and search filter takes.
        kept = "".join(c if c.isascii() and (c.isalnum() or c in "_.") else "-" for c in stem)
        stem = "-".join(filter(None, kept.split("-"))).strip(".")[: names.MAX_MODEL_NAME - 10]
        return names.registered_model_name(f"robustops-{stem or data.source.value}")


class LimitsConfig(Strict):
    """What one input may cost in memory, checked from its headers before anything is decoded: a
    compressed file that inflates to gigabytes is refused, not loaded."""

    max_bytes: int = Field(
        4 * 2**30,
        ge=2**20,
        description="decoded images of one input (a data file or folder, a batch) as float32, in bytes "
        "(default 4 GiB; MNIST takes 0.2 GiB, CIFAR-10 0.7 GiB)",
    )
    max_image_pixels: int = Field(
        89_478_485,
        ge=16,
        le=178_956_970,
        description="pixels of one image file (width x height), read from its header; Pillow itself "
        "refuses more than 178,956,970",
    )


class Config(Strict):
    seed: int = Field(0, ge=0, le=2**31 - 1)
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    data: DataConfig = DataConfig()
    synthesis: SynthesisConfig = SynthesisConfig()
    augment: AugmentConfig = AugmentConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    evaluation: EvalConfig = EvalConfig()
    adversarial_set: AdversarialSetConfig = AdversarialSetConfig()
    regularize: RegularizeConfig = RegularizeConfig()
    # The schema says "objects with a name": each defence's own class validates its block (see
    # _defences), so a schema of the base class would wrongly refuse their settings (Prefect
    # checks deployment parameters against it).
    defences: Annotated[
        list[SerializeAsAny[DefenceConfig]],
        WithJsonSchema({"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "object"}]}}),
    ] = Field(
        default_factory=lambda: [
            PGDATConfig(),
            FGSMRSConfig(),
            TRADESConfig(),
            DistillationConfig(),
            SmoothingConfig(),
        ],
        description="trained beside the baseline on the same split: names or blocks with settings",
    )
    gate: GateConfig = GateConfig()
    monitor: MonitorConfig = MonitorConfig()
    retrain: RetrainConfig = RetrainConfig()
    mlflow: MlflowConfig = MlflowConfig()
    runner: RunnerConfig = RunnerConfig()
    limits: LimitsConfig = LimitsConfig()

    @property
    def monitored_model(self) -> str:
        return self.monitor.model or f"models:/{self.mlflow.model_name(self.data)}@{self.gate.alias}"

    @model_validator(mode="after")
    def _registered_model(self) -> Config:
        # Resolved once, here: the adapters take only the mlflow section and read its name.
        if self.mlflow.registered_model is None:
            self.mlflow = self.mlflow.model_copy(
                update={"registered_model": self.mlflow.model_name(self.data)}
            )
        return self

    @field_validator("defences", mode="before")
    @classmethod
    def _defences(cls, v: Any) -> Any:
        if v is None:
            return []
        if not isinstance(v, list):
            raise ValueError(
                f"defences must be a list of names or blocks, got {type(v).__name__}: write a list, "
                "e.g. defences: [pgd_at] in YAML or --set defences=[pgd_at]"
            )
        out = []
        for i, item in enumerate(v):
            try:
                out.append(_defence(item))
            except ValidationError as e:
                raise ValueError(f"defences.{i}: {_format(e, _defence_class(item))}") from None
            except ValueError as e:
                raise ValueError(f"defences.{i}: {e}") from None
        names = [d.run_name for d in out]
        if "baseline" in names or len(set(names)) != len(names):
            raise ValueError(
                f"defence labels must be unique and not 'baseline', got {names}: give repeats a 'label'"
            )
        return out

    @model_validator(mode="after")
    def _held_out(self) -> Config:
        if self.augment.policy != AugmentPolicy.NONE:
            both = sorted(set(self.augment.corruptions) & set(self.evaluation.corruptions))
            if both:
                raise ValueError(
                    f"corruption(s) {both} are in augment.corruptions and evaluation.corruptions; "
                    "evaluation corruptions are held out and must never be trained on: remove them from one list"
                )
        return self


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The config class inside a field's annotation (``X``, ``X | None``, ``list[X]``, ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _keys(cls: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Every dotted key of ``cls``, sections included."""
    for name, f in cls.model_fields.items():
        yield prefix + name
        sub = _model_in(f.annotation)
        if sub is not None and sub is not DefenceConfig:
            yield from _keys(sub, f"{prefix}{name}.")


# Keys that were renamed: an old config names the new key in its error.
_RENAMED = {"runner.threads_per_worker": "runner.torch_threads"}


def _did_you_mean(root: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """The nearest existing key to the unknown one at ``loc``: a sibling first, then any key of
    the whole config with a similar last name (``train.eps`` -> ``evaluation.eps``)."""
    if root is Config and ".".join(map(str, loc)) in _RENAMED:
        return _RENAMED[".".join(map(str, loc))]
    cls: type[BaseModel] | None = root
    path = [str(p) for p in loc[:-1]]
    for part in loc[:-1]:
        if isinstance(part, int) or cls is None:
            continue
        field = cls.model_fields.get(part)
        cls = _model_in(field.annotation) if field is not None else None
    wrong = str(loc[-1])
    if cls is not None:
        near = difflib.get_close_matches(wrong, list(cls.model_fields), n=1, cutoff=0.6)
        if near:
            return ".".join([*path, near[0]])
    everywhere = {k.rpartition(".")[2]: k for k in _keys(root)}
    near = difflib.get_close_matches(wrong, list(everywhere), n=1, cutoff=0.75)
    return everywhere[near[0]] if near else ""


def _format(err: ValidationError, root: type[BaseModel] | None = None) -> str:
    root = root or Config
    parts = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            near = _did_you_mean(root, e["loc"])
            hint = f"did you mean {near}? " if near else "check the spelling; "
            msg = f"unknown key ({hint}see configs/default.yaml for every key)"
        elif e["type"] == "list_type" and not isinstance(e.get("input"), (list, dict)):
            value = json.dumps(e.get("input")) if e.get("input") is not None else "..."
            leaf = str(e["loc"][-1])
            msg = (
                f"expects a list, got {e.get('input')!r}: write [{value}] "
                f"(--set {key}=[{value}] on the command line, {leaf}: [{value}] in YAML)"
            )
        elif isinstance(e.get("input"), (str, int, float, bool)) and e["type"] != "value_error":
            msg = f"{msg}, got {e['input']!r}"
        parts.append(f"{key}: {msg}" if key else msg)
    return "; ".join(parts)


def _set(tree: dict[str, Any], dotted: str, value: Any, defaults: Any = None) -> None:
    """Sets ``a.b.c`` in a nested tree of dicts and lists; a number indexes a list
    (``defences.0.eps``), and a defence given by name alone becomes a block to set keys in.

    ``defaults`` is the same tree with every default filled in: a list the tree does not hold
    yet (``defences`` when no config file names them) is copied from it first, so an override
    applies to what the run would use whatever the config's source."""
    keys = dotted.split(".")
    node: Any = tree
    default: Any = defaults
    for i, k in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            if not k.isdigit():
                raise ConfigError(
                    f"--set {dotted}: {'.'.join(keys[:i])} is a list: index it by number, e.g. "
                    f"{'.'.join([*keys[:i], '0', *keys[i + 1 :]])}"
                )
            if int(k) >= len(node):
                have = f"items 0 to {len(node) - 1}" if node else "no items"
                raise ConfigError(
                    f"--set {dotted}: index {k} is out of range: {'.'.join(keys[:i])} has {have}; "
                    f"to add an item, set the whole list, e.g. --set {'.'.join(keys[:i])}=[...]"
                )
            if last:
                node[int(k)] = value
                return
            if isinstance(node[int(k)], str):
                node[int(k)] = {"name": node[int(k)]}
            node = node[int(k)]
            default = None  # an item's own defaults come from its block's class
        elif isinstance(node, dict):
            if last:
                node[k] = value
                return
            sub = default.get(k) if isinstance(default, dict) else None
            if k not in node and isinstance(sub, list):
                node[k] = copy.deepcopy(sub)
            node = node.setdefault(k, {})
            default = sub
        else:
            raise ConfigError(f"--set {dotted}: {'.'.join(keys[:i])} is not a section")
    if not isinstance(node, (dict, list)):
        raise ConfigError(f"--set {dotted}: {keys[-2]} is not a section")


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """Turns ``["train.epochs=5", "evaluation.eps=[0.1,0.2]"]`` into (key, value) pairs.

    Values are parsed as YAML, so numbers, lists and booleans work as they do in a file.
    """
    pairs = []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not k for k in key.split(".")):
            raise ConfigError(f"bad --set {item!r}: use KEY=VALUE, e.g. --set train.epochs=5")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"bad --set {item!r}: value is not valid YAML ({e.problem})") from None
        except RecursionError:
            raise ConfigError(f"bad --set {key}=...: value is nested too deeply; {_NESTING_FIX}") from None
        _check_tree(value, f"--set {key}")
        pairs.append((key, value))
    return pairs


MAX_DEPTH = 32  # the deepest real config is about 4 levels
MAX_VALUES = 50_000  # the default config holds a few hundred
_NESTING_FIX = "a config holds sections of plain values (see configs/default.yaml)"


def _check_tree(tree: Any, source: str) -> None:
    """Refuses a YAML tree too deep or too large to be a config before anything walks it.

    ``yaml.safe_load`` keeps aliases as shared references, so a few lines of anchors (a "billion
    laughs") or an alias to itself load fine and only blow up when validation and error messages
    walk them; an explicit stack with limits keeps the walk bounded.
    """
    stack, seen = [(tree, 0)], 0
    while stack:
        node, depth = stack.pop()
        seen += 1
        if depth > MAX_DEPTH:
            raise ConfigError(
                f"{source} is nested more than {MAX_DEPTH} levels deep (a recursive YAML alias?); {_NESTING_FIX}"
            )
        if seen > MAX_VALUES:
            raise ConfigError(
                f"{source} holds more than {MAX_VALUES:,} values (a very long list, or YAML aliases "
                f"that repeat?); {_NESTING_FIX}"
            )
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        found, folder = path.is_file(), path.is_dir()
    except (OSError, ValueError) as e:  # a name too long, or with a NUL byte
        reason = getattr(e, "strerror", None) or e
        raise ConfigError(
            f"config file {path} cannot be used ({reason}); pass an existing file, e.g. configs/default.yaml"
        ) from None
    if folder:
        raise ConfigError(f"config file {path} is a folder; pass a YAML file, e.g. configs/default.yaml")
    if not found:
        raise ConfigError(f"config file {path} not found; pass an existing file, e.g. configs/default.yaml")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where else ""
        raise ConfigError(f"config file {path} is not valid YAML{at}: fix its syntax") from None
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply; {_NESTING_FIX}") from None
    except OSError as e:
        raise ConfigError(
            f"config file {path} cannot be read ({e.strerror}); check its permissions"
        ) from None
    _check_tree(tree, f"config file {path}")
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, not {type(tree).__name__}")
    return tree


def build_config(tree: dict[str, Any], source: str = "config") -> Config:
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(f"invalid {source}: {_format(e)}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Loads a YAML config (defaults when ``path`` is None) and applies ``--set`` overrides."""
    tree = read_yaml(path) if path is not None else {}
    pairs = parse_overrides(overrides or [])
    defaults = Config().model_dump(mode="json") if pairs else None
    for key, value in pairs:
        _set(tree, key, value, defaults)
    return build_config(tree, source=str(path) if path else "config")


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def flatten(cfg: Config) -> dict[str, str]:
    """Dotted key -> string value, the shape MLflow params want."""
    out: dict[str, str] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, BaseModel):
            for k in type(node).model_fields:
                walk(f"{prefix}.{k}" if prefix else k, getattr(node, k))
        else:
            # A mapping (gate.min, train_class_fraction) is one value: its keys are users' names,
            # which need not be valid MLflow param keys.
            out[prefix] = json.dumps(_plain(node)) if isinstance(node, dict) else str(_plain(node))

    walk("", cfg)
    return out


def _plain(value: Any) -> Any:
    """A config value as JSON-able data (enums, paths and sub-models as their dumped form)."""
    from pydantic import TypeAdapter

    return TypeAdapter(Any).dump_python(value, mode="json")
