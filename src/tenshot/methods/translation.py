"""Image-to-image translation with iterative cross-domain structure guidance (ICSG; Hu et al., ICCV 2023, Sec. 3.4).

A source-domain image x^A is noised to ``start`` and denoised by the adapted model (DDIM with ``eta``, on
``steps`` times evenly spaced from ``start`` down to the clean image). After every step t -> s with
s > ``guidance_end``, the low band of the new latent is replaced by that of a one-step translated reference
(Eq. 8)::

    x_s = x'_s + phi_N(y_s) - phi_N(x'_s),   y_s = one model step t -> s from y_t ~ q(y_t | x^A)

phi_N is :func:`~tenshot.methods.frequency.low_pass` with factor N (``filter_factor``). Unlike ILVR, which uses
q(y_s | x^A), the reference is translated by the model itself. Style enhancement (``style_repeats`` M) repeats
M times: predict y_0 from y_s, re-noise it to t, denoise one step.

Times (``start``, ``guidance_end``) are quoted on the paper's cosine schedule and mapped to the model's schedule by
equal noise level (METHODS.md rule 2; on a linear schedule 600 -> 324, 400 -> 204). Defaults are the official
code's ``generate.py``: start 600, 25 steps, eta 1, guidance while t > 400, no style enhancement, N = 8 at
256 px. N scales with resolution (:func:`tenshot.config.default_filter_factor`). ``output="final"`` returns the final x_0; the
code saves instead the x0-prediction at its tenth step (t ~ 359), which is ``output="intermediate"``.
``sampler="dpm++"`` denoises with DPM-Solver++(2M) instead (deterministic: ``eta`` then only drives the
references' steps), the structure guidance applied to its latents the same way.
"""

from __future__ import annotations

import numpy as np
import torch

from ..config import TranslationSettings
from ..diffusion.samplers import ddim_sample, ddim_step, dpm_solver_sample, partial_noise
from ..diffusion.schedule import NoiseSchedule, cosine_schedule
from .frequency import low_pass

# the official code's result: the x0-prediction at DDIM iteration 10 of 25 from t = 600, t ~ 359 (cosine)
INTERMEDIATE_TIME = 359


def translation_times(schedule: NoiseSchedule, start: int, steps: int) -> list[int]:
    """``steps`` times evenly spaced on the cosine schedule from ``start`` towards the clean image (the code's
    ``linspace``), each moved to ``schedule`` by equal noise level; repeats after the move are dropped."""
    cosine = cosine_schedule()
    grid = np.round(np.linspace(start, -1, steps + 1)[:-1]).astype(int)
    mapped = [schedule.map_time(int(t), cosine) for t in grid]
    return sorted({t for t in mapped if t >= 0}, reverse=True)


def guided_latent(x: torch.Tensor, reference: torch.Tensor, factor: int) -> torch.Tensor:
    """Eq. 8: ``x + phi_N(reference) - phi_N(x)``: the low band of ``reference``, the high band of ``x``."""
    return x + low_pass(reference, factor) - low_pass(x, factor)


def one_step_reference(denoiser, images: torch.Tensor, t: int, s: int, *, eta: float, style_repeats: int, generators) -> torch.Tensor:
    """The reference y_s of Eq. 8: y_t ~ q(y_t | x^A), one model step t -> s, then ``style_repeats`` rounds of
    style enhancement (predict y_0 at s, re-noise to t, one step again)."""
    schedule = denoiser.schedule
    reference, _ = ddim_step(denoiser, partial_noise(schedule, images, t, generators), t, s, eta=eta, generator=generators)
    for _ in range(style_repeats):
        _, prediction = ddim_step(denoiser, reference, s, -1, eta=0.0)
        reference, _ = ddim_step(denoiser, partial_noise(schedule, prediction.x0, t, generators), t, s, eta=eta, generator=generators)
    return reference


@torch.no_grad()
def structure_guided_translation(denoiser, images: torch.Tensor, settings: TranslationSettings, generators=None) -> torch.Tensor:
    """Translate source-domain ``images`` in [-1, 1] with ``denoiser`` (module docstring); ``generators`` (one per
    image) make image k the same whatever the batch size."""
    schedule = denoiser.schedule
    factor = settings.check(images.shape[-1])
    times = translation_times(schedule, settings.start, settings.steps)
    cosine = cosine_schedule()
    guided_above = schedule.map_time(settings.guidance_end, cosine)
    intermediate = min(times, key=lambda t: abs(t - schedule.map_time(INTERMEDIATE_TIME, cosine)))
    kept: dict[str, torch.Tensor] = {}

    def guide(i: int, t: int, x_next: torch.Tensor, prediction) -> torch.Tensor | None:
        if t == intermediate:
            kept["x0"] = prediction.x0
        s = times[i + 1] if i + 1 < len(times) else -1
        if s <= guided_above:
            return None
        reference = one_step_reference(denoiser, images, t, s, eta=settings.eta, style_repeats=settings.style_repeats, generators=generators)
        return guided_latent(x_next, reference, factor)

    start = partial_noise(schedule, images, times[0], generators)
    if settings.sampler == "dpm++":
        final = dpm_solver_sample(denoiser, start, times, callback=guide)
    else:
        final = ddim_sample(denoiser, start, times, eta=settings.eta, callback=guide, generator=generators)
    return kept["x0"] if settings.output == "intermediate" else final
