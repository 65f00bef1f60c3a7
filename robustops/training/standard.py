"""Baseline training: seeded, deterministic on CPU, early stopping on validation accuracy."""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from robustops.config import ModelConfig, Optimizer, Schedule, TrainConfig
from robustops.data import Dataset
from robustops.evaluation.metrics import predict
from robustops.models import build_model

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(model(x), y)


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_acc: float = 0.0
    stopped_early: bool = False
    seconds: float = 0.0


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


def fit(
    model: nn.Module,
    train: Dataset,
    val: Dataset,
    cfg: TrainConfig,
    seed: int = 0,
    loss_fn: LossFn = cross_entropy,
    device: str = "cpu",
    desc: str = "train",
) -> TrainResult:
    """Trains ``model`` and returns it with the weights of its best validation epoch.

    ``loss_fn(model, x, y)`` is the per-batch objective, so adversarial training methods reuse
    this loop and its early stopping.
    """
    gen = torch.Generator().manual_seed(seed)
    model.to(device)
    opt = make_optimizer(model.parameters(), cfg)
    x = torch.from_numpy(train.x)
    y = torch.from_numpy(train.y)
    sched = make_scheduler(opt, cfg, -(-len(y) // cfg.batch_size))
    result = TrainResult(model)
    best_state = copy.deepcopy(model.state_dict())
    best_acc, best_loss, stale = -1.0, float("inf"), 0
    start = time.perf_counter()
    # disable=None: tqdm shows the bar on a terminal and stays quiet in logs and CI.
    bar = tqdm(range(1, cfg.epochs + 1), desc=desc, unit="epoch", disable=None if cfg.progress else True)
    for epoch in bar:
        model.train()
        order = torch.randperm(len(y), generator=gen)
        total, seen = 0.0, 0
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            xb, yb = x[idx].to(device), y[idx].to(device)
            loss = loss_fn(model, xb, yb)
            opt.zero_grad(set_to_none=True)
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
        result.history.append(
            {
                "epoch": epoch,
                "loss": total / seen,
                "train_acc": train_acc,
                "val_acc": val_acc,
                "val_loss": val_loss,
                "lr": opt.param_groups[0]["lr"],
            }
        )
        bar.set_postfix(loss=f"{total / seen:.3f}", val_acc=f"{val_acc:.3f}")
        # A small validation split ties on accuracy often; the lower loss breaks the tie.
        if (val_acc, -val_loss) > (best_acc, -best_loss):
            best_acc, best_loss, stale, result.best_epoch = val_acc, val_loss, 0, epoch
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= cfg.patience:
                result.stopped_early = epoch < cfg.epochs
                break
    bar.close()
    opt.zero_grad(set_to_none=True)  # free the gradient buffers: the model is done training
    model.load_state_dict(best_state)
    model.eval()
    result.best_val_acc = best_acc
    result.seconds = time.perf_counter() - start
    return result


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
    seed_everything(seed)
    dims = (0, 2, 3)
    mean = torch.from_numpy(train.x.mean(axis=dims))
    std = torch.from_numpy(train.x.std(axis=dims))
    model = build_model(
        model_cfg.name,
        train.shape,
        train.num_classes,
        mean,
        std,
        width=model_cfg.width,
        hidden=model_cfg.hidden,
        dropout=model_cfg.dropout,
    )
    return fit(
        model,
        train,
        val,
        train_cfg,
        seed=seed,
        loss_fn=loss_fn,
        device=device,
        desc=f"train {model_cfg.name}",
    )


def resolve_device(name: str) -> str:
    """'auto' picks CUDA when present; CPU is the deterministic default."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        from robustops.errors import ConfigError

        raise ConfigError("device is 'cuda' but no CUDA device is available; set device: cpu or auto")
    return name
