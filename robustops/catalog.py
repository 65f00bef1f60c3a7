"""The composition root: every plug-in kind in one place, and the one place a config's names are
resolved.

The config package checks shapes and ranges without knowing any plug-in; :func:`resolve` then
checks every name a config uses against its registry (model, generator, corruptions,
specification checks, the gate's checks, defences) and types each defence block with its
defence's own settings class. The app and the flows import this module; the plug-ins never do.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torch import nn

from robustops import config
from robustops.config import Config, DefenceConfig, ModelConfig
from robustops.corruptions import CORRUPTIONS
from robustops.data.synthesis import GENERATORS
from robustops.defences import DEFENCES, settings_from, settings_of
from robustops.defences.standard import StandardConfig
from robustops.errors import ConfigError, ModelSourceError
from robustops.evaluation import metric_names
from robustops.evaluation.specification import SPEC_CHECKS
from robustops.models import MODELS
from robustops.registry import Registry
from robustops.sources import SOURCES, kind_of

BASELINE = StandardConfig(label="baseline")


def _unknown(key: str, name: str, registry: Registry[Any]) -> str:
    near = difflib.get_close_matches(name, registry.names(), n=1)
    hint = f"; did you mean {near[0]}?" if near else ""
    return f"{key}: unknown {registry.kind} {name!r}; known: {', '.join(registry.names())}{hint}"


def _names(key: str, names: Iterable[str], registry: Registry[Any]) -> list[str]:
    return [_unknown(key, n, registry) for n in names if n not in registry]


def defence_settings(block: DefenceConfig | dict[str, Any] | str, where: str = "defence") -> DefenceConfig:
    """A defence block as its defence's own typed settings (see :func:`robustops.defences.settings_from`)."""
    return settings_from(block, where)


def resolve(cfg: Config, source: str = "config") -> Config:
    """``cfg`` with every plug-in name checked and every defence typed.

    Raises:
        ConfigError: every unknown name or bad defence setting, with its key and the known names.
    """
    problems = _names("model.name", [cfg.model.name], MODELS)
    if cfg.model.source is not None:
        try:
            kind_of(cfg.model.source)  # its form only: files are opened where the model is used
        except ModelSourceError as e:
            problems.append(str(e))
    problems += _names("synthesis.generator", [cfg.synthesis.generator], GENERATORS)
    problems += _names("augment.corruptions", cfg.augment.corruptions, CORRUPTIONS)
    problems += _names("evaluation.corruptions", cfg.evaluation.corruptions, CORRUPTIONS)
    spec = cfg.evaluation.specification
    problems += _names("evaluation.specification.checks", spec.checks, SPEC_CHECKS)
    inv = [item.partition(":")[0] for item in spec.invariances]
    problems += _names("evaluation.specification.invariances", inv, CORRUPTIONS)
    # A typo here would silently drop a check that should block promotion.
    for check in cfg.gate.spec_checks:
        if check not in SPEC_CHECKS:
            near = difflib.get_close_matches(check, SPEC_CHECKS.names(), n=1)
            hint = f"did you mean {near[0]}? " if near else ""
            problems.append(
                f"gate.spec_checks: {check!r} is not a specification check ({hint}the checks: "
                f"{', '.join(SPEC_CHECKS.names())})"
            )
    typed = []
    for i, block in enumerate(cfg.defences):
        try:
            typed.append(defence_settings(block, f"defences.{i}"))
        except ConfigError as e:
            problems.append(str(e))
            continue
        student = getattr(typed[-1], "student", None)
        if student is not None:
            problems += _names(f"defences.{i}.student.name", [student.name], MODELS)
    if problems:
        raise ConfigError(f"invalid {source}: " + "; ".join(problems))
    return cfg.model_copy(update={"defences": typed})


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Loads a YAML config (defaults when ``path`` is None), applies ``--set`` overrides, and
    resolves every name in it."""
    return resolve(config.load_config(path, overrides), str(path) if path else "config")


def build_config(tree: dict[str, Any], source: str = "config") -> Config:
    return resolve(config.build_config(tree, source), source)


def check_trainable(cfg: Config) -> None:
    """Refuses, before any data is read, a pipeline run whose model settings cannot train: a
    user's model that cannot be fine-tuned (an exported program keeps the layer modes it was
    exported with), one on Dask workers (they cannot import a user's file), a distillation
    student beside it (every defence fine-tunes the user's model), or source settings without
    a source."""
    m = cfg.model
    if m.source is None:
        unused = [k for k in ("weights", "weights_key", "classes") if getattr(m, k) is not None]
        defaults = {
            k: ModelConfig.model_fields[k].get_default(call_default_factory=True)
            for k in ("kwargs", "preprocess")
        }
        unused += [k for k, v in defaults.items() if getattr(m, k) != v]
        if unused:
            raise ConfigError(
                f"model.{', model.'.join(unused)} apply to a model source (model.source), and none is set: "
                "set model.source, or remove them to train the built-in model.name"
            )
        return
    kind = SOURCES.get(kind_of(m.source))
    if not kind.trainable:
        raise ConfigError(
            f"model.source {m.source}: {kind.describe} cannot be fine-tuned; give the factory "
            "and weights, TorchScript, or an MLflow PyTorch model (robustops evaluate scores it as it is)"
        )
    if cfg.runner.kind != "threads":
        raise ConfigError(
            "model.source: fine-tuning a model you bring runs on the threads runner (Dask workers cannot "
            "import your model's code); set runner.kind: threads"
        )
    students = [d.run_name for d in models_of(cfg) if getattr(d, "student", None) is not None]
    if students:
        raise ConfigError(
            f"defences {', '.join(students)}: a distillation student is a copy of your model when "
            "model.source is set; remove student"
        )


def models_of(cfg: Config) -> list[DefenceConfig]:
    """The baseline (plain training under the augmentation policy) and every configured defence,
    typed."""
    return [BASELINE, *(settings_of(d) for d in cfg.defences)]


def _extra_parts(cfg: Config) -> list[dict[str, Any]]:
    """Each configured defence's own scorecard parts, once per defence, at their dry-run cost."""
    out, seen = [], set()
    for d in models_of(cfg):
        defence = DEFENCES.get(d.name)
        if d.name not in seen:
            seen.add(d.name)
            parts = defence.scorecard_parts(defence.quick(d))
            out += [parts] if parts else []
    return out


def _reports_base(cfg: Config) -> bool:
    """Whether a defence of the run serves random answers around a deterministic base (smoothing),
    so its model logs the base network's ``base/adv/...`` figures beside its own."""
    for d in models_of(cfg):
        found = DEFENCES.get(d.name).randomized(nn.Identity(), settings_of(d), 2, 1, 0)
        if found is not None and found.base is not None:
            return True
    return False


def produced_metrics(
    cfg: Config, shape: tuple[int, int, int], classes: list[str], shift: bool = False, ood: bool = False
) -> frozenset[str]:
    """Every metric name some model of a run of ``cfg`` logs (see
    :func:`robustops.evaluation.metric_names.produced_metrics`), its defences' own parts included."""
    return metric_names.produced_metrics(
        cfg, shape, classes, shift, ood, _extra_parts(cfg), _reports_base(cfg)
    )


def check_gate(
    cfg: Config, shape: tuple[int, int, int], classes: list[str], shift: bool = False, ood: bool = False
) -> None:
    """Refuses a gate that names a metric no model of this run will log (see
    :func:`robustops.evaluation.metric_names.check_gate`), with every defence's own parts."""
    producers = [(DEFENCES.get(n).metric_prefixes, f"a {n} defence in defences") for n in DEFENCES]
    producers = [p for p in producers if p[0]]
    metric_names.check_gate(cfg, shape, classes, shift, ood, _extra_parts(cfg), producers, _reports_base(cfg))
