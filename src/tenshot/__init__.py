"""tenshot: few-shot image generation with diffusion models.

The commands are functions: :func:`pretrain`, :func:`adapt`, :func:`distill`, :func:`sample`, each taking the config
dataclass the CLI builds (:mod:`tenshot.config`). Heavy modules load on first use.
"""

from .config import AdaptConfig, DistillConfig, PretrainConfig, SampleConfig, TrainConfig
from .errors import TenshotError

__all__ = ["AdaptConfig", "DistillConfig", "PretrainConfig", "SampleConfig", "TenshotError", "TrainConfig", "adapt", "distill", "pretrain", "sample"]


def __getattr__(name):
    if name in ("pretrain", "adapt", "distill", "sample", "generate", "demo"):
        from . import api

        return getattr(api, name)
    if name == "evaluate":
        from .metrics.evaluate import evaluate

        return evaluate
    raise AttributeError(name)
