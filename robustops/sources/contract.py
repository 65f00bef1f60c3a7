"""The contract between a user's network and robustops, checked on real images before anything
is scored: what it outputs, which class each output is, whether its eval-mode output is random,
and whether the declared preprocessing looks right.

robustops scores logits of shape (N, K), one column per class of the data, from images in [0, 1].
:func:`prepare` puts the declared preprocessing in front of the network, checks the output on a
probe batch, names the class of each output, turns probabilities into log-probabilities
(the attacks' losses need logits), and reports what it found.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from robustops.config import ModelConfig, PreprocessConfig
from robustops.errors import ModelSourceError, ModelWarning
from robustops.sources.preprocess import Preprocess

PROBE = 64  # images the contract is checked on (and the preprocessing sanity check scores)
TOLERANCE = 1e-3  # how far a row of probabilities may sum from 1
# The declared preprocessing looks wrong when the plain [0, 1] input scores this much better...
BETTER_BY = 0.15
# ...or when preprocessed pixels have a per-channel mean or std this far from a standardized input.
MEAN_FAR, STD_RANGE = 2.0, (0.25, 4.0)
CHANCE_BY = 1.5  # probe accuracy at most this many times chance: the class map is the likely cause


class LogOf(nn.Module):
    """log(p) of a network that outputs probabilities: the log-probabilities are logits for every
    loss and attack (softmax gives back p), where the probabilities themselves are not."""

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        return torch.log(p.clamp_min(1e-12))


NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def is_norm(module: nn.Module) -> bool:
    """A batch-norm layer, also inside a TorchScript network (whose layers keep only their name)."""
    return isinstance(module, NORMS) or getattr(module, "original_name", None) in {n.__name__ for n in NORMS}


class SourceModel(nn.Sequential):
    """A user's network as robustops runs it: ``[Preprocess, network]``, and ``LogOf`` last for a
    network that outputs probabilities. ``frozen_norm``: batch-norm layers stay in eval mode while
    the rest trains (fine-tuning keeps the statistics the user's model was trained with)."""

    frozen_norm: bool = False

    @property
    def network(self) -> nn.Module:
        return self[1]

    def train(self, mode: bool = True) -> SourceModel:
        super().train(mode)
        if mode and self.frozen_norm:
            for m in self.modules():
                if is_norm(m):
                    m.eval()
        return self


def assemble(net: nn.Module, cfg: ModelConfig, channels: int, outputs: str = "logits") -> SourceModel:
    """The model robustops scores and trains: the declared preprocessing, the network, and the
    logarithm of probabilities when the network outputs them (``outputs``, as :func:`prepare`
    found)."""
    layers = [preprocess_of(cfg, channels), net]
    return SourceModel(*layers, LogOf()) if outputs == "probabilities" else SourceModel(*layers)


@dataclass
class SourceReport:
    """What :func:`prepare` found: the outputs' kind (``logits``, ``probabilities`` or
    ``log_probabilities``), the network's output count, whether its eval output is random, and
    warnings in words."""

    outputs: str
    n_outputs: int
    random: bool
    classes: list[str]
    warnings: list[str] = field(default_factory=list)

    def as_tags(self) -> dict[str, str]:
        return {
            "source.outputs": self.outputs,
            "source.n_outputs": str(self.n_outputs),
            "source.random": str(self.random).lower(),
        }


def preprocess_of(cfg: ModelConfig, channels: int) -> Preprocess:
    p = cfg.preprocess
    return Preprocess(channels, p.scale, p.mean, p.std, p.channel_order, p.size)


def _forward(net: nn.Module, x: torch.Tensor, what: str) -> torch.Tensor:
    try:
        with torch.no_grad():
            out = net(x)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ModelSourceError(
            f"the model fails on {what} of shape {tuple(x.shape)} ({type(e).__name__}: {first}); check "
            "that the data's channels and model.preprocess.size fit what the model expects"
        ) from e
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        raise ModelSourceError(
            f"the model returns a {type(out).__name__} of {len(out)} tensors, not one (N, K) tensor of "
            "logits; wrap it so forward returns the class logits only"
        )
    if not isinstance(out, torch.Tensor):
        raise ModelSourceError(f"the model returns a {type(out).__name__}, not a tensor of logits (N, K)")
    return out


def _kind(out: torch.Tensor) -> str:
    """``probabilities`` when every row is non-negative and sums to 1, ``log_probabilities`` when
    every row's exponentials do, else ``logits``."""
    if out.shape[1] < 2:
        return "logits"
    if bool((out >= 0).all()) and bool(((out.sum(1) - 1).abs() < TOLERANCE).all()):
        return "probabilities"
    if bool((out <= 0).all()) and bool(((out.exp().sum(1) - 1).abs() < TOLERANCE).all()):
        return "log_probabilities"
    return "logits"


def output_classes(cfg: ModelConfig, k: int, classes: list[str]) -> list[str]:
    """The class name of each of the model's ``k`` outputs: ``model.classes``; else ``0..k-1``
    when the data's class names are output indices (an .npz labelled with integers, folders named
    0..9: matched by number, not by the folders' text order, where "10" sorts before "2"); else the
    data's classes, in their order, when there are ``k`` of them. Every output stays scored: an
    image predicted as a class the data lacks counts as wrong, as it would in production.

    Raises:
        ModelSourceError: the map's length is not ``k``, or a class of the data has no output.
    """
    if cfg.classes is not None:
        if len(cfg.classes) != k:
            raise ModelSourceError(
                f"model.classes names {len(cfg.classes)} classes but the model gives {k} outputs"
            )
        names = list(cfg.classes)
    elif all(c.isdigit() and str(int(c)) == c and int(c) < k for c in classes):
        names = [str(i) for i in range(k)]
    elif k == len(classes):
        names = list(classes)
    else:
        raise ModelSourceError(
            f"the model gives {k} outputs but the data has {len(classes)} classes "
            f"({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''}); set model.classes to the "
            "class name of each output (the data's classes must be among them)"
        )
    missing = [c for c in classes if c not in names]
    if missing:
        raise ModelSourceError(
            f"the data's class(es) {', '.join(missing[:5])} are not among the model's outputs "
            f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}): set model.classes to name each output"
        )
    return names


def _accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> float | None:
    if y is None:
        return None
    with torch.no_grad():
        return float((net(x).argmax(1) == y).float().mean())


def _sanity(cfg: ModelConfig, pre: Preprocess, x: torch.Tensor) -> list[str]:
    """Warnings when the preprocessed probe images are far from standardized (a missing scale,
    mean or std is the usual cause of wrong robustness numbers)."""
    p = cfg.preprocess
    if p.std is None:
        return []  # no standardization declared (the identity, or raw 0-255 input): checked by accuracy
    with torch.no_grad():
        z = pre(x)
    mean = z.mean(dim=(0, 2, 3))
    std = z.std(dim=(0, 2, 3))
    far = [
        f"channel {c}: mean {m:.2f}, std {s:.2f}"
        for c, (m, s) in enumerate(zip(mean.tolist(), std.tolist(), strict=True))
        if abs(m) > MEAN_FAR or not STD_RANGE[0] <= s <= STD_RANGE[1]
    ]
    if not far:
        return []
    return [
        "the declared preprocessing leaves the data far from standardized ("
        + "; ".join(far)
        + "): check model.preprocess.scale (255 for a model that expects 0-255 pixels), mean and std"
    ]


def prepare(
    net: nn.Module,
    cfg: ModelConfig,
    x: np.ndarray,
    classes: list[str],
    y: np.ndarray | None = None,
) -> tuple[SourceModel, SourceReport]:
    """The user's network as robustops scores it: preprocessing first, logits last, in eval mode;
    and what was found on up to ``PROBE`` of the images ``x`` (in [0, 1], N x C x H x W), labelled
    ``y`` (indices into ``classes``, the data's class names) when given. The report's ``classes``
    name the outputs: relabel the data with them before scoring.

    Raises:
        ModelSourceError: the model fails on the images, returns something other than (N, K)
            logits, returns NaN or infinity, or its outputs do not fit the data's classes.
    """
    model = assemble(net, cfg, x.shape[1]).eval()
    pre = model[0]
    # A seeded sample across the data (files are often sorted by class), the same every time.
    pick = np.sort(np.random.default_rng(0).permutation(len(x))[:PROBE])
    probe = torch.from_numpy(np.ascontiguousarray(x[pick], dtype=np.float32))
    truth = None
    out = _forward(model, probe, "the data's images after model.preprocess")
    if out.ndim != 2 or out.shape[0] != len(probe):
        raise ModelSourceError(
            f"the model's output has shape {tuple(out.shape)} for {len(probe)} images; robustops needs "
            f"logits of shape ({len(probe)}, K): wrap the model so forward returns one row of class scores per image"
        )
    if not bool(torch.isfinite(out).all()):
        raise ModelSourceError(
            "the model's output holds NaN or infinity on the data's images; check model.preprocess "
            "and the weights"
        )
    notes: list[str] = []
    kind = _kind(out)
    if kind == "probabilities":
        model = assemble(net, cfg, x.shape[1], kind).eval()
        notes.append(
            "the model outputs probabilities (every row sums to 1): robustops scores their logarithm; "
            "a model that returns logits gives attacks better gradients"
        )
    elif kind == "log_probabilities":
        notes.append(
            "the model outputs log-probabilities: scored as logits (softmax gives back the probabilities)"
        )
    names = output_classes(cfg, out.shape[1], classes)
    again = _forward(model, probe, "the same images again")
    first = _forward(model, probe, "the same images")
    random = not torch.equal(first, again)
    if random:
        notes.append(
            "the model's eval-mode output is random (the same images gave different outputs: dropout left "
            "on, or a randomized defence): it is attacked through the mean of its outputs over "
            "evaluation.eot_draws draws (EoT) and judged by one draw, as it serves"
        )
    notes += _sanity(cfg, pre, probe)
    if y is not None:  # the data's labels as output indices
        truth = torch.tensor([names.index(classes[i]) for i in np.asarray(y)[pick]], dtype=torch.long)
    declared = _accuracy(model, probe, truth)
    if declared is not None and declared <= CHANCE_BY / len(names):
        notes.append(
            f"the model scores {declared:.2f} on {len(probe)} of the data's images, about chance for "
            f"{len(names)} classes: check model.classes (which class each output is) and model.preprocess"
        )
    if declared is not None and cfg.preprocess != type(cfg.preprocess)():
        bare = cfg.model_copy(update={"preprocess": PreprocessConfig(size=cfg.preprocess.size)})
        plain = assemble(net, bare, x.shape[1], kind).eval()
        identity = _accuracy(plain, probe, truth)
        if identity is not None and identity > declared + BETTER_BY:
            notes.append(
                f"the model scores {identity:.2f} on {len(probe)} images with no preprocessing but "
                f"{declared:.2f} with the declared one: check model.preprocess"
            )
    for note in notes:
        warnings.warn(ModelWarning(note), stacklevel=2)
    return model.eval(), SourceReport(kind, out.shape[1], random, names, notes)
