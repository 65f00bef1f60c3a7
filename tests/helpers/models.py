"""Models and their scoring, small enough for seconds."""

from __future__ import annotations

from robustops.config import EvalConfig

# Small enough for seconds: every part of the scorecard runs, on few samples and iterations.
QUICK = {
    "eps": [0.05, 0.2],
    "l2_eps": [0.5],
    "pgd_steps": 5,
    "max_samples": 100,
    "autoattack": {"eps": [0.2], "apgd_steps": 10, "square_queries": 50},
    "masking": {"more_steps": 10},
}


def quick(**kw) -> EvalConfig:
    """The quick scorecard settings, with ``kw`` replacing whole fields."""
    return EvalConfig.model_validate(QUICK | kw)
