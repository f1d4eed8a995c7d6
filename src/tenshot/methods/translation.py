"""Image-to-image translation with iterative cross-domain structure guidance (ICSG; Hu et al., ICCV 2023, Sec. 3.4).

A source-domain image x^A is brought to ``start`` and denoised by the adapted model (DDIM with ``eta``, on
``steps`` times evenly spaced from ``start`` down to the clean image). After every step t -> s with
s > ``guidance_end``, the low band of the new latent is replaced by that of a one-step translated reference
(Eq. 8)::

    x_s = x'_s + phi_N(y_s) - phi_N(x'_s),   y_s = one model step t -> s from y_t, x^A brought to t

phi_N is :func:`~tenshot.methods.frequency.low_pass` with factor N (``filter_factor``). Unlike ILVR, which uses
q(y_s | x^A), the reference is translated by the model itself. Style enhancement (``style_repeats`` M) repeats
M times: predict y_0 from y_s, re-noise it to t, denoise one step.

How x^A is brought to a time t (``encode``):

- ``"source"`` (default): the *source* model's deterministic DDIM encoding of x^A (:func:`ddim_invert` over the
  same times, upwards), the start x_start and every reference y_t read from that one trajectory. With ``eta``
  0 this is DDIB (Su et al., ICLR 2023): encode with the source domain's ODE, decode with the target's; the
  source model decodes its own encoding back to x^A up to the solver's error, so what changes is the domain,
  not the content. Measured (bench/README.md, "Translation"): the 32 px source's re-drawing through fresh
  noise costs more distance to the true target rendering than any adapted model wins back; its encoding does
  not.
- ``"noise"``: a draw of q(x_t | x^A) for the start and a fresh one for each reference, the paper's and the
  official code's (with ``eta`` 1).

Times (``start``, ``guidance_end``) are quoted on the paper's cosine schedule and mapped to the model's schedule by
equal noise level (METHODS.md rule 2; on a linear schedule 600 -> 324, 400 -> 204). The defaults are the official
code's ``generate.py`` (start 600, 25 steps, guidance while t > 400, no style enhancement, N = 8 at 256 px) but
for the encoding and eta (the code: noise, eta 1). N scales with resolution
(:func:`tenshot.config.default_filter_factor`). ``output="final"`` returns the final x_0; the code saves instead
the x0-prediction at its tenth step (t ~ 359), which is ``output="intermediate"``. ``sampler="dpm++"`` denoises
with DPM-Solver++(2M) instead (deterministic: ``eta`` then only drives the references' steps), the structure
guidance applied to its latents the same way.
"""

from __future__ import annotations

import numpy as np
import torch

from ..config import TranslationSettings
from ..diffusion.samplers import ddim_invert, ddim_sample, ddim_step, dpm_solver_sample, partial_noise
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


def one_step_reference(denoiser, noisy: torch.Tensor, t: int, s: int, *, eta: float, style_repeats: int, generators) -> torch.Tensor:
    """The reference y_s of Eq. 8: one model step t -> s from ``noisy`` (x^A brought to t), then ``style_repeats``
    rounds of style enhancement (predict y_0 at s, re-noise it to t, one step again)."""
    schedule = denoiser.schedule
    reference, _ = ddim_step(denoiser, noisy, t, s, eta=eta, generator=generators)
    for _ in range(style_repeats):
        _, prediction = ddim_step(denoiser, reference, s, -1, eta=0.0)
        reference, _ = ddim_step(denoiser, partial_noise(schedule, prediction.x0, t, generators), t, s, eta=eta, generator=generators)
    return reference


def source_encoding(encoder, images: torch.Tensor, times: list[int]) -> dict[int, torch.Tensor]:
    """DDIB's encoding: the deterministic DDIM inversion of ``images`` by ``encoder`` (the source model) through
    ``times``, as ``{t: the latent at t}``."""
    trajectory: dict[int, torch.Tensor] = {}

    def keep(i: int, t: int, x_next: torch.Tensor, prediction) -> None:
        trajectory[int(t)] = x_next

    ddim_invert(encoder, images, times, callback=keep)
    return trajectory


@torch.no_grad()
def structure_guided_translation(denoiser, images: torch.Tensor, settings: TranslationSettings, generators=None, encoder=None) -> torch.Tensor:
    """Translate source-domain ``images`` in [-1, 1] with ``denoiser`` (module docstring); ``encoder`` is the source
    model's denoiser, which ``encode="source"`` needs; ``generators`` (one per image) make image k the same
    whatever the batch size."""
    schedule = denoiser.schedule
    factor = settings.check(images.shape[-1])
    times = translation_times(schedule, settings.start, settings.steps)
    cosine = cosine_schedule()
    guided_above = schedule.map_time(settings.guidance_end, cosine)
    intermediate = min(times, key=lambda t: abs(t - schedule.map_time(INTERMEDIATE_TIME, cosine)))
    kept: dict[str, torch.Tensor] = {}
    if settings.encode == "source" and encoder is None:
        raise ValueError("encode='source' needs the source model's denoiser as encoder")
    encoded = source_encoding(encoder, images, times) if settings.encode == "source" else None

    def noisy(t: int) -> torch.Tensor:
        """x^A brought to time t (module docstring, ``encode``)."""
        return encoded[t] if encoded is not None else partial_noise(schedule, images, t, generators)

    def guide(i: int, t: int, x_next: torch.Tensor, prediction) -> torch.Tensor | None:
        if t == intermediate:
            kept["x0"] = prediction.x0
        s = times[i + 1] if i + 1 < len(times) else -1
        if s <= guided_above:
            return None
        reference = one_step_reference(denoiser, noisy(t), t, s, eta=settings.eta, style_repeats=settings.style_repeats, generators=generators)
        return guided_latent(x_next, reference, factor)

    start = noisy(times[0])
    if settings.sampler == "dpm++":
        final = dpm_solver_sample(denoiser, start, times, callback=guide)
    else:
        final = ddim_sample(denoiser, start, times, eta=settings.eta, callback=guide, generator=generators)
    return kept["x0"] if settings.output == "intermediate" else final
