"""Samplers as plain functions, k-diffusion style: ``sample(denoiser, x, timesteps, *, ...)``.

``denoiser(x, t)`` returns a :class:`Prediction` and carries its ``schedule``. ``timesteps`` run from
noisiest to cleanest; the last step lands on the clean image (``abar = 1``).

Hooks, so methods plug in without forking a sampler:
- ``guidance(x, t, prediction) -> Prediction`` may change the prediction before the update
  (CRDI's guidance embeddings, classifier-style gradients);
- ``callback(i, t, x_next, prediction) -> Tensor | None`` sees every step and may replace ``x_next``
  (Phasic's structure guidance swaps low frequencies of the next latent).

Noise is drawn per sample (EDM's idea): ``generator`` may be one ``torch.Generator`` or a list with one
per sample, so sample k of a seed is the same image whatever the batch size (see :func:`sample_generators`).
"""

from __future__ import annotations

import math
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from .schedule import NoiseSchedule, Prediction

Generator = torch.Generator | Sequence[torch.Generator] | None
Guidance = Callable[[torch.Tensor, int, Prediction], Prediction]
Callback = Callable[[int, int, torch.Tensor, Prediction], "torch.Tensor | None"]


class Denoiser(Protocol):
    schedule: NoiseSchedule

    def __call__(self, x: torch.Tensor, t: int) -> Prediction: ...


def derive_seed(*keys: int) -> int:
    """A 63-bit seed for the stream named by non-negative integer ``keys`` (numpy's SeedSequence mixing)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0] >> 1)


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample ``index`` in a run seeded ``seed``: independent of batch size and of other samples."""
    return derive_seed(seed, 0, index)


def sample_generators(seed: int, indices: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One generator per sample, seeded by :func:`sample_seed`."""
    return [torch.Generator(device=device).manual_seed(sample_seed(seed, i)) for i in indices]


def randn(shape: Sequence[int], generator: Generator, device, dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise; with a list of generators each row comes from its own stream."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
        return torch.stack(
            [torch.randn(tuple(shape[1:]), generator=g, device=g.device, dtype=dtype).to(device) for g in generator]
        )
    if generator is None:
        return torch.randn(tuple(shape), device=device, dtype=dtype)
    return torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=dtype).to(device)


def _predict(denoiser: Denoiser, x: torch.Tensor, t: int, clip: bool | None, guidance: Guidance | None) -> Prediction:
    schedule = denoiser.schedule
    prediction = denoiser(x, t)
    if guidance is not None:
        prediction = guidance(x, t, prediction)
    if schedule.clip_sample if clip is None else clip:
        bound = schedule.clip_sample_range
        prediction = schedule.from_x0(prediction.x0.clamp(-bound, bound), x, torch.tensor([t]))
    return prediction


def _steps(timesteps: Sequence[int]) -> list[tuple[int, int]]:
    times = [int(t) for t in timesteps]
    if any(a <= b for a, b in zip(times, times[1:])):
        raise ValueError("timesteps must decrease strictly")
    return list(zip(times, times[1:] + [-1]))


def _after_step(callback, i, t, x_next, prediction):
    if callback is None:
        return x_next
    replaced = callback(i, t, x_next, prediction)
    return x_next if replaced is None else replaced


@torch.no_grad()
def ddim_sample(
    denoiser: Denoiser,
    x: torch.Tensor,
    timesteps: Sequence[int],
    *,
    eta: float = 0.0,
    guidance: Guidance | None = None,
    callback: Callback | None = None,
    generator: Generator = None,
    clip: bool | None = None,
) -> torch.Tensor:
    """DDIM (Song et al. 2021, Eq. 12): ``x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s - sigma^2) eps + sigma z``.

    ``sigma = eta * sqrt((1 - abar_s) / (1 - abar_t)) * sqrt(1 - abar_t / abar_s)`` (Eq. 16); eta = 0 is
    deterministic, eta = 1 is DDPM-like. With clipping on, eps is re-derived from the clipped x0 (diffusers'
    ``use_clipped_model_output=True``).
    """
    for i, (t, s) in enumerate(_steps(timesteps)):
        x_next, prediction = ddim_step(denoiser, x, t, s, eta=eta, guidance=guidance, generator=generator, clip=clip)
        x = _after_step(callback, i, t, x_next, prediction)
    return x


def ddim_move(prediction: Prediction, abar_s: float | torch.Tensor, sigma: float = 0.0) -> torch.Tensor:
    """Eq. 12 without its noise term: ``sqrt(abar_s) x0 + sqrt(1 - abar_s - sigma^2) eps`` (``abar_s`` one number, or
    per sample shaped to broadcast against x0, with gradients: CRDI trains through this move)."""
    if isinstance(abar_s, torch.Tensor):
        return abar_s.sqrt() * prediction.x0 + (1.0 - abar_s - sigma**2).clamp(min=0.0).sqrt() * prediction.eps
    return abar_s**0.5 * prediction.x0 + max(1 - abar_s - sigma**2, 0.0) ** 0.5 * prediction.eps


def ddim_step(
    denoiser: Denoiser,
    x: torch.Tensor,
    t: int,
    s: int,
    *,
    eta: float = 0.0,
    guidance: Guidance | None = None,
    generator: Generator = None,
    clip: bool | None = None,
) -> tuple[torch.Tensor, Prediction]:
    """One step of :func:`ddim_sample` from time ``t`` to ``s < t`` (``s = -1``: the clean image):
    ``(x_s, the prediction at (x, t))``. Methods use it for side chains, such as Phasic's one-step reference."""
    schedule = denoiser.schedule
    prediction = _predict(denoiser, x, t, clip, guidance)
    abar_t, abar_s = float(schedule.abar(t)), float(schedule.abar(s))
    sigma = eta * ((1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s)) ** 0.5
    x_next = ddim_move(prediction, abar_s, sigma)
    if sigma > 0:
        x_next = x_next + sigma * randn(x.shape, generator, x.device, x.dtype)
    return x_next, prediction


def _half_log_snr(abar: float) -> float:
    """lambda = log(alpha / sigma) = log(abar / (1 - abar)) / 2; +inf for the clean image (abar = 1)."""
    return math.inf if abar >= 1.0 else 0.5 * math.log(abar / (1.0 - abar))


@torch.no_grad()
def dpm_solver_sample(
    denoiser: Denoiser,
    x: torch.Tensor,
    timesteps: Sequence[int],
    *,
    guidance: Guidance | None = None,
    callback: Callback | None = None,
    clip: bool | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, arXiv 2211.01095, Alg. 2; data prediction, multistep, second order).

    With alpha = sqrt(abar), sigma = sqrt(1 - abar), lambda = log(alpha / sigma) and h = lambda_s - lambda_t for a
    step t -> s, each step is ``x_s = (sigma_s / sigma_t) x_t - alpha_s (e^-h - 1) D`` with D the x0-prediction
    at t (first order, the DDIM step) or, from the second step on, ``D = (1 + 1/2r) x0_t - (1/2r) x0_prev`` with
    r = h_prev / h. The first step and the last (to the clean image, sigma = 0, where the update is x0 itself)
    are first order: diffusers' ``DPMSolverMultistepScheduler`` with ``solver_order=2``, ``algorithm_type=
    "dpmsolver++"``, ``solver_type="midpoint"`` and ``final_sigmas_type="zero"``, which the tests match step by
    step with ``clip=False``. By default x0 is clipped as in DDIM when the schedule's config says
    ``clip_sample`` (diffusers' DPM scheduler never clips; a clipped step stays a step of the same solver on the
    clipped data prediction).
    """
    schedule = denoiser.schedule
    previous: tuple[torch.Tensor, float] | None = None  # the last step's x0-prediction and its h
    for i, (t, s) in enumerate(_steps(timesteps)):
        prediction = _predict(denoiser, x, t, clip, guidance)
        abar_t, abar_s = float(schedule.abar(t)), float(schedule.abar(s))
        if s < 0:
            x_next = prediction.x0
        else:
            h = _half_log_snr(abar_s) - _half_log_snr(abar_t)
            estimate = prediction.x0
            if previous is not None:
                ratio = previous[1] / h
                estimate = (1 + 0.5 / ratio) * prediction.x0 - (0.5 / ratio) * previous[0]
            x_next = ((1 - abar_s) / (1 - abar_t)) ** 0.5 * x - abar_s**0.5 * math.expm1(-h) * estimate
            previous = (prediction.x0, h)
        x = _after_step(callback, i, t, x_next, prediction)
    return x


@torch.no_grad()
def ddpm_sample(
    denoiser: Denoiser,
    x: torch.Tensor,
    timesteps: Sequence[int],
    *,
    guidance: Guidance | None = None,
    callback: Callback | None = None,
    generator: Generator = None,
    clip: bool | None = None,
) -> torch.Tensor:
    """Ancestral sampling from the posterior q(x_s | x_t, x0) (Ho et al. 2020, Eqs. 6-7), on any time grid.

    With ``a = abar_t / abar_s``: mean ``= sqrt(abar_s)(1 - a)/(1 - abar_t) x0 + sqrt(a)(1 - abar_s)/(1 - abar_t) x_t``,
    variance ``= (1 - abar_s)/(1 - abar_t) (1 - a)`` (the "fixed_small" choice); no noise on the last step.
    """
    schedule = denoiser.schedule
    for i, (t, s) in enumerate(_steps(timesteps)):
        prediction = _predict(denoiser, x, t, clip, guidance)
        abar_t, abar_s = float(schedule.abar(t)), float(schedule.abar(s))
        alpha = abar_t / abar_s
        mean = (abar_s**0.5 * (1 - alpha) * prediction.x0 + alpha**0.5 * (1 - abar_s) * x) / (1 - abar_t)
        x_next = mean
        if s >= 0:
            variance = max((1 - abar_s) / (1 - abar_t) * (1 - alpha), 1e-20)
            x_next = mean + variance**0.5 * randn(x.shape, generator, x.device, x.dtype)
        x = _after_step(callback, i, t, x_next, prediction)
    return x


def sample_by_name(sampler: str, denoiser: Denoiser, x: torch.Tensor, timesteps: Sequence[int], *, eta: float = 0.0, generator: Generator = None) -> torch.Tensor:
    """``--sampler``: ``ddim`` (with ``eta``), ``dpm++`` (DPM-Solver++(2M), deterministic) or ``ddpm`` (ancestral)."""
    if sampler == "ddim":
        return ddim_sample(denoiser, x, timesteps, eta=eta, generator=generator)
    if sampler == "dpm++":
        return dpm_solver_sample(denoiser, x, timesteps)
    return ddpm_sample(denoiser, x, timesteps, generator=generator)


def noised(schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, generator: Generator = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A draw of q(x_t | x0) (Ho et al. 2020, Eq. 4) at per-sample times ``t``: ``(x_t, the noise drawn)``."""
    noise = randn(x0.shape, generator, x0.device, x0.dtype)
    return schedule.add_noise(x0, noise, t), noise


def partial_noise(schedule: NoiseSchedule, x0: torch.Tensor, t: int, generator: Generator = None) -> torch.Tensor:
    """Noise a clean image to time ``t`` (SDEdit's start, Meng et al. 2022): a draw of q(x_t | x0)."""
    return noised(schedule, x0, torch.full((x0.shape[0],), t), generator)[0]


def timesteps_from(schedule: NoiseSchedule, steps: int, start: int | None = None) -> list[int]:
    """``steps`` times of the schedule's spacing, keeping those at or below ``start`` (image-to-image)."""
    times = schedule.timesteps(steps)
    return times if start is None else [t for t in times if t <= start]


@torch.no_grad()
def ddim_invert(
    denoiser: Denoiser,
    x0: torch.Tensor,
    timesteps: Sequence[int],
    *,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Deterministic DDIM inversion (Song et al. 2021, Sec. 4.3; Dhariwal & Nichol 2021, App. F).

    Runs Eq. 12 with eta = 0 upwards: from the clean image through ``timesteps`` (given noisiest first, as
    for sampling) to the noisiest one. Each move s -> t uses the prediction at the current point (x_s, s).
    The first move starts from the clean image itself (abar = 1, x0 known exactly): ``x_t0 = sqrt(abar_t0) x0
    + sqrt(1 - abar_t0) eps``, with eps predicted at (x0, t0), as diffusers' ``DDIMInverseScheduler`` with
    ``set_alpha_to_one``. (Reading x0 back from that prediction instead would make the first move the identity
    and leave the image un-noised at t0.) No clipping.
    """
    schedule = denoiser.schedule
    ascending = sorted(int(t) for t in timesteps)
    x = x0
    previous = None  # the clean image, abar = 1
    for i, t in enumerate(ascending):
        prediction = denoiser(x, t if previous is None else previous)
        clean = x if previous is None else prediction.x0
        abar_t = float(schedule.abar(t))
        x_next = abar_t**0.5 * clean + (1 - abar_t) ** 0.5 * prediction.eps
        x = _after_step(callback, i, t, x_next, prediction)
        previous = t
    return x
