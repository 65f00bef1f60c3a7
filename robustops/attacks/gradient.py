"""FGSM and PGD (L-inf) under the attack contract of :mod:`robustops.attacks.base`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustops.attacks.base import ATTACKS, Attack, input_grad, like, loss_grad
from robustops.stop import raise_if_stopped


def check_loss(loss: str) -> str:
    from robustops.attacks.losses import LOSSES

    if loss not in LOSSES:
        raise ValueError(f"unknown attack loss {loss!r}; known: {', '.join(LOSSES.names())}")
    return loss


@ATTACKS.register("fgsm")
class FGSM(Attack):
    """Fast gradient sign method (Goodfellow et al., 2015): one step of size eps.

    Args:
        eps: radius of the L-inf ball.
        loss: the loss ascended, a name in ``robustops.attacks.losses.LOSSES`` (default "ce").
    """

    name = "fgsm"

    def __init__(self, eps: float, loss: str = "ce") -> None:
        super().__init__(eps)
        self.loss = check_loss(loss)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x + self.eps * input_grad(model, x, y, self.loss).sign()).clamp(0, 1)

    def settings(self) -> dict[str, Any]:
        return super().settings() | {"loss": self.loss}


@ATTACKS.register("pgd_linf")
class PGD(Attack):
    """Projected gradient descent in the L-inf ball (Madry et al., 2018).

    Calling the attack runs every input for every step and returns the last iterate, the
    classic PGD that adversarial training and the adversarial-set export need.
    :meth:`~robustops.attacks.base.Attack.worst_case`, which robust-accuracy scoring uses, stops
    early per input when ``early_stop`` is set, as AutoAttack does: inputs misclassified at the
    start are not attacked, an input counts as broken at the first iterate that fools the model
    (that iterate is its adversarial example), and it leaves the batch, so later steps compute
    gradients only for the inputs still standing. Its robust accuracy is never above the last
    iterate's: any fooling iterate counts.

    Args:
        eps: radius of the L-inf ball.
        steps: gradient steps per restart.
        step_size: absolute step size; default 2.5 * eps / steps.
        random_start: start from a uniform point in the ball (else from x).
        restarts: independent runs; an input counts as broken if any run breaks it. A restart
            runs only on the inputs the earlier ones left standing.
        seed: seeds the random starts, so a score is reproducible.
        loss: the loss ascended, a name in ``robustops.attacks.losses.LOSSES``: "ce" (default),
            "cw" or "dlr" (logit margins, immune to softmax saturation), "kl" (TRADES).
        generator: a random stream to draw the starts from instead of reseeding with ``seed`` on
            every call; adversarial training passes one so each batch gets a fresh start.
        early_stop: let :meth:`worst_case` drop broken inputs (default); False makes it run the
            classic attack like a call does.
        clip_start: clip the random start to the image range [0, 1] (default). FGSM-RS training
            passes False, as Wong et al. (2020) do: the first gradient is taken at x + noise
            unclipped and only the stepped point is projected. On images with a black background
            such as MNIST, clipping would zero half of the start's noise on every background pixel
            and the step would land on the ball's edge there; training on those less diverse
            examples drifted into gradient masking on MNIST at eps 0.3 (``benchmarks/mnist.py``;
            docs/defences.md holds the figures).
    """

    name = "pgd_linf"

    def __init__(
        self,
        eps: float,
        steps: int = 20,
        step_size: float | None = None,
        random_start: bool = True,
        restarts: int = 1,
        seed: int = 0,
        loss: str = "ce",
        generator: torch.Generator | None = None,
        early_stop: bool = True,
        clip_start: bool = True,
    ) -> None:
        super().__init__(eps)
        if steps < 1 or restarts < 1:
            raise ValueError(f"steps and restarts must be >= 1, got {steps} and {restarts}")
        # At eps 0 the attack returns x unchanged (the contract), so a step of eps * k is 0 too.
        if step_size is not None and not (step_size > 0 or (self.eps == 0 and step_size == 0)):
            raise ValueError(f"step_size must be > 0, got {step_size}")
        self.steps = steps
        self.step_size = step_size if step_size is not None else 2.5 * self.eps / steps
        self.random_start = random_start
        self.restarts = restarts
        self.seed = seed
        self.loss = check_loss(loss)
        self.generator = generator
        self.early_stop = early_stop
        self.clip_start = clip_start

    def _start(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        # Drawn on the CPU so a seed gives the same start on every device.
        if self.loss == "kl":
            # TRADES starts next to x: the KL to the clean prediction has zero gradient at x itself.
            noise = torch.randn(x.shape, generator=gen, device="cpu").to(x.device, x.dtype)
            return (x + 0.001 * noise).clamp(0, 1)
        noise = torch.rand(x.shape, generator=gen, device="cpu").to(x.device, x.dtype)
        start = x + (2 * noise - 1) * self.eps
        return start.clamp(0, 1) if self.clip_start else start

    def _step(self, x_adv: torch.Tensor, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """One ascent step along the sign of the gradient, projected onto the ball and [0, 1]."""
        x_adv = x_adv + self.step_size * grad.sign()
        return torch.min(torch.max(x_adv, x - self.eps), x + self.eps).clamp(0, 1)

    def _run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        x_adv: torch.Tensor,
        ref: torch.Tensor | None,
        early_stop: bool,
        check_last: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One run from ``x_adv``: the adversarial examples and which inputs they fool (for the
        last iterate only when ``check_last``: a later restart needs to know)."""
        n = len(x)
        out = torch.empty_like(x)
        fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
        live = torch.arange(n, device=x.device)  # rows of x still attacked
        for i in range(self.steps):
            raise_if_stopped()
            logits, grad = loss_grad(model, x_adv, y, self.loss, ref, layout=x)
            # An unclipped start may lie outside [0, 1]: never an adversarial example itself.
            if early_stop and (i > 0 or self.clip_start):
                # The forward pass already scored this iterate: an input it fools is done.
                hit = logits.argmax(1) != y
                if hit.any():
                    out[live[hit]] = x_adv[hit]
                    fooled[live[hit]] = True
                    keep = ~hit
                    live = live[keep]
                    if len(live) == 0:
                        return out, fooled
                    x_adv, x, y, grad = x_adv[keep], x[keep], y[keep], grad[keep]
                    ref = None if ref is None else ref[keep]
            x_adv = self._step(x_adv, x, grad)
        out[live] = x_adv
        if check_last:
            with torch.no_grad():
                fooled[live] = model(like(x, x_adv)).argmax(1) != y
        return out, fooled

    def _attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, early_stop: bool) -> torch.Tensor:
        gen = self.generator or torch.Generator().manual_seed(self.seed)
        clean = None
        if early_stop or self.loss == "kl":
            with torch.no_grad():
                clean = model(x)
        ref = clean if self.loss == "kl" else None
        # Inputs still to break: early stopping never attacks the misclassified ones.
        todo = clean.argmax(1) == y if early_stop else torch.ones(len(x), dtype=torch.bool, device=x.device)
        best = x.clone()
        for r in range(self.restarts):
            idx = torch.nonzero(todo).flatten()
            if len(idx) == 0:
                break
            # Drawn for the whole batch whichever inputs remain, so an input's start depends
            # only on the seed and the restart, never on how the others fared.
            start = self._start(x, gen) if self.random_start or self.loss == "kl" else x
            adv, fooled = self._run(
                model, x[idx], y[idx], start[idx], None if ref is None else ref[idx], early_stop,
                check_last=r + 1 < self.restarts,
            )  # fmt: skip
            best[idx] = adv
            todo[idx] = ~fooled
        return best

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._attack(model, x, y, early_stop=False)

    def perturb_worst_case(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._attack(model, x, y, early_stop=self.early_stop)

    def settings(self) -> dict[str, Any]:
        return super().settings() | {
            "steps": self.steps,
            "step_size": self.step_size,
            "random_start": self.random_start,
            "restarts": self.restarts,
            "seed": self.seed,
            "loss": self.loss,
            "early_stop": self.early_stop,
            "clip_start": self.clip_start,
        }
