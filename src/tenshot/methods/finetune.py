"""Plain fine-tuning: the baseline every few-shot paper compares against, and the pretraining objective."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.unet import DiffusionModel
from .base import Batch, Method
from .losses import diffusion_loss


@dataclass
class FineTuneOptions:
    """``snr_gamma``: min-SNR weight of the denoising loss (0 turns it off)."""

    snr_gamma: float = 5.0


class FineTune(Method):
    """Every UNet weight trained on the target images with the denoising loss (Ho et al. 2020, Eq. 14,
    min-SNR weighted). Used for pretraining too, on the source domain from a fresh UNet."""

    name = "finetune"

    def __init__(self, model: DiffusionModel, options: FineTuneOptions | None = None):
        super().__init__(model, options or FineTuneOptions())
        self.unet.requires_grad_(True)

    def losses(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        loss = diffusion_loss(self.unet, self.model.schedule, batch.images, batch.generator, self.options.snr_gamma)["loss"]
        return {"total": loss}
