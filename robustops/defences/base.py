"""What a defence is: its settings class, its trainer, and its hooks into scoring and serving.

Each defence lives in one file of this package: a :class:`Defence` subclass registered with
:func:`register`, next to its settings class (a :class:`~robustops.config.DefenceConfig`)::

    class MySettings(DefenceConfig):
        name: Literal["mine"] = "mine"
        strength: float = 1.0

    @register
    class Mine(Defence):
        name, settings = "mine", MySettings

        def train(self, train, val, ctx, cfg): ...

Importing the file (one line in ``robustops/defences/__init__.py``) makes the defence trainable
(``defences: [mine]``), scored (its :meth:`~Defence.scorecard_parts`) and served (its
:meth:`~Defence.serving` and :meth:`~Defence.answer`).
"""

from __future__ import annotations

import difflib
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import ValidationError
from torch import nn

from robustops.attacks.eot import EoT, Randomized, one_draw
from robustops.config import (
    AugmentConfig,
    DefenceConfig,
    EvalConfig,
    FinetuneConfig,
    ModelConfig,
    RegularizeConfig,
    TrainConfig,
    defence_block,
    format_errors,
)
from robustops.data import Dataset, Split
from robustops.errors import ConfigError
from robustops.evaluation.scorecard import ScoreInputs, ScorePart
from robustops.models import Blueprint
from robustops.registry import Registry
from robustops.sources import SourceModel, tunable_copy
from robustops.training.regularizers import apply_spectral_norm, with_grad_penalty
from robustops.training.standard import LossFn, TrainResult, build, fit, seed_everything


@dataclass(frozen=True)
class Context:
    """What every defence trains with: the shared model, training and augmentation settings."""

    model: ModelConfig
    train: TrainConfig
    augment: AugmentConfig
    regularize: RegularizeConfig
    seed: int = 0
    device: str = "cpu"
    # A user's model (``model.source``), prepared (robustops.sources.prepare): every defence
    # fine-tunes a copy of it under ``finetune`` instead of building ``model``, and the baseline
    # is the model itself.
    start: SourceModel | None = None
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    start_blueprint: Blueprint | None = None


class Defence:
    """One defence. Subclasses set ``name`` and ``settings`` and implement :meth:`train`; the
    other hooks default to a plain model, scored and served like the baseline."""

    name: ClassVar[str]
    settings: ClassVar[type[DefenceConfig]]
    # Metric prefixes only this defence's scorecard parts log, for the gate's error messages.
    metric_prefixes: ClassVar[tuple[str, ...]] = ()
    # The served model's reason when :meth:`answer` abstains.
    undecided: ClassVar[str] = "the defence cannot decide"

    def train(self, train: Dataset, val: Dataset, ctx: Context, cfg: DefenceConfig) -> TrainResult:
        raise NotImplementedError

    def scorecard_parts(self, cfg: DefenceConfig) -> dict[str, ScorePart]:
        """Parts the scorecard adds for this defence, by name (after the common parts)."""
        return {}

    def randomized(
        self, model: nn.Module, cfg: DefenceConfig, num_classes: int, draws: int, seed: int
    ) -> Randomized | None:
        """For a defence whose served answers are random: how its attacks run (an EoT of
        ``draws`` draws) and the served prediction that judges them; None: the network's own
        prediction, deterministic, is what is served and attacked."""
        return None

    def quick(self, cfg: DefenceConfig) -> DefenceConfig:
        """Settings that cost less but name the same metrics (the gate's dry run of the scorecard)."""
        return cfg

    def serving(self, cfg: DefenceConfig) -> dict[str, Any] | None:
        """What the served model needs to answer as this defence does (saved with the guard's
        settings); None: the served model answers with the network's own prediction."""
        return None

    def answer(
        self, model: nn.Module, x: np.ndarray, settings: dict[str, Any], num_classes: int, seed: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The served prediction of each image (-1: abstain) and its confidence, for a defence
        whose :meth:`serving` returned ``settings``."""
        raise NotImplementedError(f"defence {self.name!r} has serving settings but no answer()")


DEFENCES: Registry[Defence] = Registry("defence")


def register(cls: type[Defence]) -> type[Defence]:
    """Registers one instance of ``cls`` under ``cls.name``."""
    DEFENCES.register(cls.name)(cls())
    return cls


def settings_of(cfg: DefenceConfig) -> DefenceConfig:
    """``cfg`` as its defence's own settings class (a block from a config file is typed here)."""
    cls = DEFENCES.get(cfg.name).settings
    return cfg if isinstance(cfg, cls) else cls.model_validate(cfg.model_dump())


def settings_from(block: DefenceConfig | dict[str, Any] | str, where: str = "defence") -> DefenceConfig:
    """A defence block (a name, a dict, or settings) as its defence's own typed settings.

    Raises:
        ConfigError: the defence is unknown or a setting is wrong, named with ``where``.
    """
    try:
        block = defence_block(block)
    except (ValidationError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None
    if block.name not in DEFENCES:
        near = difflib.get_close_matches(block.name, DEFENCES.names(), n=1)
        hint = f"; did you mean {near[0]}?" if near else ""
        known = ", ".join(DEFENCES.names())
        raise ConfigError(f"{where}: unknown defence {block.name!r}; known: {known}{hint}")
    try:
        return settings_of(block)
    except ValidationError as e:
        raise ConfigError(f"{where}: {format_errors(e, DEFENCES.get(block.name).settings)}") from None


def scorecard_parts(cfg: DefenceConfig | None) -> dict[str, ScorePart]:
    """The scorecard parts of the defence ``cfg`` names (none for None)."""
    return {} if cfg is None else DEFENCES.get(cfg.name).scorecard_parts(settings_of(cfg))


def score_inputs(
    model: nn.Module | TrainResult,
    split: Split,
    cfg: EvalConfig,
    seed: int,
    device: str,
    defence: DefenceConfig | None = None,
    shift: Dataset | None = None,
    ood: np.ndarray | None = None,
) -> ScoreInputs:
    """The inputs of one model's scorecard: the test split scored, thresholds chosen on
    validation, class counts (and Mahalanobis means) from training when the split has one, and
    the own parts of the model's ``defence``."""
    net = model.model if isinstance(model, TrainResult) else model
    return ScoreInputs(
        net,
        split.test,
        cfg,
        seed,
        device,
        val=split.val,
        train=split.train if len(split.train.y) else None,
        shift=shift,
        ood_x=ood,
        extra=scorecard_parts(defence),
        randomized=randomized_of(net, defence, split.test.num_classes, cfg.eot_draws, seed),
    )


def randomized_of(
    model: nn.Module, defence: DefenceConfig | None, num_classes: int, draws: int, seed: int
) -> Randomized | None:
    """How ``model`` is attacked and judged when what it serves is random: its defence's way
    (:meth:`Defence.randomized`, e.g. smoothing), or for a user's model whose eval output was
    found random (``robustops_random``, see ``adapters.sources``) an EoT of the model judged by
    one draw; None for a deterministic model."""
    if defence is not None:
        found = DEFENCES.get(defence.name).randomized(model, settings_of(defence), num_classes, draws, seed)
        if found is not None:
            return found
    if getattr(model, "robustops_random", False):
        return Randomized(EoT(model, draws), one_draw(model), draws)
    return None


def recorded_defence(blueprint: Blueprint, tag: str | None, uri: str) -> DefenceConfig:
    """The defence settings a checkpoint's blueprint records. A checkpoint from before blueprints
    recorded them gets the defaults of the defence its run's tag names, with a warning."""
    if blueprint.defence is not None:
        return settings_from(blueprint.defence, f"{uri}: the checkpoint's defence")
    warnings.warn(
        f"{uri}: its checkpoint does not record its defence's settings (it predates that); scored "
        f"with the defaults of {tag or 'standard'}: retrain it to score it with its own",
        stacklevel=2,
    )
    return settings_from(tag or "standard", f"{uri}: the run's defence")


def epochs_and_regularizers(ctx: Context, cfg: DefenceConfig) -> tuple[TrainConfig, RegularizeConfig]:
    """The training settings with the defence's own epochs and regularizers, where it sets them."""
    train = ctx.train if cfg.epochs is None else ctx.train.model_copy(update={"epochs": cfg.epochs})
    return train, cfg.regularize or ctx.regularize


def fine_tuned_copy(ctx: Context, spectral_norm: bool = False) -> tuple[SourceModel, Blueprint]:
    """A copy of the user's model to fine-tune (see :func:`robustops.sources.tunable_copy`),
    seeded like a built model so its training does not depend on what ran before; and its blueprint."""
    assert ctx.start is not None and ctx.start_blueprint is not None
    seed_everything(ctx.seed)
    model = tunable_copy(ctx.start, ctx.finetune, spectral_norm)
    return (apply_spectral_norm(model) if spectral_norm else model), ctx.start_blueprint


def build_and_fit(
    train: Dataset,
    val: Dataset,
    ctx: Context,
    cfg: DefenceConfig,
    loss_fn: LossFn,
    model_cfg: ModelConfig | None = None,
    **kw: Any,
) -> TrainResult:
    """Builds the model (spectral-normalized if asked), adds the gradient penalty, trains."""
    tcfg, reg = epochs_and_regularizers(ctx, cfg)
    if ctx.start is not None:
        model, blueprint = fine_tuned_copy(ctx, reg.spectral_norm)
        tcfg = ctx.finetune.applied_to(ctx.train, cfg.epochs)
    else:
        model, blueprint = build(train, model_cfg or ctx.model, ctx.seed, reg.spectral_norm)
    loss_fn = with_grad_penalty(loss_fn, reg.grad_penalty)
    result = fit(model, train, val, tcfg, ctx.seed, loss_fn, ctx.device, desc=f"train {cfg.run_name}", **kw)
    result.blueprint = blueprint
    return result


def train_defence(train: Dataset, val: Dataset, ctx: Context, cfg: DefenceConfig) -> TrainResult:
    """Trains the defence ``cfg`` names. The result's ``seconds`` cover the whole defence, and its
    blueprint records the defence's settings, so the model can be rebuilt and scored as it was."""
    cfg = settings_of(cfg)
    start = time.perf_counter()
    result = DEFENCES.get(cfg.name).train(train, val, ctx, cfg)
    result.seconds = time.perf_counter() - start
    result.blueprint = result.blueprint.model_copy(update={"defence": cfg.model_dump(mode="json")})
    return result
