"""A user's own model: their architecture from a Python factory, their weights read safely into
it, and the preprocessing they declare folded in as the model's first layer, so everything
downstream sees images in [0, 1]."""

from robustops.sources.contract import SourceModel, SourceReport, assemble, prepare
from robustops.sources.factory import build_model, resolve_factory
from robustops.sources.kinds import SOURCES, kind_of, lineage, open_source, source_name
from robustops.sources.preprocess import Preprocess, with_preprocess
from robustops.sources.tuning import check_tunable, tunable_copy
from robustops.sources.weights import WEIGHT_KEYS, load_weights, read_state_dict

__all__ = [
    "SOURCES",
    "SourceModel",
    "SourceReport",
    "check_tunable",
    "tunable_copy",
    "assemble",
    "kind_of",
    "lineage",
    "open_source",
    "prepare",
    "source_name",
    "WEIGHT_KEYS",
    "Preprocess",
    "build_model",
    "load_weights",
    "read_state_dict",
    "resolve_factory",
    "with_preprocess",
]
