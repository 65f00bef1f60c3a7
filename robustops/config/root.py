"""The whole config: every section, and the checks that span sections."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, SerializeAsAny, ValidationError, WithJsonSchema, field_validator, model_validator

from robustops.config.base import AugmentPolicy, Strict
from robustops.config.data import (
    AdversarialSetConfig,
    AugmentConfig,
    DataConfig,
    LimitsConfig,
    SynthesisConfig,
)
from robustops.config.evaluation import EvalConfig
from robustops.config.messages import format_errors
from robustops.config.operations import GateConfig, MlflowConfig, MonitorConfig, RetrainConfig, RunnerConfig
from robustops.config.training import (
    DefenceBlock,
    DefenceConfig,
    FinetuneConfig,
    ModelConfig,
    RegularizeConfig,
    TrainConfig,
)
from robustops.errors import ConfigError

# The defences a config without a ``defences`` key trains beside the baseline.
DEFAULT_DEFENCES = ["pgd_at", "fgsm_rs", "trades", "distillation", "smoothing"]


def defence_block(item: Any) -> DefenceConfig:
    """A list entry as a block: a name is shorthand for the defence's defaults. Settings already
    typed by their defence pass as they are."""
    if isinstance(item, DefenceConfig):
        return item
    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, dict) or "name" not in item:
        raise ValueError(f"each defence is a name or a block with a 'name' key, got {item!r}")
    return DefenceBlock.model_validate(item)


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
    finetune: FinetuneConfig = FinetuneConfig()
    # The schema says "objects with a name": each defence's own class types its block (see
    # robustops.catalog.resolve), so a schema of the base class would wrongly refuse their
    # settings (Prefect checks deployment parameters against it).
    defences: Annotated[
        list[SerializeAsAny[DefenceConfig]],
        WithJsonSchema({"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "object"}]}}),
    ] = Field(
        default_factory=lambda: [defence_block(name) for name in DEFAULT_DEFENCES],
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
                out.append(defence_block(item))
            except ValidationError as e:
                raise ValueError(f"defences.{i}: {format_errors(e, DefenceBlock)}") from None
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


def with_batch(cfg: Config, batch: str | None) -> Config:
    """The config with the labelled data of a drifted batch appended to ``data.extra_train``."""
    if not batch:
        return cfg
    r = cfg.retrain
    if r.labels == "store":
        if r.label_store is None:
            raise ConfigError(
                "retrain.labels is 'store' but retrain.label_store is not set; point it at labelled images"
            )
        extra = r.label_store
    else:
        extra = batch
    data = cfg.data.model_copy(update={"extra_train": [*cfg.data.extra_train, extra]})
    return cfg.model_copy(update={"data": data})


def with_source(cfg: Config, source: str | None) -> Config:
    """The config with ``model.source`` set to ``source`` (the command line's ``--model``); None
    keeps the configured one, which must then be set."""
    if source is None:
        if cfg.model.source is None:
            raise ConfigError(
                "no model to score: give --model (a file, a factory or an MLflow URI) or set model.source"
            )
        return cfg
    try:
        model = ModelConfig.model_validate(cfg.model.model_dump() | {"source": source})
    except ValidationError as e:
        raise ConfigError(f"--model {source}: {format_errors(e, ModelConfig)}") from None
    return cfg.model_copy(update={"model": model})
