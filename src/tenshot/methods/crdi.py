"""CRDI, Conditional Relaxing Diffusion Inversion (Cao & Gong, ECCV 2024, arXiv 2407.07249): the source UNet
stays frozen; each target shot i gets one Sample-wise Guidance Embedding (SGE) G[i, k] per time segment k,
an image-sized tensor used as a classifier-guidance "gradient" inside a window of a DDIM sampler.
METHODS.md section 4 (the official code), as adapted by its section "How tenshot applies them".

Times. CRDI's times belong to the linear schedule, T = 1000, of its ADM checkpoint and to the code's respaced
grid of ``grid_steps`` = 25 times ``round(i * 999 / 24)`` (``timestep_respacing "25"``: 0, 42, ..., 208, ...,
791, 832, ..., 999). ``t_start`` and ``t_end`` are stored as the original times their spaced indices denote
(METHODS.md rule 2): the code's t_start = 5 is t = 208 and its t_end = 20 is t = 832, so the guided window is
the grid times ``t_start <= t < t_end``, 208 ... 791 (15 steps). Every time is moved to the checkpoint's
schedule by equal abar (:meth:`NoiseSchedule.map_time`; the identity on a linear T = 1000 checkpoint such as
``noto-32``), or, with ``paper_size`` (0: off), by the resolution shift: the code's times belong to 256 px images,
and ``paper_size`` = 256 moves a time t to the checkpoint time whose SNR is (256 / size)^2 times the linear
schedule's at t (``snr_factor`` of ``map_time``; Hoogeboom et al. 2023, simple diffusion), the noise level at
which a size-px image keeps what a 256 px image keeps at t once average-pooled to size px. At equal abar, t = 791
keeps sqrt(abar) = 0.04 of the shot at any size: pooled over a 256 px image that still carries its layout (SNR
0.11 at 32 px scale), so the code's samples start from their shot's composition, while a 32 px shot keeps none
of it (SNR 0.002) and the sample is the frozen source's own, pushed by SGEs of several shots. At 32 px,
``paper_size`` 256 makes the window 208 ... 791 into 25 ... 474 on ``noto-32``, and 128 (a factor 16) into
54 ... 595.

Rigidity (the paper's eta, here ``segments``): the window's grid times are split into ``segments`` contiguous
blocks of nearly equal length, the longer ones at the low-noise end (the code's ``split_list``); segment 0 is
the least noisy. ``segments`` = 1 is one time-independent SGE per shot; ``segments`` = 15 one per guided step.

Guided step (METHODS.md 4.3, guided-diffusion's ``condition_score`` then DDIM with eta = 0), at a time t with
a = abar_t and an embedding g = ``guidance_scale`` * G[i, k(t)]:

- x0^ = clip(x0-prediction of the UNet) to the schedule's clip range, and eps re-derived from it (always, as
  the code's ``clip_denoised=True``; a zero embedding is therefore exactly the clipped unguided DDIM step);
- eps' = eps - sqrt(1 - a) g  and  x0^' = (x_t - sqrt(1 - a) eps') / sqrt(a) = x0^ + ((1 - a) / sqrt(a)) g;
- x_s = sqrt(abar_s) x0^' + sqrt(1 - abar_s) eps'  (DDIM, Song et al. 2021, Eq. 12).

Optimisation ("inversion", METHODS.md 4.4; ``tenshot adapt --method crdi``). One optimiser step trains one
segment k: it draws ``max(int(0.8 len_k), 1)`` grid times of the segment, one uniformly from each of as many
equal sub-intervals (the code's ``generate_random_t``), and for each time t and each shot x0 of the step

- x_t = q(x0, t; n1) and y = q(x0, t_prev; n2), t_prev the previous time of the grid (y = x0 below the
  grid), n1 and n2 independent fresh noise (``random_noise``, main.sh) or both the same fixed seed-0 noise
  of the shot (the yaml's ``random_q_noise False``);
- out = the guided step from x_t to t_prev with the shot's own G[i, k];
- L_t = MSE(x0, out.x0^') + MSE(y, out.x_s) + ``penalty_weight`` * MSE(G[:, k], mean_i G[i, k]).

``total`` = sum over the drawn times of L_t (the code accumulates their gradients into one Adam step); the
logged ``x0``, ``previous`` and ``penalty`` are the three terms averaged over the drawn times. The UNet output
does not depend on G (G enters after it), so the UNet runs under ``no_grad``: its weights have
``requires_grad`` off and no graph is built through them. All drawn times of a step go through the UNet as one
batch.

Which shots a step trains, and which segment. The shots are kept by :meth:`setup` (``api.adapt`` passes all
target images) as the buffer ``shots``; ``batch.images`` of the trainer's stream are not used, only their
count B and ``batch.generator``: a step trains ``min(B, N)`` distinct shots, a random choice drawn from the
step's generator (all N, as the code's batch of all 10 shots, when ``--batch-size`` >= N), with noise from
the same generator, so resumed runs repeat exactly (under ``torchrun`` each rank draws its own shots). Flips
would misalign an SGE with its shot, so CRDI ignores them. Step i trains segment ``segments - 1 - (i mod segments)``: round-robin from the noisiest, where
the code trains the segments one after another from the noisiest. The segments are separate problems (the
loss at a time of segment k involves only G[:, k]) and each is its own Parameter, so Adam keeps per-segment
state and skips the segments without a gradient; round-robin then gives every segment the updates the
sequential order gives it, while a run stopped early (or previewed) is balanced and the method does not need
the run's length. (The code's single Parameter lets Adam keep moving finished segments on stale momentum;
that leak is not reproduced.) ``--steps`` counts these optimiser steps over all segments (METHODS.md rule 3):
main.sh's 120 epochs x 15 segments is 1,800.

Sampling (METHODS.md 4.5; ``tenshot sample RUN``, :meth:`CRDI.sample`). Sample b draws its shot uniformly
from its own generator and starts at the noisiest window time t0 = 791 from x_t0 = q(shot, t0; noise_b) (its
own ``noise``); DDIM (``eta`` as given, 0 in the code) runs over t0 and the times below it of the ``steps``-time
grid of the same respacing (25: the code's 20 steps 791 ... 0). At window times the guided step uses, per
sample,

- the SGE of a shot drawn afresh at every step (``reassign``, the code's per-step random permutation; here an
  independent uniform draw per sample, so a sample never depends on its batch), or of its start shot;
- the segment whose training times lie nearest the step's time (with ``steps`` = ``grid_steps``, exactly the
  code's ``timestep_dict``);
- ``g = guidance_scale * G + a_j * N(0, I)``, the annealed perturbation (``anneal_scale`` s; main.sh 0.05, the
  yaml 0.2, 0 off): ``a_j = s (n - 1 - j) / n`` for the j-th of the n guided steps, noisiest first, which is the
  code's ``s (i - t_start)/(t_end - t_start)`` on spaced indices at 25 steps (14/15 s at 791, 0 at 208).

Below ``t_start`` the steps are the plain clipped DDIM steps. Every draw of sample b (shot, SGE choices,
perturbations, DDIM noise) comes from ``generators[b]`` in a fixed order, so sample k is the same image at any
batch size.

Defaults: main.sh's, the setting of the published numbers (``logs/evaluate.log``): ``segments`` 15, window t 208 ...
791, ``random_noise`` on, ``anneal_scale`` 0.05, ``reassign`` on, ``guidance_scale`` 2, ``penalty_weight`` 1,
``init`` normal (the code's ``randn``, drawn from torch's generator, which ``api.adapt`` seeds with ``--seed``),
``paper_size`` 0 (equal abar). Training settings (``config.METHOD_TRAIN_DEFAULTS["crdi"]``, used where the flag is
not given): Adam lr 0.05 (the code's), batch 10 (the code's batch of all ten shots), no gradient clipping (the code
has none), and 1,500 steps, 100 per segment: main.sh's 120 epochs are ``--steps 1800``, which the 10-minute budget of
METHODS.md rule 3 leaves too little margin for (a step is one no-grad UNet pass over the shots;
``bench/results/speed.md`` has its time). The alternative the author advised in issue #5 (the configuration files) is
``--option segments=1 --option t_end=624 --option random_noise=false --option anneal_scale=0.2 --steps 50`` (t_end =
15 of 25; 50 epochs of one segment, each step 8 times of the 10-step window). CRDI samples with DDIM only.

The rule for the defaults: the published setting (main.sh), unless an alternative of the paper or the code is better
on the public targets on fid-el0, kid-el0 and swd together. None was (``bench/README.md``, "Option studies": the yaml
files, ``init=zeros``, and ``reassign`` off on openmoji, emojione and the two sub-population targets). Reassignment
off pulls each sample towards its start shot: better on all three on openmoji and on the sub-population targets,
worse on fid-el0 and swd on emojione, and on the targets measured since the near-copy share exists 8 to 24% of its
samples are near-copies of a shot against at most 2% with reassignment. It stays an option (``--option
reassign=false``) for a sub-population target where closeness to the shots matters more than novelty. ``init=zeros``
converges faster in its first steps and scores the same. ``paper_size`` 128 or 256 moves CRDI's samples much closer
to a sub-population target on fid-el0 and kid-el0. It stays an option: the full shift from the code's 256 px, the
setting the resolution rule gives, makes most samples near-copies of a flag at 32 px and costs swd there; a partial
shift (128) would be a value chosen on the targets, not by a rule, and it is worse on all three on openmoji
(bench/README, "Sub-population targets" and "Option studies"). On a pure style shift CRDI keeps the frozen network's
rendering (it cannot change the UNet): the samples take the shots' content and colours, not their style
(``bench/results/quality.md``).

EMA and what a run saves: the UNet is frozen, so it stays the averaged module and the run's ``model/`` is the
source UNet unchanged (the EMA of a constant is that constant); the embeddings are saved unaveraged, as the
code uses them, in ``method.safetensors`` (``embeddings`` ``(N, segments, 3, H, W)``, the code's layout, and
``shots`` ``(N, 3, H, W)``, the starts of sampling).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from ..diffusion.samplers import ddim_move, noised
from ..diffusion.schedule import NoiseSchedule, Prediction, default_scheduler_config
from ..errors import TenshotError
from ..models.unet import DiffusionModel
from .base import Batch, Method
from .options import check_choices, check_flags, check_integers, check_numbers

LINEAR_TIMESTEPS = 1000
INITS = ("normal", "zeros")
FIXED_NOISE_SEED = 0


@dataclass
class CRDIOptions:
    """CRDI's settings (module docstring: what each does, the defaults' sources and the alternatives).

    ``segments``: time segments per shot, the paper's rigidity eta. ``t_start``, ``t_end``: the guided window
    ``t_start <= t < t_end`` in times of the linear T = 1000 schedule (the code's spaced 5 and 20 of 25).
    ``grid_steps``: the respaced grid the SGEs are trained on. ``guidance_scale``: the code's
    ``classifier_scale``. ``penalty_weight``: weight of the distance to the mean SGE. ``random_noise``: fresh
    noise per step (else the fixed seed-0 noise of each shot). ``anneal_scale``: the annealed perturbation at
    sampling (0: off). ``reassign``: a random shot's SGE at every sampling step (else the start shot's).
    ``init``: normal or zeros. ``paper_size``: the image size the times belong to, for the resolution shift
    (0: none, equal abar).
    """

    method: ClassVar[str] = "crdi"

    segments: int = 15
    t_start: int = 208
    t_end: int = 832
    grid_steps: int = 25
    guidance_scale: float = 2.0
    penalty_weight: float = 1.0
    random_noise: bool = True
    anneal_scale: float = 0.05
    reassign: bool = True
    init: str = "normal"
    paper_size: int = 0

    def __post_init__(self):
        check_integers(self, 0, "segments", "t_start", "t_end", "paper_size")
        check_integers(self, 2, "grid_steps", maximum=LINEAR_TIMESTEPS)
        check_numbers(self, "guidance_scale", "penalty_weight", "anneal_scale")
        check_flags(self, "random_noise", "reassign")
        check_choices(self, init=INITS)
        if not 0 <= self.t_start < self.t_end <= LINEAR_TIMESTEPS:
            raise TenshotError(f"crdi needs 0 <= t_start < t_end <= {LINEAR_TIMESTEPS}, got t_start={self.t_start}, t_end={self.t_end}")
        window = len(window_indices(self.t_start, self.t_end, self.grid_steps))
        if window == 0:
            raise TenshotError(f"crdi: no time of the {self.grid_steps}-step grid lies in [t_start, t_end) = [{self.t_start}, {self.t_end})")
        if not 1 <= self.segments <= window:
            raise TenshotError(f"crdi segments must be between 1 and the {window} grid steps of the window, got {self.segments}")


def respaced_times(steps: int) -> list[int]:
    """guided-diffusion's ``timestep_respacing`` of T = 1000 into ``steps`` times, ascending:
    ``round(i * 999 / (steps - 1))`` (round half to even), e.g. 25 -> 0, 42, 83, ..., 999."""
    import numpy as np

    if steps == 1:
        return [LINEAR_TIMESTEPS - 1]
    return sorted({int(t) for t in np.linspace(0, LINEAR_TIMESTEPS - 1, steps).round()})


def window_indices(t_start: int, t_end: int, grid_steps: int) -> list[int]:
    """Indices of the ``grid_steps`` grid whose times lie in ``[t_start, t_end)`` (the guided window)."""
    return [i for i, t in enumerate(respaced_times(grid_steps)) if t_start <= t < t_end]


def segment_layout(t_start: int, t_end: int, grid_steps: int, segments: int) -> list[list[int]]:
    """The window's grid indices split into ``segments`` contiguous blocks, segment 0 the least noisy; block
    lengths differ by at most one, the longer first (the code's ``split_list``)."""
    window = window_indices(t_start, t_end, grid_steps)
    quotient, remainder = divmod(len(window), segments)
    blocks, first = [], 0
    for k in range(segments):
        length = quotient + (1 if k < remainder else 0)
        blocks.append(window[first : first + length])
        first += length
    return blocks


def draw_segment_indices(block: list[int], generator: torch.Generator) -> list[int]:
    """``max(int(0.8 len), 1)`` grid indices of a segment, one uniformly from each of as many equal
    sub-intervals of it (the code's ``generate_random_t``; two may coincide when the sub-intervals are short)."""
    count = max(int(0.8 * len(block)), 1)
    width = len(block) / count
    offsets = torch.rand(count, generator=generator, dtype=torch.float64)
    return [block[min(int(j * width + float(offsets[j]) * width), len(block) - 1)] for j in range(count)]


def guided_prediction(schedule: NoiseSchedule, prediction: Prediction, x_t: torch.Tensor, t: torch.Tensor, guidance: torch.Tensor | None) -> Prediction:
    """CRDI's guided prediction at ``(x_t, t)`` (module docstring): x0 clipped to the schedule's clip range and eps
    re-derived from it; then, with a guidance ``g`` (``guidance_scale`` times the SGE, shaped like ``x_t``),
    ``x0' = x0 + (1 - abar) / sqrt(abar) g``, whose re-derived eps is ``eps - sqrt(1 - abar) g``.
    ``guidance=None`` (or zero) gives the clipped prediction the plain DDIM sampler uses."""
    bound = schedule.clip_sample_range
    x0 = prediction.x0.clamp(-bound, bound)
    if guidance is not None:
        abar = schedule.abar(t, like=x_t)
        x0 = x0 + (1.0 - abar) / abar.sqrt() * guidance
    return schedule.from_x0(x0, x_t, t)


class CRDI(Method):
    """Frozen UNet, one guidance embedding per shot and time segment, guided DDIM from noised shots (module
    docstring: the equations, the design and the defaults)."""

    name = "crdi"
    some_parameters_unused = True  # a step trains one segment's embeddings
    frozen_modules = ("unet",)  # as in the code: no dropout in the frozen UNet
    default_sampler = "ddim"  # its guidance is defined on the DDIM step

    def __init__(self, model: DiffusionModel, options: CRDIOptions | None = None):
        super().__init__(model, options or CRDIOptions())
        self.unet.requires_grad_(False).eval()
        self.embeddings = torch.nn.ParameterList()
        self.register_buffer("shots", torch.empty(0))
        self._linear_schedule = NoiseSchedule(default_scheduler_config("epsilon"))
        self._checkpoint_times: dict[int, int] = {}
        options = self.options
        self.grid = respaced_times(options.grid_steps)
        self.blocks = segment_layout(options.t_start, options.t_end, options.grid_steps, options.segments)

    # --- state ---------------------------------------------------------------------------------------------

    def setup(self, target: torch.Tensor) -> None:
        """Keep the shots and create the embeddings ``G[:, k]``, ``(N, 3, H, W)`` per segment, from torch's
        generator (``init=normal``, the code's ``randn``; ``api.adapt`` seeds it with ``--seed``) or zeros."""
        shots = target.detach().float()
        if self.options.init == "normal":
            initial = torch.randn((self.options.segments, *shots.shape))
        else:
            initial = torch.zeros((self.options.segments, *shots.shape))
        self._install(shots, initial.to(shots.device))

    def _install(self, shots: torch.Tensor, per_segment: torch.Tensor) -> None:
        self.shots = shots.clone()
        self.embeddings = torch.nn.ParameterList(torch.nn.Parameter(g.clone()) for g in per_segment)

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        return {"embeddings": torch.stack(list(self.embeddings), dim=1).detach(), "shots": self.shots.detach()}

    def load_extra_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if set(tensors) != {"embeddings", "shots"}:
            raise TenshotError(f"crdi run: method.safetensors must hold embeddings and shots, found {', '.join(sorted(tensors)) or 'nothing'}")
        embeddings, shots = tensors["embeddings"], tensors["shots"]
        size = self.model.size
        if shots.ndim != 4 or tuple(shots.shape[1:]) != (3, size, size) or len(shots) == 0:
            raise TenshotError(f"crdi run: shots are {tuple(shots.shape)}, expected (N, 3, {size}, {size})")
        expected = (len(shots), self.options.segments, 3, size, size)
        if tuple(embeddings.shape) != expected:
            raise TenshotError(f"crdi run: embeddings are {tuple(embeddings.shape)}, expected {expected} (N shots, segments)")
        self._install(shots.float(), embeddings.float().transpose(0, 1))

    def _require_setup(self) -> None:
        if len(self.embeddings) == 0:
            raise TenshotError("crdi has no embeddings: call setup(target images) first, or load a crdi run")

    # --- times ---------------------------------------------------------------------------------------------

    def checkpoint_time(self, linear_time: int) -> int:
        """A time of the linear T = 1000 schedule on the checkpoint's schedule, by equal abar or, with ``paper_size``,
        by the resolution shift (module docstring; -1: clean)."""
        if linear_time not in self._checkpoint_times:
            shift = (self.options.paper_size / self.model.size) ** 2 if self.options.paper_size else 1.0
            self._checkpoint_times[linear_time] = self.model.schedule.map_time(linear_time, self._linear_schedule, shift)
        return self._checkpoint_times[linear_time]

    def training_segment(self, step: int) -> int:
        """The segment optimiser step ``step`` trains: round-robin from the noisiest."""
        return self.options.segments - 1 - step % self.options.segments

    def segment_at(self, linear_time: int) -> int:
        """The segment whose training grid time lies nearest ``linear_time`` (ties: the noisier)."""
        nearest = min((abs(self.grid[i] - linear_time), -self.grid[i], k) for k, block in enumerate(self.blocks) for i in block)
        return nearest[2]

    def sampling_times(self, steps: int) -> list[tuple[int, int]]:
        """``(linear time, checkpoint time)`` of each sampling step: the noisiest window time, then the times below it
        of the ``steps``-time respaced grid; a time mapping onto the checkpoint no lower than the one before
        it is dropped."""
        start = self.grid[self.blocks[-1][-1]]
        linear = [start] + [t for t in reversed(respaced_times(steps)) if t < start]
        times: list[tuple[int, int]] = []
        for t in linear:
            mapped = self.checkpoint_time(t)
            if not times or mapped < times[-1][1]:
                times.append((t, mapped))
        return times

    # --- training ------------------------------------------------------------------------------------------

    def _fixed_noise(self) -> torch.Tensor:
        """The code's ``random_q_noise False``: one seed-0 draw for all shots, row i for shot i."""
        generator = torch.Generator().manual_seed(FIXED_NOISE_SEED)
        return torch.randn(self.shots.shape, generator=generator).to(self.shots.device)

    def losses(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        self._require_setup()
        options, schedule = self.options, self.model.schedule
        generator, device = batch.generator, self.shots.device
        count = len(self.shots)
        chosen = torch.randperm(count, generator=generator)[: min(batch.images.shape[0], count)].to(device)
        segment = self.training_segment(step)
        indices = draw_segment_indices(self.blocks[segment], generator)
        repeats = len(indices)
        x0 = self.shots[chosen].repeat(repeats, 1, 1, 1)
        t = torch.tensor([self.checkpoint_time(self.grid[i]) for i in indices for _ in chosen], device=device)
        previous = torch.tensor([self.checkpoint_time(self.grid[i - 1]) if i > 0 else -1 for i in indices for _ in chosen], device=device)
        if options.random_noise:
            x_t, _ = noised(schedule, x0, t, generator)
            target_previous, _ = noised(schedule, x0, previous, generator)
        else:
            noise = self._fixed_noise()[chosen].repeat(repeats, 1, 1, 1)
            x_t, target_previous = schedule.add_noise(x0, noise, t), schedule.add_noise(x0, noise, previous)
        with torch.no_grad():
            prediction = schedule.predict(self.unet(x_t, t).sample.float(), x_t, t)
        embeddings = self.embeddings[segment]
        guidance = options.guidance_scale * embeddings[chosen].repeat(repeats, 1, 1, 1)
        guided = guided_prediction(schedule, prediction, x_t, t, guidance)
        x_previous = ddim_move(guided, schedule.abar(previous, like=guided.x0))  # Eq. 12, eta = 0; -1: the clean image
        x0_term = F.mse_loss(guided.x0, x0)
        previous_term = F.mse_loss(x_previous, target_previous)
        penalty = F.mse_loss(embeddings, embeddings.mean(dim=0, keepdim=True).expand_as(embeddings))
        total = repeats * (x0_term + previous_term + options.penalty_weight * penalty)
        return {"total": total, "x0": x0_term.detach(), "previous": previous_term.detach(), "penalty": penalty.detach()}

    # --- sampling ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, *, steps: int = 25, sampler: str = "ddim", eta: float = 0.0, generators=None) -> torch.Tensor:
        """CRDI generation (module docstring): DDIM from noised shots with SGE guidance in the window; every
        random draw of sample b from ``generators[b]``."""
        from ..diffusion.samplers import ddim_sample, randn

        if sampler != "ddim":
            raise TenshotError(f"crdi samples with DDIM (its guidance is defined on the DDIM step), not {sampler}")
        self._require_setup()
        options, schedule = self.options, self.model.schedule
        batch, device = noise.shape[0], noise.device
        streams = list(generators) if generators is not None else [None] * batch
        if len(streams) != batch:
            raise ValueError(f"{len(streams)} generators for a batch of {batch}")
        count = len(self.shots)

        def draw_shots() -> torch.Tensor:
            return torch.cat([torch.randint(count, (1,), generator=g) for g in streams]).to(device)

        times = self.sampling_times(steps)
        guided = [(linear, checkpoint_time) for linear, checkpoint_time in times if linear >= options.t_start]  # noisiest first
        plan = {  # checkpoint time -> (segment, perturbation amplitude) at the guided steps
            checkpoint_time: (self.segment_at(linear), options.anneal_scale * (len(guided) - 1 - j) / len(guided))
            for j, (linear, checkpoint_time) in enumerate(guided)
        }
        start_shots = draw_shots()
        shots = self.shots.to(device=device, dtype=noise.dtype)
        start_time = torch.full((batch,), times[0][1], device=device)
        x = schedule.add_noise(shots[start_shots], noise, start_time)

        def guidance(x_t: torch.Tensor, t: int, prediction: Prediction) -> Prediction:
            when = torch.full((batch,), t, device=device)
            if t not in plan:
                return guided_prediction(schedule, prediction, x_t, when, None)
            segment, amplitude = plan[t]
            owners = draw_shots() if options.reassign else start_shots
            g = options.guidance_scale * self.embeddings[segment].to(device=device, dtype=x_t.dtype)[owners]
            if amplitude > 0:
                g = g + amplitude * randn(x_t.shape, streams if generators is not None else None, device, x_t.dtype)
            return guided_prediction(schedule, prediction, x_t, when, g)

        timesteps = [checkpoint_time for _, checkpoint_time in times]
        return ddim_sample(self.model.denoiser(), x, timesteps, eta=eta, guidance=guidance, generator=generators, clip=False)
