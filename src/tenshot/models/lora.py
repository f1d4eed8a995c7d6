"""LoRA adapters on a UNet (Hu et al. 2021, Eq. 3: W x + (alpha / r) B A x, with B = 0 at the start), through peft.

An adapter lives on the UNet's attention projections (``to_q``, ``to_k``, ``to_v``, ``to_out.0``) and its residual
blocks' convolutions (``conv1``, ``conv2``, ``conv_shortcut``); for a convolution A is a convolution of the
layer's kernel to ``r`` channels and B a 1x1 convolution back. The base weights stay frozen. An adapter folder is
peft's format (``adapter_config.json`` naming the base model, ``adapter_model.safetensors``), so peft and
diffusers users load it as they load any LoRA; tenshot loads it as a model reference (``load_model``), merged
into its base.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ..errors import TenshotError

TARGET_MODULES = r".*\.(to_q|to_k|to_v|to_out\.0|conv1|conv2|conv_shortcut)"
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


def _config(rank: int, alpha: float, base: str | None = None):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha, target_modules=TARGET_MODULES, init_lora_weights=True, base_model_name_or_path=base)


def add_lora(unet: torch.nn.Module, rank: int, alpha: float) -> None:
    """Freeze ``unet`` and inject trainable LoRA layers of rank ``rank`` and scale ``alpha / rank`` in place (A
    drawn by peft from torch's global generator, B zero, so the UNet's function is unchanged)."""
    from peft import inject_adapter_in_model

    from .lucidrains_unet import LucidrainsUNet

    if isinstance(unet, LucidrainsUNet) or not any(re.fullmatch(TARGET_MODULES, name) for name, _ in unet.named_modules()):
        raise TenshotError(f"LoRA's target layers are diffusers' attention projections and resnet convolutions, which this {type(unet).__name__} does not have; adapt it with another method")
    unet.requires_grad_(False)
    inject_adapter_in_model(_config(rank, alpha), unet)
    for name, parameter in unet.named_parameters():
        parameter.requires_grad_(".lora_" in name)


def has_lora(unet: torch.nn.Module) -> bool:
    return any(".lora_" in name for name, _ in unet.named_parameters())


def merge_in_place(unet: torch.nn.Module) -> torch.nn.Module:
    """Fold every LoRA layer of ``unet`` into its base weight (W + (alpha / r) B A) and put the base layer back in
    its place: a plain UNet of the base's architecture, computing what the adapter computed (exactly the base's
    weights when B = 0)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [(name, module) for name, module in unet.named_modules() if isinstance(module, BaseTunerLayer)]
    for name, layer in layers:
        layer.merge()
        parent_name, _, child = name.rpartition(".")
        setattr(unet.get_submodule(parent_name) if parent_name else unet, child, layer.get_base_layer())
    return unet


def merged(unet: torch.nn.Module) -> torch.nn.Module:
    """A merged copy of ``unet`` (:func:`merge_in_place`), ``unet`` keeping its adapter."""
    import copy

    return merge_in_place(copy.deepcopy(unet))


def save_adapter(unet: torch.nn.Module, folder: Path, base: str) -> None:
    """``folder/adapter_config.json`` (rank, scale, targets and the ``base`` model reference) and
    ``folder/adapter_model.safetensors`` (the LoRA weights alone), in peft's layout."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    layer = next(module for name, module in unet.named_modules() if hasattr(module, "lora_A") and module.lora_A)
    config = _config(layer.r["default"], layer.lora_alpha["default"], base)
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(folder))
    save_file({k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(unet).items()}, folder / WEIGHTS_FILE)


def is_adapter(folder: Path) -> bool:
    return folder.is_dir() and (folder / CONFIG_FILE).is_file()


def adapter_base(folder: Path) -> str:
    """The base model reference an adapter folder names (a path relative to the folder, an asset or a hub id)."""
    try:
        base = json.loads((folder / CONFIG_FILE).read_text()).get("base_model_name_or_path")
    except (json.JSONDecodeError, AttributeError) as error:
        raise TenshotError(f"{folder / CONFIG_FILE}: not a LoRA adapter config ({error})") from None
    if not base:
        raise TenshotError(f"{folder / CONFIG_FILE}: names no base model (base_model_name_or_path)")
    relative = folder / base
    return str(relative) if not Path(base).is_absolute() and relative.exists() else base


def apply_adapter(unet: torch.nn.Module, folder: Path) -> torch.nn.Module:
    """``unet`` with the adapter in ``folder`` merged in (a plain UNet)."""
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    try:
        config = LoraConfig.from_pretrained(str(folder))
        weights = load_file(folder / WEIGHTS_FILE)
    except (OSError, ValueError, TypeError) as error:
        raise TenshotError(f"{folder}: not a readable LoRA adapter ({str(error).splitlines()[0] if str(error) else type(error).__name__})") from None
    inject_adapter_in_model(config, unet)
    result = set_peft_model_state_dict(unet, weights)
    missing = [name for name in result.missing_keys if ".lora_" in name]
    if missing or result.unexpected_keys:
        raise TenshotError(f"{folder}: the adapter does not fit its base model ({(missing or result.unexpected_keys)[0]})")
    return merge_in_place(unet)
