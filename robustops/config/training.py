"""The training sections: the architecture, the optimiser, regularizers, and what every defence has."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, field_validator, model_validator

from robustops import names
from robustops.config.base import Optimizer, Schedule, Strict, distinct


class PreprocessConfig(Strict):
    """What a user's model expects of its input, declared (never guessed) and folded into the
    model as its first layer: robustops feeds it images in [0, 1] and this turns them into the
    model's input. Applies to a ``model.source`` only; the built-in models normalize themselves."""

    scale: float = Field(1.0, gt=0, description="multiplies the [0, 1] pixels first (255 for a 0-255 model)")
    mean: list[float] | None = Field(
        None, description="per-channel mean subtracted after scaling (one per channel)"
    )
    std: list[float] | None = Field(
        None, description="per-channel std divided by after the mean (one per channel)"
    )
    channel_order: Literal["rgb", "bgr"] = Field("rgb", description="the channel order the model expects")
    size: tuple[int, int] | None = Field(
        None, description="(height, width) the model expects; images of another size are resized bilinearly"
    )

    @field_validator("size")
    @classmethod
    def _positive(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and min(v) < 1:
            raise ValueError(f"size must be two positive numbers (height, width), got {list(v)}")
        return v


class ModelConfig(Strict):
    name: str = Field(
        "cnn", description="a built-in model (see robustops.models.MODELS), used when source is unset"
    )
    width: int = Field(32, ge=4, le=1024, description="channels of the first conv layer")
    hidden: int = Field(128, ge=8, le=8192, description="units of the hidden dense layers")
    dropout: float = Field(0.25, ge=0, lt=1)
    normalize: bool = Field(
        True,
        description="a built-in model standardizes its input with the training split's per-channel "
        "mean and std; false feeds it the raw [0, 1] pixels (as Wong et al.'s MNIST network)",
    )
    source: str | None = Field(
        None,
        description="a user's model instead of the built-in one: package.module:callable or "
        "path/to/file.py:callable (a factory), a .pt2 file (torch.export), a TorchScript file, "
        "or an MLflow PyTorch model (models:/NAME/VERSION, models:/NAME@ALIAS, runs:/RUN_ID/PATH)",
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for a factory source")
    weights: str | None = Field(
        None, description="a state_dict or checkpoint file loaded into a factory's model"
    )
    weights_key: str | None = Field(
        None,
        description="the key of a checkpoint dict that holds the weights (default: the first of "
        "state_dict, model_state_dict, model, net, weights, ema)",
    )
    preprocess: PreprocessConfig = PreprocessConfig()
    classes: list[str] | None = Field(
        None,
        description="the class name of each output index of a source (default: the data's classes in order)",
    )

    @model_validator(mode="after")
    def _source_settings(self) -> ModelConfig:
        if self.source is not None and not self.source.strip():
            raise ValueError("source is empty: give a factory, a file or an MLflow URI, or leave it unset")
        # Without a source these settings wait for one (robustops evaluate --model gives it);
        # robustops run refuses them (robustops.catalog.check_trainable).
        factory_only = [k for k in ("weights", "weights_key") if getattr(self, k) is not None]
        factory_only += ["kwargs"] if self.kwargs else []
        if factory_only and self.source is not None and not is_factory(self.source):
            raise ValueError(
                f"{', '.join(factory_only)} apply to a factory source (package.module:callable or "
                f"path/to/file.py:callable) but source {self.source!r} is not a factory"
            )
        if self.classes is not None:
            distinct(self.classes, "model.classes")
        return self

    @property
    def is_builtin(self) -> bool:
        return self.source is None


def is_factory(source: str) -> bool:
    """Whether a model source names a Python factory (``where:callable``) rather than a file or
    an MLflow URI."""
    if source.startswith(("models:/", "runs:/")):
        return False
    where, colon, attr = source.rpartition(":")
    return bool(colon and where and attr and "/" not in attr and "\\" not in attr)


class TrainConfig(Strict):
    optimizer: Optimizer = Optimizer.ADAM
    lr: float = Field(2e-3, gt=0, le=10)
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD only")
    batch_size: int = Field(64, ge=1)
    epochs: int = Field(40, ge=1)
    patience: int = Field(
        10,
        ge=1,
        description="stop after this many epochs without a better selection metric (validation accuracy; "
        "PGD accuracy for adversarial training, noise accuracy for smoothing)",
    )
    schedule: Schedule = Field(
        Schedule.CONSTANT, description="learning rate over the epochs: constant | cosine | onecycle"
    )
    progress: bool = Field(True, description="show a progress bar on a terminal")
    mixed_precision: Literal["none", "bf16", "fp16"] = Field(
        "none",
        description="autocast the training steps: bf16 (CPU or GPU) or fp16 (GPU, with loss scaling); "
        "evaluation always runs in float32",
    )
    channels_last: bool = Field(
        False, description="train with channels-last memory (faster convolutions on GPUs with tensor cores)"
    )


class FinetuneConfig(Strict):
    """How every defence trains when the model is yours (``model.source``): it starts from your
    weights and fine-tunes, so it has its own optimizer, learning rate, epochs and schedule (a
    defence block's own ``epochs`` still wins). Ignored for the built-in models."""

    optimizer: Optimizer = Optimizer.SGD
    lr: float = Field(0.01, gt=0, le=10)
    epochs: int = Field(5, ge=1)
    schedule: Schedule = Schedule.COSINE
    freeze: list[str] = Field(
        default_factory=list,
        description="parameter-name prefixes of your network kept fixed (e.g. [conv1, layer1])",
    )
    batch_norm: Literal["update", "frozen"] = Field(
        "update",
        description="update: batch-norm statistics follow the fine-tuning batches (adversarial ones for "
        "adversarial training); frozen: batch-norm layers keep your model's statistics and stay in eval mode",
    )

    def applied_to(self, train: TrainConfig, epochs: int | None = None) -> TrainConfig:
        """``train`` with this fine-tuning's optimizer, learning rate, schedule and epochs."""
        return train.model_copy(
            update={
                "optimizer": self.optimizer,
                "lr": self.lr,
                "schedule": self.schedule,
                "epochs": epochs or self.epochs,
            }
        )


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
    """Settings every defence has; each defence's settings class (``robustops.defences``) extends it."""

    name: str = Field(description="a registered defence")
    label: Annotated[str, AfterValidator(names.label)] | None = Field(
        None, description="the model's name in MLflow (default: the defence's name); must be unique"
    )
    epochs: int | None = Field(None, ge=1, description="overrides train.epochs for this defence")
    regularize: RegularizeConfig | None = Field(None, description="overrides the top-level regularize")

    @property
    def run_name(self) -> str:
        return self.label or self.name


class DefenceBlock(DefenceConfig):
    """A defence block as a config file gives it, before its defence's own settings class checks
    it: the keys beyond the common ones are kept as they are, for that class to type and refuse.
    ``robustops.catalog.resolve`` turns every block of a config into its typed settings."""

    model_config = ConfigDict(extra="allow")
