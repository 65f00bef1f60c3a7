"""The training sections: the architecture, the optimiser, regularizers, and what every defence has."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field

from robustops import names
from robustops.config.base import Optimizer, Schedule, Strict


class ModelConfig(Strict):
    name: str = Field("cnn", description="a registered model: see robustops.models.MODELS")
    width: int = Field(32, ge=4, le=1024, description="channels of the first conv layer")
    hidden: int = Field(128, ge=8, le=8192, description="units of the hidden dense layers")
    dropout: float = Field(0.25, ge=0, lt=1)


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
