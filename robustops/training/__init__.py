"""Training: the shared loop (``fit``) and baseline training; the losses and per-epoch probes of
adversarial training, distillation and smoothing plug into ``fit``."""

from robustops.training.standard import TrainResult, fit, resolve_device, seed_everything, train_baseline

__all__ = ["TrainResult", "fit", "resolve_device", "seed_everything", "train_baseline"]
