"""Noise schedules from a diffusers scheduler config, and the one helper that reads a model's output.

Notation (Ho et al. 2020): ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``, and the velocity of
Salimans & Ho (2022) is ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import TenshotError

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")


@dataclass(frozen=True)
class Prediction:
    """A model output read three ways: noise ``eps``, clean image ``x0`` and velocity ``v``."""

    eps: torch.Tensor
    x0: torch.Tensor
    v: torch.Tensor


class NoiseSchedule:
    """The discrete-time schedule of a DDPM checkpoint: ``alphas_cumprod`` over ``T`` training steps.

    Built from the same ``scheduler_config.json`` diffusers reads, so tables match diffusers exactly.
    """

    def __init__(self, config: dict[str, Any]):
        from diffusers import DDPMScheduler

        known = {key: value for key, value in config.items() if not key.startswith("_")}
        try:
            scheduler = DDPMScheduler.from_config(known)
        except (ValueError, NotImplementedError, TypeError) as error:
            raise TenshotError(f"scheduler config is not usable: {error}") from None
        self.config = dict(scheduler.config)
        self.prediction_type = self.config["prediction_type"]
        if self.prediction_type not in PREDICTION_TYPES:
            raise TenshotError(f"prediction type {self.prediction_type!r} is not one of {', '.join(PREDICTION_TYPES)}")
        self.alphas_cumprod = scheduler.alphas_cumprod.to(torch.float64)
        self.num_train_timesteps = int(self.config["num_train_timesteps"])
        self.clip_sample = bool(self.config.get("clip_sample", False))
        self.clip_sample_range = float(self.config.get("clip_sample_range", 1.0))
        self.timestep_spacing = self.config.get("timestep_spacing", "leading")
        self.steps_offset = int(self.config.get("steps_offset", 0))

    def abar(self, t: torch.Tensor | int, like: torch.Tensor | None = None) -> torch.Tensor:
        """``abar_t`` for integer times (t = -1 means the clean image, abar = 1), shaped to broadcast on ``like``."""
        t = torch.as_tensor(t, dtype=torch.long)
        table = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod])
        value = table[t.cpu() + 1]
        if like is not None:
            value = value.to(device=like.device, dtype=like.dtype).reshape(-1, *([1] * (like.ndim - 1)))
        return value

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio ``abar_t / (1 - abar_t)`` as float64."""
        abar = self.abar(t)
        return abar / (1.0 - abar)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Forward process q(x_t | x0), Ho et al. Eq. 4."""
        abar = self.abar(t, like=x0)
        return abar.sqrt() * x0 + (1.0 - abar).sqrt() * noise

    def velocity(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The v-prediction target ``sqrt(abar) eps - sqrt(1 - abar) x0``."""
        abar = self.abar(t, like=x0)
        return abar.sqrt() * noise - (1.0 - abar).sqrt() * x0

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network is trained to output, by the checkpoint's prediction type."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "sample":
            return x0
        return self.velocity(x0, noise, t)

    def predict(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> Prediction:
        """Turn a network output of any prediction type into (eps, x0, v) at x_t, t."""
        abar = self.abar(t, like=x_t)
        signal, noise_scale = abar.sqrt(), (1.0 - abar).sqrt()
        if self.prediction_type == "epsilon":
            eps = output
            x0 = (x_t - noise_scale * eps) / signal
        elif self.prediction_type == "sample":
            x0 = output
            eps = (x_t - signal * x0) / noise_scale
        else:
            x0 = signal * x_t - noise_scale * output
            eps = noise_scale * x_t + signal * output
        return Prediction(eps=eps, x0=x0, v=signal * eps - noise_scale * x0)

    def from_x0(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> Prediction:
        """The prediction implied by a (clipped or guided) x0 at x_t: eps re-derived from x0."""
        abar = self.abar(t, like=x_t)
        eps = (x_t - abar.sqrt() * x0) / (1.0 - abar).sqrt()
        return Prediction(eps=eps, x0=x0, v=abar.sqrt() * eps - (1.0 - abar).sqrt() * x0)

    def timesteps(self, steps: int, spacing: str | None = None) -> list[int]:
        """``steps`` sampling times, noisiest first, spaced as diffusers' ``timestep_spacing``.

        The arithmetic is diffusers' own (``DDIMScheduler.set_timesteps``, numpy float64 and round-half-even),
        so every step count gives the same times; entries diffusers would put outside ``[0, T)`` (its
        ``trailing`` grid sometimes gains a ``-1``; ``leading`` with ``steps_offset`` can reach ``T``) are dropped.
        """
        import numpy as np

        total = self.num_train_timesteps
        spacing = spacing or self.timestep_spacing
        if not 1 <= steps <= total:
            raise TenshotError(f"sampling steps must be between 1 and {total}, got {steps}")
        if spacing == "leading":
            ratio = total // steps
            times = (np.arange(0, steps) * ratio).round().astype(np.int64) + self.steps_offset
        elif spacing == "trailing":
            times = np.round(np.arange(total, 0, -total / steps)).astype(np.int64) - 1
        elif spacing == "linspace":
            times = np.linspace(0, total - 1, steps).round().astype(np.int64)
        else:
            raise TenshotError(f"timestep spacing {spacing!r} is not one of {', '.join(TIMESTEP_SPACINGS)}")
        return sorted({int(t) for t in times if 0 <= t < total}, reverse=True)

    def time_at_abar(self, abar: float) -> int:
        """The time of this schedule whose ``abar`` is nearest to ``abar`` (map a time across schedules by equal SNR)."""
        return int(torch.argmin((self.alphas_cumprod - abar).abs()))

    def map_time(self, t: int, other: NoiseSchedule, snr_factor: float = 1.0) -> int:
        """A time ``t`` of ``other``'s schedule moved to this one by equal ``abar`` (METHODS.md rule 2), or, with
        ``snr_factor`` s, to the time whose SNR is s times ``other``'s at ``t``: the resolution shift of Hoogeboom
        et al. (2023, simple diffusion: log SNR shifted by 2 log(d / d')), where a time of a model at d px moves
        to one at d' px with s = (d / d')^2, the SNR at which the d px image average-pooled to d' px carries its
        noise.

        ``t = -1``, the clean image (``abar = 1``) in the samplers' convention, stays ``-1``.
        """
        if t < 0:
            return -1
        abar = float(other.abar(t))
        if snr_factor != 1.0:
            snr = snr_factor * abar / (1.0 - abar)
            abar = snr / (1.0 + snr)
        return self.time_at_abar(abar)


def cosine_schedule(prediction_type: str = "epsilon") -> NoiseSchedule:
    """The cosine schedule of Nichol & Dhariwal (2021, Eq. 17; s = 0.008, beta capped at 0.999), T = 1000:
    diffusers' ``squaredcos_cap_v2``. Papers that quote times on it (Phasic) are mapped from it by
    :meth:`NoiseSchedule.map_time`."""
    return NoiseSchedule({"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "prediction_type": prediction_type})


def default_scheduler_config(prediction_type: str = "v_prediction") -> dict[str, Any]:
    """The schedule the shipped models use: diffusers' linear DDPM betas, T = 1000, trailing spacing."""
    return {
        "_class_name": "DDPMScheduler",
        "num_train_timesteps": 1000,
        "beta_schedule": "linear",
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "prediction_type": prediction_type,
        "clip_sample": True,
        "clip_sample_range": 1.0,
        "timestep_spacing": "trailing",
        "variance_type": "fixed_small",
    }
