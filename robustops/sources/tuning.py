"""A user's model made ready to fine-tune, and the checks a run makes before it trains anything:
the layers to freeze exist, something is left to train, the model can be copied, and its network
can be saved so the registered model loads without the user's code."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import torch

from robustops.config import FinetuneConfig
from robustops.errors import ConfigError, ModelSourceError
from robustops.sources.contract import SourceModel
from robustops.sources.saved import save_network


def _frozen(name: str, prefixes: list[str]) -> bool:
    # Whole name segments: "layer1" freezes layer1.* but not layer10.*.
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def tunable_copy(model: SourceModel, cfg: FinetuneConfig, spectral_norm: bool = False) -> SourceModel:
    """A copy of the prepared model whose ``cfg.freeze`` parameters need no gradient, with batch
    norm frozen when ``cfg.batch_norm`` says so.

    Raises:
        ConfigError: a freeze prefix names no parameter, every parameter would be frozen, or
            spectral norm is asked of a TorchScript network (its layers cannot be rewrapped).
        ModelSourceError: the model cannot be copied.
    """
    try:
        tuned = copy.deepcopy(model)
    except Exception as e:  # a user's module can refuse deepcopy in many ways
        raise ModelSourceError(
            f"the model cannot be copied for fine-tuning ({type(e).__name__}: {e}); make it deep-copyable "
            "(e.g. torch.nn.utils.parametrizations.weight_norm instead of the old weight_norm)"
        ) from e
    tuned.frozen_norm = cfg.batch_norm == "frozen"
    params = list(tuned.network.named_parameters())
    names = [n for n, _ in params]
    unknown = [p for p in cfg.freeze if not any(_frozen(n, [p]) for n in names)]
    if unknown:
        raise ConfigError(
            f"finetune.freeze: no parameter of the model is named {', '.join(unknown)} or under it "
            f"(its parameters: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''})"
        )
    for n, p in params:
        if _frozen(n, cfg.freeze):
            p.requires_grad_(False)
    if params and not any(p.requires_grad for _, p in params):
        raise ConfigError("finetune.freeze freezes every parameter: leave at least one layer to train")
    if spectral_norm and isinstance(tuned.network, torch.jit.ScriptModule):
        raise ConfigError(
            "regularize.spectral_norm cannot wrap the layers of a TorchScript network; turn it off, or give "
            "the model as a factory and weights"
        )
    return tuned


def check_tunable(
    model: SourceModel, cfg: FinetuneConfig, shape: tuple[int, int, int], spectral_norm: bool
) -> None:
    """What fine-tuning and recording will need, tried before anything trains: a tunable copy and
    the network saved as a program or TorchScript (see :mod:`robustops.sources.saved`)."""
    tunable_copy(model, cfg, spectral_norm)
    example = torch.rand(2, *shape, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        save_network(model.network, model[0](example), Path(tmp))
