"""Plain fine-tuning: the baseline every few-shot paper compares against, and the pretraining objective; and
LoRA, the same objective on a low-rank adapter (Hu et al. 2021)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..models.unet import DiffusionModel
from .base import Batch, Method, make_trainable
from .losses import diffusion_loss
from .options import check_adapter, check_choices


@dataclass
class FineTuneOptions:
    """``snr_gamma``: min-SNR weight of the denoising loss (0 turns it off). ``adapter``: full (every weight
    trains) or lora (a rank-``rank`` adapter trains, the UNet frozen)."""

    method: ClassVar[str] = "finetune"

    snr_gamma: float = 5.0
    adapter: str = "full"
    rank: int = 4

    def __post_init__(self):
        check_adapter(self)


@dataclass
class LoRAOptions(FineTuneOptions):
    """Fine-tuning's options with ``adapter`` lora: ``rank`` (default 4) is the adapter's rank."""

    method: ClassVar[str] = "lora"

    adapter: str = "lora"

    def __post_init__(self):
        check_choices(self, adapter=("lora",))
        check_adapter(self)


class FineTune(Method):
    """Every UNet weight (or a LoRA on it) trained on the target images with the denoising loss (Ho et al. 2020,
    Eq. 14, min-SNR weighted). Used for pretraining too, on the source domain from a fresh UNet."""

    name = "finetune"

    def __init__(self, model: DiffusionModel, options: FineTuneOptions | None = None):
        super().__init__(model, options or FineTuneOptions())
        make_trainable(self.unet, self.options.adapter, self.options.rank)

    def losses(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        loss = diffusion_loss(self.unet, self.model.schedule, batch.images, batch.generator, self.options.snr_gamma)["loss"]
        return {"total": loss}


class LoRA(FineTune):
    """``--method lora``: fine-tuning's loss on a LoRA of the UNet (``finetune`` with ``adapter=lora``)."""

    name = "lora"

    def __init__(self, model: DiffusionModel, options: LoRAOptions | None = None):
        super().__init__(model, options or LoRAOptions())
