"""tenshot: few-shot image generation with diffusion models.

The commands are functions: :func:`pretrain`, :func:`adapt`, :func:`distill`, :func:`sample`, :func:`translate`,
:func:`report`, ..., each taking the config dataclass the CLI builds (:mod:`tenshot.config`). Heavy modules load on
first use.
"""

from .config import AdaptConfig, ConvertConfig, DistillConfig, ExportConfig, PretrainConfig, ReportConfig, SampleConfig, TrainConfig, TranslateConfig
from .errors import TenshotError

__all__ = [
    "AdaptConfig", "ConvertConfig", "DistillConfig", "ExportConfig", "PretrainConfig", "ReportConfig", "SampleConfig", "TenshotError",
    "TrainConfig", "TranslateConfig", "adapt", "convert", "distill", "export", "pretrain", "report", "sample", "translate",
]


def __getattr__(name):
    if name in ("pretrain", "adapt", "convert", "distill", "export", "sample", "generate", "demo", "report", "translate"):
        from . import api

        return getattr(api, name)
    if name == "evaluate":
        from .metrics.evaluate import evaluate

        return evaluate
    raise AttributeError(name)
