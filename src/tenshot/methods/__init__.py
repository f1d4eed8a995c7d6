"""Few-shot adaptation methods. Each owns its losses and its sampling; the trainer owns the loop."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import TenshotError
from ..models.unet import DiffusionModel
from .base import Batch, Method
from .crdi import CRDI, CRDIOptions
from .domainstudio import DomainStudio, DomainStudioOptions
from .finetune import FineTune, FineTuneOptions
from .gdd import GDD, GDDOptions, is_one_step
from .phasic import Phasic, PhasicOptions

# name -> (options dataclass, builder)
METHODS: dict[str, tuple[type, Callable[[DiffusionModel, Any], Method]]] = {
    "finetune": (FineTuneOptions, FineTune),
    "domainstudio": (DomainStudioOptions, DomainStudio),
    "phasic": (PhasicOptions, Phasic),
    "crdi": (CRDIOptions, CRDI),
    "gdd": (GDDOptions, GDD),
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


def load_for_sampling(reference: str | Path, device: str | torch.device = "cpu") -> Method:
    """What ``sample`` and ``evaluate`` draw from: a run folder through its own method (its ``config.yaml``
    names the method and options, ``model/`` holds the averaged weights, ``method.safetensors`` the method's
    tensors); any other model reference through plain fine-tuning's sampler (DDIM or DDPM of the UNet), or
    through GDD's one evaluation when its config marks it a one-step generator (a distilled ``model/``)."""
    import yaml
    from safetensors.torch import load_file

    from ..models.unet import load_model

    model = load_model(reference, device)
    run = Path(reference)
    saved = run / "config.yaml"
    name, options = ("gdd" if is_one_step(model.unet) else "finetune"), {}
    if run.is_dir() and saved.is_file():
        try:
            config = yaml.safe_load(saved.read_text()) or {}
        except yaml.YAMLError as error:
            raise TenshotError(f"{saved}: unreadable config ({error})") from None
        if isinstance(config, dict) and "method" in config:
            name, options = config["method"], config.get("options") or {}
    method = build_method(name, model, options)
    extra = run / "method.safetensors"
    method.load_extra_tensors(load_file(extra, device=str(device)) if run.is_dir() and extra.is_file() else {})
    return method.to(device).eval()


__all__ = ["Batch", "METHODS", "Method", "build_method", "load_for_sampling", "method_options"]
