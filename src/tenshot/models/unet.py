"""diffusers UNet2DModel presets, and loading/saving a model with its noise schedule.

A *model reference* is any of: a run folder (``runs/NAME``, whose ``model/`` is used), a LoRA adapter folder
(``runs/NAME/adapter``: its base model with the adapter merged in), a diffusers folder (``config.json`` + weights + ``scheduler_config.json``, or a pipeline folder with ``unet/`` and
``scheduler/``; a Stable Diffusion pipeline folder loads as a :mod:`tenshot.models.text_to_image` model), a shipped asset name (``noto-32``), a hub id (``google/ddpm-cifar10-32``, online only) or a ``.pt``
checkpoint of ADM or denoising-diffusion-pytorch (converted once and cached, :mod:`tenshot.models.checkpoints`).
tenshot writes pipeline folders (:func:`save_model`), which diffusers' ``DDPMPipeline`` loads as they are.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch

from ..diffusion.schedule import NoiseSchedule, default_scheduler_config
from ..errors import TenshotError
from .diffusion_model import SCHEDULER_FILE, DiffusionModel, unet_class_name

PRESETS: dict[str, dict[str, Any]] = {
    # Tests: seconds per step on a CPU.
    "tiny": {"block_out_channels": (32, 64), "layers_per_block": 1, "norm_num_groups": 8, "attention": ()},
    # 32 px on CPU: the noto-32 recipe (DESIGN.md), 5.1M parameters, no attention.
    "small": {"block_out_channels": (64, 96, 128), "layers_per_block": 2, "norm_num_groups": 32, "attention": ()},
    # 64 px: one more resolution, self-attention at 8 px.
    "base": {"block_out_channels": (64, 128, 192, 256), "layers_per_block": 2, "norm_num_groups": 32, "attention": (3,)},
}

WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"


def build_unet(preset: str, size: int):
    """A fresh UNet2DModel of a preset at ``size`` px, RGB in and out."""
    from diffusers import UNet2DModel

    if preset not in PRESETS:
        raise TenshotError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    spec = PRESETS[preset]
    levels = len(spec["block_out_channels"])
    if size % 2 ** (levels - 1):
        raise TenshotError(f"size {size} must be divisible by {2 ** (levels - 1)} for preset {preset!r}")
    down = ["AttnDownBlock2D" if i in spec["attention"] else "DownBlock2D" for i in range(levels)]
    up = ["AttnUpBlock2D" if levels - 1 - i in spec["attention"] else "UpBlock2D" for i in range(levels)]
    return UNet2DModel(
        sample_size=size,
        in_channels=3,
        out_channels=3,
        block_out_channels=spec["block_out_channels"],
        layers_per_block=spec["layers_per_block"],
        norm_num_groups=spec["norm_num_groups"],
        down_block_types=tuple(down),
        up_block_types=tuple(up),
    )


def save_model(model: DiffusionModel, folder: str | Path, card: str | None = None) -> Path:
    """Write a diffusers pipeline folder that ``DDPMPipeline.from_pretrained`` (or ``DDIMPipeline``; a text-to-image
    model: ``StableDiffusionPipeline``) loads (:meth:`DiffusionModel.write`), and the model ``card`` as ``README.md``
    when given."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.write(folder)
    if card is not None:
        (folder / "README.md").write_text(card)
    return folder


def assets_root() -> Path:
    """Shipped assets: ``$TENSHOT_ASSETS`` or the package's ``assets/`` folder (package data: a wheel has them)."""
    if os.environ.get("TENSHOT_ASSETS"):
        return Path(os.environ["TENSHOT_ASSETS"])
    return Path(__file__).resolve().parents[1] / "assets"


def _diffusers_layout(folder: Path) -> tuple[Path, Path] | None:
    """(unet folder, scheduler config file) of a diffusers folder, or None."""
    if (folder / "config.json").is_file() and (folder / SCHEDULER_FILE).is_file():
        return folder, folder / SCHEDULER_FILE
    if (folder / "unet" / "config.json").is_file() and (folder / "scheduler" / SCHEDULER_FILE).is_file():
        return folder / "unet", folder / "scheduler" / SCHEDULER_FILE
    return None


def resolve_model_folder(reference: str | Path) -> Path:
    """The local diffusers folder a model reference names (downloading a hub id if needed, converting a ``.pt``
    checkpoint of the papers' code once, :mod:`tenshot.models.checkpoints`)."""
    from .checkpoints import CHECKPOINT_SUFFIXES, converted_on_the_fly

    path = Path(reference)
    if path.is_dir():
        for candidate in (path / "model", path):
            if _diffusers_layout(candidate):
                return candidate
        raise TenshotError(f"{path}: not a model (no config.json with {SCHEDULER_FILE}, and no model/ inside)")
    asset = assets_root() / str(reference)
    if "/" not in str(reference) and _diffusers_layout(asset):
        return asset
    if path.is_file() and path.suffix in CHECKPOINT_SUFFIXES:
        return converted_on_the_fly(path)
    if path.exists():
        raise TenshotError(f"{path}: not a model folder")
    if str(reference).count("/") == 1 and not str(reference).startswith((".", "/")):
        return _download(str(reference))
    raise TenshotError(f"{reference}: no such model folder, shipped asset ({', '.join(list_assets()) or 'none'}) or hub id")


def list_assets() -> list[str]:
    root = assets_root()
    return sorted(p.name for p in root.iterdir() if _diffusers_layout(p)) if root.is_dir() else []


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        folder = Path(
            snapshot_download(
                repo_id,
                allow_patterns=["*.json", "*.safetensors", "unet/*.json", "unet/*.safetensors", "scheduler/*.json", "tokenizer/*"],
            )
        )
    except HFValidationError:
        raise TenshotError(f"{repo_id}: no such model folder, shipped asset or valid hub id") from None
    except Exception as error:  # network failures come in many types; all mean the same to the user
        raise TenshotError(f"{repo_id}: could not download from the hub ({type(error).__name__}: {error})") from None
    if _diffusers_layout(folder) is None:
        raise TenshotError(f"{repo_id}: the hub repository holds no diffusers UNet with safetensors weights")
    return folder


def load_model(reference: str | Path, device: str | torch.device = "cpu") -> DiffusionModel:
    """Load a UNet2DModel (or a converted denoising-diffusion-pytorch network, :mod:`tenshot.models.lucidrains_unet`)
    and its schedule from any model reference; weights from safetensors only. A LoRA adapter folder
    (:mod:`tenshot.models.lora`) is its base model with the adapter merged in."""
    from diffusers import UNet2DModel

    from .lora import adapter_base, apply_adapter, is_adapter
    from .text_to_image import is_text_to_image, load_text_to_image

    if is_adapter(Path(reference)):
        base = load_model(adapter_base(Path(reference)), device)
        return dataclasses.replace(base, unet=apply_adapter(base.unet, Path(reference)).to(device).eval())
    folder = resolve_model_folder(reference)
    if is_text_to_image(folder):
        return load_text_to_image(folder, device)
    unet_folder, scheduler_file = _diffusers_layout(folder)
    if not (unet_folder / WEIGHTS_FILE).is_file():
        raise TenshotError(f"{unet_folder}: no {WEIGHTS_FILE} (tenshot reads safetensors weights only)")
    try:
        scheduler_config = json.loads(scheduler_file.read_text())
    except json.JSONDecodeError as error:
        raise TenshotError(f"{scheduler_file}: not valid JSON ({error})") from None
    schedule = NoiseSchedule(scheduler_config)
    network = UNet2DModel
    if unet_class_name(unet_folder) == "LucidrainsUNet":
        from .lucidrains_unet import LucidrainsUNet as network
    try:
        unet = network.from_pretrained(unet_folder, use_safetensors=True, low_cpu_mem_usage=False)
    except (OSError, ValueError, RuntimeError, TypeError, KeyError, json.JSONDecodeError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TenshotError(f"{unet_folder}: not a loadable {network.__name__} ({message})") from None
    return DiffusionModel(unet=unet.to(device).eval(), schedule=schedule)


def new_model(preset: str, size: int, prediction_type: str = "v_prediction") -> DiffusionModel:
    """A freshly initialised model on the default schedule."""
    return DiffusionModel(unet=build_unet(preset, size), schedule=NoiseSchedule(default_scheduler_config(prediction_type)))
