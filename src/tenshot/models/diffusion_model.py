"""A diffusion model as the methods and samplers see it: a network, the noise schedule it was trained with, and
how it is written as a diffusers pipeline folder. :mod:`tenshot.models.unet` loads and builds the unconditional
ones, :mod:`tenshot.models.text_to_image` the Stable Diffusion ones."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..diffusion.schedule import NoiseSchedule, Prediction

SCHEDULER_FILE = "scheduler_config.json"
PIPELINE_FILE = "model_index.json"


def unet_class_name(unet_folder: Path) -> str | None:
    """The ``_class_name`` a diffusers model folder's ``config.json`` names (None when it has none to read)."""
    try:
        return json.loads((unet_folder / "config.json").read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError):
        return None


@dataclass
class DiffusionModel:
    """A UNet and the noise schedule it was trained with."""

    unet: torch.nn.Module
    schedule: NoiseSchedule

    @property
    def size(self) -> int:
        """Image size in pixels."""
        size = self.unet.config.sample_size
        return size if isinstance(size, int) else size[0]

    @property
    def noise_shape(self) -> tuple[int, int, int]:
        """The shape of one sample's starting noise: ``(3, size, size)`` in pixel space."""
        return (self.unet.config.in_channels, self.size, self.size)

    def write(self, folder: Path) -> None:
        """``model_index.json`` (``DDPMPipeline``), ``unet/`` (config and safetensors weights) and
        ``scheduler/scheduler_config.json``. A converted denoising-diffusion-pytorch network is named by its module,
        as diffusers' own ``save_pretrained`` names a class from outside its libraries: diffusers loads the pipeline
        once that module is imported."""
        import diffusers

        (folder / "scheduler").mkdir(parents=True, exist_ok=True)
        self.unet.save_pretrained(folder / "unet", safe_serialization=True)
        scheduler = {"_class_name": "DDPMScheduler", **self.schedule.config}
        (folder / "scheduler" / SCHEDULER_FILE).write_text(json.dumps(scheduler, indent=2, default=list) + "\n")
        from .lucidrains_unet import LucidrainsUNet

        unet = [LucidrainsUNet.__module__, "LucidrainsUNet"] if isinstance(self.unet, LucidrainsUNet) else ["diffusers", "UNet2DModel"]
        index = {"_class_name": "DDPMPipeline", "_diffusers_version": diffusers.__version__,
                 "scheduler": ["diffusers", scheduler["_class_name"]], "unet": unet}  # fmt: skip
        (folder / PIPELINE_FILE).write_text(json.dumps(index, indent=2) + "\n")

    def denoiser(self, unet: torch.nn.Module | None = None) -> UNetDenoiser:
        return UNetDenoiser(unet if unet is not None else self.unet, self.schedule)


class UNetDenoiser:
    """``denoiser(x, t) -> Prediction`` for the samplers: runs the UNet and reads its prediction type."""

    def __init__(self, unet: torch.nn.Module, schedule: NoiseSchedule):
        self.unet = unet
        self.schedule = schedule

    def __call__(self, x: torch.Tensor, t: int) -> Prediction:
        times = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
        output = self.unet(x, times).sample.to(x.dtype)
        return self.schedule.predict(output, x, times)
