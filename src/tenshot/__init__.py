"""tenshot: few-shot image generation with diffusion models.

The commands are functions: :func:`pretrain`, :func:`adapt`, :func:`sample`, :func:`translate`, each taking the config
dataclass the CLI builds (:mod:`tenshot.config`). Heavy modules load on first use.
"""

from .config import AdaptConfig, PretrainConfig, SampleConfig, TrainConfig, TranslateConfig
from .errors import TenshotError

__all__ = ["AdaptConfig", "PretrainConfig", "SampleConfig", "TenshotError", "TrainConfig", "TranslateConfig", "adapt", "pretrain", "sample", "translate"]


def __getattr__(name):
    if name in ("pretrain", "adapt", "sample", "generate", "demo", "translate"):
        from . import api

        return getattr(api, name)
    if name == "evaluate":
        from .metrics.evaluate import evaluate

        return evaluate
    raise AttributeError(name)
