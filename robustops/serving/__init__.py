"""Serving: the guarded model (validation, robust model, confidence and OOD flags)."""

from robustops.serving.guard import GuardedModel, GuardSettings, RequestError, as_images, settings_for

__all__ = ["GuardSettings", "GuardedModel", "RequestError", "as_images", "settings_for"]
