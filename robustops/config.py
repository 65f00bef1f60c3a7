"""Pydantic models of the YAML configs: the one place that holds defaults.

Every model forbids unknown keys, so a typo such as ``train.epoch`` is an error that names the
key instead of a silently ignored setting.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from robustops.errors import ConfigError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0, lt=0.5)
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
        return v

    @model_validator(mode="after")
    def _path_matches_source(self) -> DataConfig:
        if self.source is DataSource.DIGITS and self.path is not None:
            raise ValueError("data.path is set but data.source is 'digits'; set data.source to npz or folder")
        if self.source is not DataSource.DIGITS and self.path is None:
            raise ValueError(f"data.source is {self.source.value!r} but data.path is not set")
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
    eps: float = Field(0.1, gt=0)
    steps: int = Field(20, ge=1)
    rel_step: float = Field(2.5, gt=0)
    max_samples: int | None = Field(None, ge=1)


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


class EvalConfig(Strict):
    eps: list[float] = Field([0.05, 0.1, 0.2], description="L-inf radii, pixels in [0, 1]")
    pgd_steps: int = Field(20, ge=1)
    pgd_rel_step: float = Field(
        2.5, gt=0, description="PGD step size as a multiple of eps / steps (Madry et al.)"
    )
    pgd_restarts: int = Field(1, ge=1)
    batch_size: int = Field(256, ge=1)
    max_samples: int | None = Field(
        None, ge=1, description="attack at most this many test samples (None: all)"
    )
    corruptions: list[str] = Field(EVAL_CORRUPTIONS, description="held out: never used in training")
    severities: list[int] = Field([1, 2, 3, 4, 5])

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
        bad = [e for e in v if not 0 <= e <= 1]
        if bad:
            raise ValueError(f"eps must lie in [0, 1] for pixels in [0, 1], got {bad}")
        return sorted(set(v))


class MlflowConfig(Strict):
    tracking_uri: str | None = Field(None, description="None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db")
    experiment: str = Field("robustops", min_length=1)
    registered_model: str = Field("robustops-digits", min_length=1)
    artifact_root: str = Field("mlartifacts", description="artifact folder of new experiments")
    register_model: bool = Field(True, description="register the model in the MLflow registry")


class Config(Strict):
    seed: int = Field(0, ge=0)
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    data: DataConfig = DataConfig()
    synthesis: SynthesisConfig = SynthesisConfig()
    augment: AugmentConfig = AugmentConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    evaluation: EvalConfig = EvalConfig()
    adversarial_set: AdversarialSetConfig = AdversarialSetConfig()
    mlflow: MlflowConfig = MlflowConfig()

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


def _format(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see configs/default.yaml for every key)"
        elif isinstance(e.get("input"), (str, int, float, bool)) and e["type"] != "value_error":
            msg = f"{msg}, got {e['input']!r}"
        parts.append(f"{key}: {msg}" if key else msg)
    return "; ".join(parts)


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for i, k in enumerate(keys[:-1]):
        child = node.setdefault(k, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {'.'.join(keys[: i + 1])} is not a section")
        node = child
    node[keys[-1]] = value


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Turns ``["train.epochs=5", "evaluation.eps=[0.1,0.2]"]`` into a nested dict.

    Values are parsed as YAML, so numbers, lists and booleans work as they do in a file.
    """
    tree: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not k for k in key.split(".")):
            raise ConfigError(f"bad --set {item!r}: use KEY=VALUE, e.g. --set train.epochs=5")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"bad --set {item!r}: value is not valid YAML ({e.problem})") from None
        _set(tree, key, value)
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; pass an existing file, e.g. configs/default.yaml")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where else ""
        raise ConfigError(f"config file {path} is not valid YAML{at}: fix its syntax") from None
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
    tree = _merge(tree, parse_overrides(overrides or []))
    return build_config(tree, source=str(path) if path else "config")


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def flatten(cfg: Config) -> dict[str, str]:
    """Dotted key -> string value, the shape MLflow params want."""
    out: dict[str, str] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = str(node)

    walk("", cfg.model_dump(mode="json"))
    return out
