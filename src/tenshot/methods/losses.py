"""Loss terms shared by several methods."""

from __future__ import annotations

import torch

from ..diffusion.samplers import noised
from ..diffusion.schedule import NoiseSchedule


def min_snr_weight(schedule: NoiseSchedule, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma weight (Hang et al. 2023, Eq. 9), expressed for the checkpoint's prediction type.

    For eps: ``min(SNR, g) / SNR``; for x0: ``min(SNR, g)``; for v: ``min(SNR, g) / (SNR + 1)``.
    ``gamma <= 0`` gives the plain (unweighted) simple loss of Ho et al. 2020, Eq. 14.
    """
    if gamma <= 0:
        return torch.ones(t.shape, dtype=torch.float32)
    snr = schedule.snr(t)
    clipped = snr.clamp(max=gamma)
    if schedule.prediction_type == "epsilon":
        weight = clipped / snr
    elif schedule.prediction_type == "sample":
        weight = clipped
    else:
        weight = clipped / (snr + 1)
    return weight.float()


def prediction_error(output: torch.Tensor, target: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    """Per sample, the mean over pixels of ``(output - target)^2`` (``l2``) or ``|output - target|`` (``l1``)."""
    error = output - target
    return (error.abs() if norm == "l1" else error.pow(2)).mean(dim=(1, 2, 3))


def diffusion_loss(
    unet: torch.nn.Module,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    generator: torch.Generator,
    snr_gamma: float = 5.0,
) -> dict[str, torch.Tensor]:
    """The denoising loss on clean images ``x0``: uniform t, Gaussian noise, weighted MSE to the target.

    Returns the loss and the pieces other methods reuse (``t``, ``x_t``, the network output, its prediction,
    ``weighted``: each sample's weighted error, whose mean is the loss).
    """
    batch = x0.shape[0]
    t = torch.randint(0, schedule.num_train_timesteps, (batch,), generator=generator).to(x0.device)
    x_t, noise = noised(schedule, x0, t, generator)
    output = unet(x_t, t).sample.float()
    weight = min_snr_weight(schedule, t, snr_gamma).to(x0.device)
    weighted = weight * prediction_error(output, schedule.target(x0, noise, t))
    return {
        "loss": weighted.mean(),
        "weighted": weighted,
        "t": t,
        "x_t": x_t,
        "noise": noise,
        "prediction": schedule.predict(output, x_t, t),
    }
