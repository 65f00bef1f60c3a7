"""The data sections: where the data comes from, what the data stage adds, what one input may cost."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from robustops.config.base import AugmentPolicy, DataSource, Strict, distinct

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
        return distinct(v, "augment.corruptions")

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
