"""The training loop every method shares (:func:`fit`: seeded, the best epoch and early stopping
on a validation metric), the model's construction, and baseline training."""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from robustops.config import ModelConfig, Optimizer, Schedule, TrainConfig
from robustops.data import Dataset
from robustops.errors import ConfigError
from robustops.inference import predict
from robustops.models import Blueprint, build_model
from robustops.stop import raise_if_stopped
from robustops.training.regularizers import LossFn, apply_spectral_norm


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(model(x), y)


@dataclass
class TrainResult:
    """A trained model and how it got there.

    Attributes:
        model: the weights of the selected epoch, in eval mode.
        history: one row per epoch (loss, train/val accuracy, val loss, lr, and the probe's metrics).
        best_epoch: the selected epoch (1-based).
        best_val_acc: clean validation accuracy of the selected epoch.
        stopped_early: training ended before ``epochs`` (patience or a stop rule).
        seconds: wall time of :func:`fit`; :func:`robustops.defences.train_defence` sets it to the
            whole defence's (a distillation teacher included).
        stop_reason: why a stop rule ended training (e.g. catastrophic overfitting), else None.
        extras: defence-specific numbers worth logging (e.g. the teacher's accuracy).
        blueprint: what rebuilds the model for a checkpoint (see ``robustops.training.checkpoint``).
    """

    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_acc: float = 0.0
    stopped_early: bool = False
    seconds: float = 0.0
    stop_reason: str | None = None
    extras: dict[str, float] = field(default_factory=dict)
    blueprint: Blueprint | None = None


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer is Optimizer.SGD:
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(
    opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """A per-batch learning-rate schedule over ``cfg.epochs`` (None: constant)."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule is Schedule.COSINE:
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    if cfg.schedule is Schedule.ONECYCLE:
        # Linear up to lr over the first 40 %, then down to zero: the cyclic schedule of Wong et
        # al.'s fast adversarial training.
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr, total_steps=total, pct_start=0.4, anneal_strategy="linear",
            cycle_momentum=False,
        )  # fmt: skip
    return None


def precision(cfg: TrainConfig, device: str) -> tuple[Callable[[], Any], torch.amp.GradScaler | None]:
    """The autocast context of a training step and, for fp16, the loss scaler (fp16 gradients
    underflow without one; bf16 has float32's range and needs none).

    Raises:
        ConfigError: fp16 on a device without CUDA.
    """
    kind = torch.device(device).type
    if cfg.mixed_precision == "none":
        return nullcontext, None
    if cfg.mixed_precision == "fp16" and kind != "cuda":
        raise ConfigError("train.mixed_precision fp16 needs a CUDA device; use bf16 on the CPU, or none")
    dtype = torch.float16 if cfg.mixed_precision == "fp16" else torch.bfloat16
    scaler = torch.amp.GradScaler(kind) if dtype is torch.float16 else None
    return (lambda: torch.autocast(device_type=kind, dtype=dtype)), scaler


# Extra per-epoch metrics of the model in eval mode (validation accuracy under attack or noise).
EpochProbe = Callable[[nn.Module], dict[str, float]]
StopRule = Callable[[list[dict[str, float]]], str | None]


def fit(
    model: nn.Module,
    train: Dataset,
    val: Dataset,
    cfg: TrainConfig,
    seed: int = 0,
    loss_fn: LossFn = cross_entropy,
    device: str = "cpu",
    desc: str = "train",
    probe: EpochProbe | None = None,
    select: str = "val_acc",
    stop: StopRule | None = None,
) -> TrainResult:
    """Trains ``model`` and returns it with the weights of its best epoch.

    Args:
        model: the network, trained in place.
        train, val: the training and validation splits.
        cfg: optimizer, schedule, batch size, epochs and patience.
        seed: seeds the batch order.
        loss_fn: the per-batch objective ``loss_fn(model, x, y)``; if it has a
            ``begin_epoch(epoch, epochs)`` method, that is called before each epoch (eps warm-up).
        device: torch device.
        desc: label of the progress bar.
        probe: extra per-epoch metrics of the model in eval mode, e.g. validation accuracy under
            attack; they join the history rows.
        select: the history metric (higher is better) that picks the best epoch and drives early
            stopping; ties go to the lower validation loss.
        stop: called with the history after each epoch; a returned reason ends training and
            restores the best epoch so far (FGSM-RS's catastrophic-overfitting stop uses it).
    """
    gen = torch.Generator().manual_seed(seed)
    model.to(device, memory_format=torch.channels_last if cfg.channels_last else torch.preserve_format)
    autocast, scaler = precision(cfg, device)
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg)
    x = torch.from_numpy(train.x)
    y = torch.from_numpy(train.y)
    sched = make_scheduler(opt, cfg, -(-len(y) // cfg.batch_size))
    result = TrainResult(model)
    best_state = copy.deepcopy(model.state_dict())
    best, stale = (-float("inf"), -float("inf")), 0
    start = time.perf_counter()
    # disable=None: tqdm shows the bar on a terminal and stays quiet in logs and CI.
    bar = tqdm(range(1, cfg.epochs + 1), desc=desc, unit="epoch", disable=None if cfg.progress else True)
    for epoch in bar:
        if hasattr(loss_fn, "begin_epoch"):
            loss_fn.begin_epoch(epoch, cfg.epochs)
        model.train()
        order = torch.randperm(len(y), generator=gen)
        total, seen = 0.0, 0
        for i in range(0, len(order), cfg.batch_size):
            raise_if_stopped()
            idx = order[i : i + cfg.batch_size]
            xb, yb = x[idx].to(device), y[idx].to(device)
            if cfg.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast():
                loss = loss_fn(model, xb, yb)
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            if sched is not None:
                sched.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        model.eval()
        train_acc = float((predict(model, train.x, device=device).argmax(1) == train.y).mean())
        logits = torch.from_numpy(predict(model, val.x, device=device))
        val_acc = float((logits.argmax(1).numpy() == val.y).mean())
        val_loss = float(nn.functional.cross_entropy(logits, torch.from_numpy(val.y)))
        row = {
            "epoch": epoch,
            "loss": total / seen,
            "train_acc": train_acc,
            "val_acc": val_acc,
            "val_loss": val_loss,
            "lr": opt.param_groups[0]["lr"],
        }
        if probe is not None:
            row |= probe(model)
            model.eval()
        result.history.append(row)
        bar.set_postfix(loss=f"{total / seen:.3f}", **{select: f"{row[select]:.3f}"})
        # A small validation split ties on accuracy often; the lower loss breaks the tie.
        if (row[select], -val_loss) > best:
            best, stale, result.best_epoch = (row[select], -val_loss), 0, epoch
            result.best_val_acc = val_acc
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
        reason = stop(result.history) if stop is not None else None
        if reason:
            result.stop_reason = reason
            result.stopped_early = True
            break
        if stale >= cfg.patience:
            result.stopped_early = epoch < cfg.epochs
            break
    bar.close()
    opt.zero_grad(set_to_none=True)  # free the gradient buffers: the model is done training
    model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - start
    return result


def build(
    train: Dataset, model_cfg: ModelConfig, seed: int, spectral_norm: bool = False
) -> tuple[nn.Module, Blueprint]:
    """The configured model behind a :class:`Normalize` layer with the training split's statistics
    (the identity without ``model.normalize``), seeded, and the blueprint that rebuilds it (see :mod:`robustops.training.checkpoint`)."""
    seed_everything(seed)
    dims = (0, 2, 3)
    c = train.shape[0]
    # Without normalize the layer stays, as the identity: every built-in model has the same layout.
    mean = torch.from_numpy(train.x.mean(axis=dims)) if model_cfg.normalize else torch.zeros(c)
    std = torch.from_numpy(train.x.std(axis=dims)) if model_cfg.normalize else torch.ones(c)
    blueprint = Blueprint(
        name=model_cfg.name,
        shape=train.shape,
        classes=list(train.classes),
        width=model_cfg.width,
        hidden=model_cfg.hidden,
        dropout=model_cfg.dropout,
        spectral_norm=spectral_norm,
    )
    return from_blueprint(blueprint, mean, std), blueprint


def from_blueprint(
    blueprint: Blueprint, mean: torch.Tensor | None = None, std: torch.Tensor | None = None
) -> nn.Module:
    """Builds the architecture a blueprint describes (untrained; a checkpoint supplies the weights)."""
    b = blueprint
    model = build_model(
        b.name, b.shape, b.num_classes, mean, std, width=b.width, hidden=b.hidden, dropout=b.dropout
    )
    return apply_spectral_norm(model) if b.spectral_norm else model


def train_baseline(
    train: Dataset,
    val: Dataset,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    seed: int,
    device: str = "cpu",
    loss_fn: LossFn = cross_entropy,
) -> TrainResult:
    """Builds the configured model (normalized with training statistics) and trains it.

    ``loss_fn`` carries the augmentation policy (see :mod:`robustops.training.augment`).
    """
    model, blueprint = build(train, model_cfg, seed)
    result = fit(
        model,
        train,
        val,
        train_cfg,
        seed=seed,
        loss_fn=loss_fn,
        device=device,
        desc=f"train {model_cfg.name}",
    )
    result.blueprint = blueprint
    return result


def resolve_device(name: str) -> str:
    """'auto' picks CUDA when present; CPU is the deterministic default."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device is 'cuda' but no CUDA device is available; set device: cpu or auto")
    return name
