"""Few-shot adaptation methods. Each owns its losses and its sampling; the trainer owns the loop."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from ..errors import TenshotError
from ..models.text_to_image import TextToImageModel
from ..models.unet import DiffusionModel
from .base import Batch, Method
from .crdi import CRDI, CRDIOptions
from .domainstudio import DomainStudio, DomainStudioOptions
from .finetune import FineTune, FineTuneOptions, LoRA, LoRAOptions
from .gdd import GDD, GDDOptions, is_one_step
from .phasic import Phasic, PhasicOptions
from .text_to_image import TEXT_METHODS

# name -> (options dataclass, builder)
METHODS: dict[str, tuple[type, Callable[[DiffusionModel, Any], Method]]] = {
    "finetune": (FineTuneOptions, FineTune),
    "lora": (LoRAOptions, LoRA),
    "domainstudio": (DomainStudioOptions, DomainStudio),
    "phasic": (PhasicOptions, Phasic),
    "crdi": (CRDIOptions, CRDI),
    "gdd": (GDDOptions, GDD),
}


def _registry(text: bool) -> dict[str, tuple[type, Callable]]:
    return TEXT_METHODS if text else METHODS


def method_options(name: str, values: dict[str, Any], text: bool = False) -> Any:
    """The options dataclass of method ``name`` (of a text-to-image model with ``text``) from a mapping; an unknown
    method or key is an error."""
    methods = _registry(text)
    if name not in methods:
        if text and name in METHODS:
            raise TenshotError(f"{name} does not adapt a text-to-image model: use one of {', '.join(methods)}")
        raise TenshotError(f"unknown method {name!r}: choose one of {', '.join(methods)}")
    options_cls, _ = methods[name]
    known = {f.name for f in dataclasses.fields(options_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise TenshotError(f"method {name} has no option {unknown[0]!r} (options: {', '.join(sorted(known)) or 'none'})")
    return options_cls(**values)


def build_method(name: str, model: DiffusionModel, values: dict[str, Any]) -> Method:
    """Method ``name`` on ``model`` with option ``values``: the text-to-image form for a Stable Diffusion model."""
    text = isinstance(model, TextToImageModel)
    options = method_options(name, values, text)
    return _registry(text)[name][1](model, options)


__all__ = ["Batch", "METHODS", "Method", "build_method", "is_one_step", "method_options"]
