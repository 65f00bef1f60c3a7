"""Pydantic models of the YAML configs: the one place that holds defaults.

Every model forbids unknown keys, so a typo such as ``train.epoch`` is an error that names the
key instead of a silently ignored setting. The package is a leaf: it imports pydantic, yaml and
the shared rules (``robustops.errors``, ``names``, ``redact``), never torch and never a plug-in.
Names of plug-ins (models, corruptions, checks, defences) are checked, and defence blocks typed,
by ``robustops.catalog``, which knows them all.
"""

from robustops.config.base import AugmentPolicy, DataSource, MetricName, Optimizer, Schedule, Strict, radii
from robustops.config.data import (
    TRAIN_CORRUPTIONS,
    AdversarialSetConfig,
    AugmentConfig,
    DataConfig,
    LimitsConfig,
    ShiftDataConfig,
    SynthesisConfig,
)
from robustops.config.evaluation import (
    EVAL_CORRUPTIONS,
    SPEC_CHECK_NAMES,
    AutoAttackConfig,
    CorruptionBenchmarkConfig,
    EvalConfig,
    MaskingConfig,
    NoiseConfig,
    SpecificationConfig,
)
from robustops.config.loading import build_config, flatten, load_config, parse_overrides, read_yaml, to_yaml
from robustops.config.messages import format_errors
from robustops.config.operations import GateConfig, MlflowConfig, MonitorConfig, RetrainConfig, RunnerConfig
from robustops.config.root import DEFAULT_DEFENCES, Config, defence_block, with_batch, with_source
from robustops.config.training import (
    DefenceBlock,
    DefenceConfig,
    FinetuneConfig,
    ModelConfig,
    PreprocessConfig,
    RegularizeConfig,
    TrainConfig,
    is_factory,
)

__all__ = [
    "DEFAULT_DEFENCES",
    "EVAL_CORRUPTIONS",
    "CorruptionBenchmarkConfig",
    "SPEC_CHECK_NAMES",
    "TRAIN_CORRUPTIONS",
    "AdversarialSetConfig",
    "AugmentConfig",
    "AugmentPolicy",
    "AutoAttackConfig",
    "Config",
    "DataConfig",
    "DataSource",
    "DefenceBlock",
    "DefenceConfig",
    "EvalConfig",
    "FinetuneConfig",
    "GateConfig",
    "LimitsConfig",
    "MaskingConfig",
    "MetricName",
    "MlflowConfig",
    "ModelConfig",
    "PreprocessConfig",
    "MonitorConfig",
    "NoiseConfig",
    "Optimizer",
    "RegularizeConfig",
    "RetrainConfig",
    "RunnerConfig",
    "Schedule",
    "ShiftDataConfig",
    "SpecificationConfig",
    "Strict",
    "SynthesisConfig",
    "TrainConfig",
    "build_config",
    "defence_block",
    "flatten",
    "format_errors",
    "is_factory",
    "load_config",
    "parse_overrides",
    "radii",
    "read_yaml",
    "to_yaml",
    "with_batch",
    "with_source",
]
