"""Few-shot adaptation methods. Each owns its losses and its sampling; the trainer owns the loop."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from ..errors import TenshotError
from ..models.unet import DiffusionModel
from .base import Batch, Method
from .domainstudio import DomainStudio, DomainStudioOptions
from .finetune import FineTune, FineTuneOptions

# name -> (options dataclass, builder)
METHODS: dict[str, tuple[type, Callable[[DiffusionModel, Any], Method]]] = {
    "finetune": (FineTuneOptions, FineTune),
    "domainstudio": (DomainStudioOptions, DomainStudio),
}


def method_options(name: str, values: dict[str, Any]) -> Any:
    """The options dataclass of method ``name`` from a mapping; unknown keys are an error."""
    options_cls, _ = METHODS[name]
    known = {f.name for f in dataclasses.fields(options_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise TenshotError(f"method {name} has no option {unknown[0]!r} (options: {', '.join(sorted(known)) or 'none'})")
    return options_cls(**values)


def build_method(name: str, model: DiffusionModel, values: dict[str, Any]) -> Method:
    if name not in METHODS:
        raise TenshotError(f"unknown method {name!r}: choose one of {', '.join(METHODS)}")
    _, builder = METHODS[name]
    return builder(model, method_options(name, values))


__all__ = ["Batch", "METHODS", "Method", "build_method", "method_options"]
