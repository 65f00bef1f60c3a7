"""A user's own model: their architecture from a Python factory, their weights read safely into
it, and the preprocessing they declare folded in as the model's first layer, so everything
downstream sees images in [0, 1]."""

from robustops.sources.factory import build_model, resolve_factory
from robustops.sources.preprocess import Preprocess, with_preprocess
from robustops.sources.weights import WEIGHT_KEYS, load_weights, read_state_dict

__all__ = [
    "WEIGHT_KEYS",
    "Preprocess",
    "build_model",
    "load_weights",
    "read_state_dict",
    "resolve_factory",
    "with_preprocess",
]
