"""GDD / GDD-I (Zheng & Yang, "Diffusion Models Are Innate One-Step Generators", arXiv 2405.20750; D2O / D2O-F
in the ICML 2025 revision, arXiv 2506.09376): the diffusion UNet fine-tuned into a one-step generator with a
GAN loss alone. METHODS.md section 3, as adapted by its section "How tenshot applies them".

Generator (the preconditioning adapted to a discrete-time UNet). GDD evaluates its EDM network once at the
largest noise level, G(z) = D(sigma_max z; sigma_max) = c_skip x + c_out F(c_in x, c_noise) with sigma_max = 80,
where c_skip ~ 4e-5 and c_out ~ 0.5: the network's clean-image prediction from pure noise. On a DDPM UNet
with T training times the noisiest time is t* = T - 1, and its clean-image prediction from noise is

    x_T  = sqrt(abar_t*) * 0 + sqrt(1 - abar_t*) * z,        z ~ N(0, I)  (q(x_t* | x0 = 0), like GDD's 80 z)
    G(z) = x0-prediction of F(x_T, t*) through ``NoiseSchedule.predict`` (the checkpoint's prediction type)
         = c_skip * z + c_out * F(x_T, t*), with (a = abar_t*)
             v-prediction:       c_skip = sqrt(a (1 - a)),   c_out = -sqrt(1 - a)
             x0 (``sample``):    c_skip = 0,                  c_out = 1
             eps-prediction:     c_skip = sqrt((1 - a) / a), c_out = -sqrt((1 - a) / a)

EDM's c_skip/c_out are not used: the UNet's own parameterisation is kept, so before any training G(z) is
exactly the teacher's one-step x0-prediction at t* (tested). On a v-prediction UNet this is GDD's boundary
(c_skip -> 0 and |c_out| -> 1 as a -> 0; linear schedule: c_skip = 0.0064); an x0 UNet is G itself; an eps UNet
gains 1/sqrt(a) (156 on the linear schedule), and is refused on a zero-terminal-SNR schedule (a = 0) where x0 is
undefined. The exported ``model/`` marks its config (``_tenshot_one_step_time: t*``) so ``sample`` takes one
evaluation. The UNet runs under the trainer's autocast; G(z) is computed in fp32 from its output.

Discriminator: :class:`~tenshot.methods.projected.ProjectedDiscriminator` on EfficientNet-Lite0 alone (GDD adds
DeiT-B or VGG16-BN, METHODS.md rule 5), images upsampled to 128 px. This trains against the metric network's
features: results are marked so beside the network-free swd (DESIGN.md, Metrics).

Losses, per micro-batch of B images (non-saturating GAN, METHODS.md 3.4; the code's reduction: a sum over
samples of the mean over each sample's L logits, l_k):

    generator:      L_G = sum_i mean_k softplus(-l_k(G(z_i)))
    discriminator:  L_D = sum_i mean_k softplus(l_k(G(z_i))) + sum_i mean_k softplus(-l_k(x_i))
                          + [every ``r1_interval``-th step] r1_interval * (r1_gamma / 2) * mean_i ||d sum_k l_k(x_i) / d x_i||^2

R1 is lazy (Mescheder et al. 2018; StyleGAN2's lazy regularisation): every 16th step with gain 16, on the real
images at the model's resolution, taken on the same real forward pass as L_D; the code's separate regulariser
step and its 16/17 learning-rate correction are folded into that one step. Each step runs the generator's
phase, then the discriminator's on fresh noise, each with its own Adam (beta1 = 0, beta2 = 0.99; weight decay
is the run's, 0 by default). Gradients are not clipped by default (the code clips none).

Variants (``variant``):

- ``gdd-i`` (default): GDD-I / D2O-F. Frozen: the 3x3 convolutions (weight and bias, as the code's name rule
  freezes both) of every ``ResnetBlock2D`` and the convolutions of the ``Downsample2D``/``Upsample2D``
  samplers of a diffusers UNet2DModel (:func:`gdd_i_frozen_parameters`). Trainable: the group norms,
  ``time_emb_proj``, the time-embedding MLP, ``conv_in``, ``conv_out``, the 1x1 ``conv_shortcut`` layers and
  the attention layers. The frozen weights stay out of the optimiser, the checkpoints' trainable state and
  the EMA's changes; a resumed run rebuilds them from the teacher.
- ``gdd``: every UNet weight is trained.

The EMA of the generator (what ``model/`` holds) has a half-life of a fraction of the run (``tenshot distill
--ema-half-life``, 10% by default), GDD's 0.5 Mimg of 5-10 Mimg being 5-10%. Its warm-up, decay
min(beta, (1+i)/(10+i)) at step i, caps the half-life at about 7.7% of the steps done, as GDD's ramp-up caps it at
5% of the images seen; at the default 10% the cap binds for the whole run, so the warm-up sets the decay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from ..diffusion.samplers import randn
from ..errors import TenshotError
from ..models.unet import DiffusionModel
from .base import Batch, Method, ParameterGroup, restore_tensors
from .options import check_choices, check_integers, check_numbers
from .projected import ProjectedDiscriminator

VARIANTS = ("gdd-i", "gdd")
# marks a UNet2DModel config as a one-step generator evaluated at this time (a hidden key: diffusers keeps it
# through save_pretrained/from_pretrained without warnings)
ONE_STEP_KEY = "_tenshot_one_step_time"
ADAM_BETAS = (0.0, 0.99)


@dataclass
class GDDOptions:
    """``variant``: gdd-i (conv weights frozen) or gdd (all trained). ``r1_gamma``, ``r1_interval``: lazy R1
    weight and period (0 turns R1 off). ``d_lr_scale``: discriminator learning rate / generator learning rate.
    ``resolution``: the discriminator's input size (a multiple of 32). ``channels``: width c of the random
    projections. ``head_width``: the widest head layer."""

    method: ClassVar[str] = "gdd"

    variant: str = "gdd-i"
    r1_gamma: float = 1e-4
    r1_interval: int = 16
    d_lr_scale: float = 1.0
    resolution: int = 128
    channels: int = 64
    head_width: int = 512

    def __post_init__(self):
        check_choices(self, variant=VARIANTS)
        check_numbers(self, "r1_gamma")
        check_numbers(self, "d_lr_scale", positive=True)
        check_integers(self, 0, "r1_interval")
        check_integers(self, 1, "channels", "head_width")
        if not isinstance(self.resolution, int) or self.resolution < 32 or self.resolution % 32:
            raise TenshotError(f"gdd resolution must be a multiple of 32, got {self.resolution!r}")


def one_step_time(model: DiffusionModel) -> int:
    """The time a generator is evaluated at: its config's mark, else the UNet's noisiest time T - 1."""
    return int(model.unet.config.get(ONE_STEP_KEY, model.schedule.num_train_timesteps - 1))


def is_one_step(unet: torch.nn.Module) -> bool:
    return ONE_STEP_KEY in getattr(unet, "config", {})


def generate_one_step(model: DiffusionModel, noise: torch.Tensor, time: int, unet: torch.nn.Module | None = None) -> torch.Tensor:
    """G(z): the x0-prediction at ``time`` from ``x = sqrt(1 - abar) z`` (module docstring), fp32."""
    unet = unet if unet is not None else model.unet
    schedule = model.schedule
    noise = noise.float()
    times = torch.full((noise.shape[0],), time, device=noise.device, dtype=torch.long)
    x_t = (1.0 - schedule.abar(times, like=noise)).sqrt() * noise
    return schedule.predict(unet(x_t, times).sample.float(), x_t, times).x0


def gdd_i_frozen_parameters(unet: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """GDD-I's frozen parameters of a diffusers UNet2DModel by name: ``conv1``/``conv2`` of every
    ``ResnetBlock2D`` and ``conv`` of every ``Downsample2D``/``Upsample2D``; in a converted
    denoising-diffusion-pytorch network the same layers: both blocks' 3x3 ``proj`` and the samplers' ``conv``."""
    from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D

    from ..models import lucidrains_unet as lucidrains

    convs = []
    for module in unet.modules():
        if isinstance(module, ResnetBlock2D):
            convs += [module.conv1, module.conv2]
        elif isinstance(module, lucidrains.ResnetBlock):
            convs += [module.block1.proj, module.block2.proj]
        elif isinstance(module, (Downsample2D, Upsample2D, lucidrains.Downsample, lucidrains.Upsample)) and isinstance(getattr(module, "conv", None), torch.nn.Conv2d):
            convs.append(module.conv)
    frozen = {id(p) for conv in convs for p in conv.parameters()}
    return {name: p for name, p in unet.named_parameters() if id(p) in frozen}


def _row_sum(logits: torch.Tensor) -> torch.Tensor:
    """sum over samples of the mean over each sample's logits (the code's reduction)."""
    return logits.mean(dim=1).sum()


class GDD(Method):
    """One-step generator from the UNet, GAN-trained against a projected discriminator (module docstring)."""

    name = "gdd"

    def __init__(self, model: DiffusionModel, options: GDDOptions | None = None):
        super().__init__(model, options or GDDOptions())
        schedule = model.schedule
        self.time = one_step_time(model)
        if not 0 <= self.time < schedule.num_train_timesteps:
            raise TenshotError(f"one-step time {self.time} is outside the schedule's 0..{schedule.num_train_timesteps - 1}")
        if schedule.prediction_type == "epsilon" and float(schedule.abar(self.time)) <= 0.0:
            raise TenshotError("gdd: an eps-prediction UNet has no x0-prediction at zero terminal SNR (abar_T = 0); use a v- or x0-prediction model")
        self.unet.register_to_config(**{ONE_STEP_KEY: self.time})
        self.unet.requires_grad_(True)
        if self.options.variant == "gdd-i":
            frozen = gdd_i_frozen_parameters(self.unet)
            if not frozen:
                raise TenshotError("gdd-i: this UNet has no ResnetBlock2D or sampler convolutions to freeze; use variant gdd")
            for parameter in frozen.values():
                parameter.requires_grad_(False)
        self.discriminator = ProjectedDiscriminator(self.options.resolution, self.options.channels, self.options.head_width)

    def generate(self, noise: torch.Tensor) -> torch.Tensor:
        return generate_one_step(self.model, noise, self.time)

    def parameter_groups(self) -> list[ParameterGroup]:
        generator = [p for p in self.unet.parameters() if p.requires_grad]
        discriminator = list(self.discriminator.heads.parameters())
        return [
            ParameterGroup("generator", generator, 1.0, ADAM_BETAS),
            ParameterGroup("discriminator", discriminator, self.options.d_lr_scale, ADAM_BETAS),
        ]

    def training_buffers(self) -> dict[str, torch.Tensor]:
        """The heads' spectral-norm vectors and batch-norm statistics."""
        return {f"discriminator.heads.{name}": value for name, value in self.discriminator.heads.named_buffers()}

    def losses(self, batch: Batch, step: int, phase: str | None = None) -> dict[str, torch.Tensor]:
        images = batch.images
        noise = randn(images.shape, batch.generator, images.device)
        if phase == "generator":
            return {"total": _row_sum(F.softplus(-self.discriminator(self.generate(noise))))}
        if phase != "discriminator":
            raise ValueError(f"gdd has phases generator and discriminator, not {phase!r}")
        options = self.options
        with torch.no_grad():
            fake = self.generate(noise)
        regularise = options.r1_interval > 0 and options.r1_gamma > 0 and step % options.r1_interval == 0
        real = images.detach().float().requires_grad_(regularise)
        fake_logits = self.discriminator(fake)
        real_logits = self.discriminator(real)
        fake_loss, real_loss = _row_sum(F.softplus(fake_logits)), _row_sum(F.softplus(-real_logits))
        terms = {"total": fake_loss + real_loss, "fake": fake_loss.detach(), "real": real_loss.detach()}
        if regularise:
            (gradient,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
            r1 = gradient.square().sum(dim=(1, 2, 3)).mean() * (options.r1_gamma / 2) * options.r1_interval
            terms["total"] = terms["total"] + r1
            terms["r1"] = r1.detach()
        return terms

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        """The discriminator's heads and random projections (not the pretrained EL0 weights)."""
        return {f"discriminator.{name}": value for name, value in self.discriminator.saved_state().items()}

    def load_extra_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore the discriminator of a run; a bare one-step model folder has none (sampling needs none)."""
        if not tensors:
            return
        restore_tensors(self.discriminator, tensors, self.extra_tensors(), "discriminator.", "this gdd discriminator")

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, *, steps: int = 25, sampler: str = "ddim", eta: float = 0.0, generators=None) -> torch.Tensor:
        """One network evaluation, G(z) clipped to [-1, 1]; ``steps``, ``sampler`` and ``eta`` do not apply."""
        return self.generate(noise).clamp(-1.0, 1.0)
