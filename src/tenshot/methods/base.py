"""What every method shares: the batch it receives and the interface the trainer drives (DESIGN.md, Interfaces)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.unet import DiffusionModel


@dataclass
class Batch:
    """Images in [-1, 1] ``(B, 3, H, W)`` and the generator every random draw of this step must use,
    so that a resumed run repeats an uninterrupted one exactly."""

    images: torch.Tensor
    generator: torch.Generator


class Method(torch.nn.Module):
    """A trainable adaptation of a diffusion model.

    Subclasses set ``self.model`` (the :class:`DiffusionModel` being adapted, whose UNet is registered as a
    submodule) and implement :meth:`losses`. The trainer optimises ``losses(...)["total"]``, logs the rest,
    keeps an EMA of :meth:`averaged_module` and saves :meth:`export` at the end.
    """

    name = "method"
    model: DiffusionModel

    def __init__(self, model: DiffusionModel, options):
        """Registers the UNet being adapted as ``self.unet`` and keeps the method's options."""
        super().__init__()
        self.model = model
        self.unet = model.unet
        self.options = options

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def averaged_module(self) -> torch.nn.Module:
        """The module whose EMA is sampled from and saved (the adapted UNet by default)."""
        return self.model.unet

    def losses(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        """DDP synchronises gradients through ``forward``, so the trainer calls the method, not ``losses``."""
        return self.losses(batch, step)

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        """Method-specific tensors saved to ``method.safetensors`` (none for plain fine-tuning)."""
        return {}
