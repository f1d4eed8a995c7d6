"""Text-to-image adaptation of a Stable Diffusion pipeline (:mod:`tenshot.models.text_to_image`): DreamBooth
(``--method finetune``, or ``lora`` on a LoRA of the UNet; Ruiz et al., CVPR 2023, Eq. 2) and DomainStudio's
text-to-image form (``--method domainstudio``; Zhu et al., arXiv 2306.14153, METHODS.md 2.5), chosen when
``--source`` is such a pipeline.

Per step, on B instance images x (the target shots, prompt ``prompt``, e.g. "a [V] house") and B class images
(prompt ``class_prompt``, e.g. "a house", drawn once by the source pipeline, ``class_images`` of them at
``class_steps`` DDIM steps and guidance ``guidance_scale``, cached per source model and prompt):

- latents z = E(x) * scaling_factor, the VAE posterior's mean, encoded once per distinct image (cached);
- t ~ U{0..T-1} and eps per sample, one pass of the UNet on the 2B noised latents with their prompts' text states;
- L_inst and L_prior: the denoising loss on each half (``snr_gamma`` 0, the default: the code's plain eps-MSE);
- DreamBooth: L = L_inst + ``prior_weight`` L_prior (prior preservation off with no ``class_prompt``).

DomainStudio adds DDPM-PA's terms (:mod:`tenshot.methods.domainstudio`) on the instance half, in pixel space:

- x^ada_i = D(x0-prediction of the adapted UNet, instance prompt) and x^sou_i = D(x0-prediction of the frozen
  source UNet at the same z_t, class prompt), D the frozen VAE decoder, which the gradients pass through;
- L_img = KL(p^sou || p^ada) of the pairwise cosine-similarity softmaxes (mean over the B(B-1) entries, the code's
  ``KLDivLoss``), L_hf the same on the Haar high frequencies, L_hfmse = mean (hf(x^ada_i) - hf(x_i))^2;
- L = L_inst + prior_weight L_prior + ``pair_weight`` L_img + ``hf_pair_weight`` L_hf + ``hf_mse_weight`` L_hfmse,
  with the code's README weights 1, 100, 100 and 0.1.

Where tenshot departs from the official code, and why:

- The source distribution is the frozen source UNet's prediction for the same noised instance latent under the
  class prompt. This is the paper's formulation (the unconditional DDPM-PA compares the source and adapted models on
  the same x_t, so anchor i of both distributions is the same input), with the class prompt standing for the source
  domain. The code loads a source UNet and never uses it; its "source" is the adapted UNet on the class images, whose
  i-th image has nothing to do with the i-th instance.
- L_hfmse pairs each prediction with the image it was noised from (the code draws its references from a second,
  independently shuffled loader).
- One time per sample and one UNet pass serve every term (the code draws a second, shared time for the pairwise
  terms and runs the UNet twice).

Sampling (previews, ``tenshot sample RUN --prompt ...``) is classifier-free guidance (Ho & Salimans 2022, Eq. 6):
eps = eps(z, "") + w (eps(z, prompt) - eps(z, "")), w = ``guidance_scale``, through tenshot's samplers, then decoded.
Training defaults follow the code's README (lr 5e-6, batch 4 instance images plus 4 class images, 800 steps, no
flips; :data:`tenshot.config.TEXT_TRAIN_DEFAULTS`). ``gradient_checkpointing`` (on by default) trades compute for
the memory of the UNet and of the VAE decoder's backward pass.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from ..diffusion.samplers import sample_by_name
from ..errors import TenshotError
from ..models.text_to_image import Conditioned, TextToImageModel
from .base import Batch, Method, frozen_source_copy, make_trainable
from .domainstudio import pairwise_similarity_kl
from .frequency import high_frequency
from .losses import diffusion_loss
from .options import check_adapter, check_choices, check_flags, check_integers, check_numbers


@dataclass
class TextFineTuneOptions:
    """``prompt``: the instance prompt (e.g. "a [V] house"; required to adapt). ``class_prompt``: the prompt of
    the class images for prior preservation (e.g. "a house"; empty: none). ``prior_weight``: their loss's weight.
    ``class_images``, ``class_steps``: how many class images the source pipeline draws, with how many DDIM steps.
    ``guidance_scale``: classifier-free guidance of those draws and of sampling. ``snr_gamma``: min-SNR weight of
    the denoising losses (0: off, the code's). ``gradient_checkpointing``: of the UNet (and the VAE decoder).
    ``adapter``, ``rank``: full (every UNet weight trains) or lora (a rank-``rank`` LoRA trains), as unconditionally."""

    method: ClassVar[str] = "finetune"

    prompt: str = ""
    class_prompt: str = ""
    prior_weight: float = 1.0
    class_images: int = 200
    class_steps: int = 20
    guidance_scale: float = 7.5
    snr_gamma: float = 0.0
    gradient_checkpointing: bool = True
    adapter: str = "full"
    rank: int = 4

    def __post_init__(self):
        if not isinstance(self.prompt, str) or not isinstance(self.class_prompt, str):
            raise TenshotError(f"{self.method}: prompt and class_prompt are text")
        check_numbers(self, "prior_weight", "guidance_scale", "snr_gamma")
        check_integers(self, 1, "class_images", "class_steps")
        check_flags(self, "gradient_checkpointing")
        check_adapter(self)


@dataclass
class TextLoRAOptions(TextFineTuneOptions):
    """DreamBooth's options with ``adapter`` lora (``rank``, default 4), the form in which DreamBooth adaptations
    are usually shared."""

    method: ClassVar[str] = "lora"

    adapter: str = "lora"

    def __post_init__(self):
        super().__post_init__()
        check_choices(self, adapter=("lora",))


@dataclass
class TextDomainStudioOptions(TextFineTuneOptions):
    """DreamBooth's options, and the weights of DomainStudio's terms (module docstring): ``pair_weight`` (L_img),
    ``hf_pair_weight`` (L_hf), ``hf_mse_weight`` (L_hfmse). ``class_prompt`` is required: it names the source
    domain whose pairwise distances are kept."""

    method: ClassVar[str] = "domainstudio"

    pair_weight: float = 100.0
    hf_pair_weight: float = 100.0
    hf_mse_weight: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        check_numbers(self, "pair_weight", "hf_pair_weight", "hf_mse_weight")
        if self.prompt and not self.class_prompt:
            raise TenshotError("text-to-image domainstudio keeps the distances of the class prompt's images: give --class-prompt")


class GuidedDenoiser:
    """Classifier-free guidance (Ho & Salimans 2022, Eq. 6) of a text-conditional UNet, as a sampler's denoiser:
    the output (of any prediction type, linear in eps) is ``out_u + w (out_c - out_u)``."""

    def __init__(self, unet: torch.nn.Module, schedule, conditional: torch.Tensor, unconditional: torch.Tensor, scale: float):
        self.unet = unet
        self.schedule = schedule
        self.states = torch.cat([unconditional, conditional])
        self.scale = scale

    def __call__(self, x: torch.Tensor, t: int):
        count = x.shape[0]
        states = self.states.repeat_interleave(count, dim=0).to(x.dtype)
        times = torch.full((2 * count,), int(t), device=x.device, dtype=torch.long)
        output = self.unet(torch.cat([x, x]), times, encoder_hidden_states=states).sample
        unconditional, conditional = output.to(x.dtype).chunk(2)
        guided = unconditional + self.scale * (conditional - unconditional)
        return self.schedule.predict(guided, x, times[:count])


class PromptSampler(torch.nn.Module):
    """Sampling of a text-to-image model under one prompt with classifier-free guidance, decoded to images in
    [-1, 1]; it changes nothing of the model (no trainable state, no checkpointing): what the class images are drawn
    with (:func:`tenshot.source_images.prompt_samples`) and what :class:`TextFineTune` samples with."""

    def __init__(self, model: TextToImageModel, prompt: str, guidance_scale: float):
        super().__init__()
        if not prompt:
            raise TenshotError("a text-to-image model samples from a prompt: give --prompt")
        self.model = model
        self.unet, self.vae, self.text_encoder = model.unet, model.vae, model.text_encoder  # so that .to() moves them
        self.prompt = prompt
        self.guidance_scale = guidance_scale

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, *, steps: int = 25, sampler: str = "ddim", eta: float = 0.0, generators=None) -> torch.Tensor:
        """Latents from ``noise`` by ``sampler`` on :class:`GuidedDenoiser`, decoded."""
        states = self.model.embed([self.prompt, ""])
        denoiser = GuidedDenoiser(self.unet, self.model.schedule, states[:1], states[1:], self.guidance_scale)
        latents = sample_by_name(sampler, denoiser, noise, self.model.schedule.timesteps(steps), eta=eta, generator=generators)
        return self.model.decode(latents).clamp(-1.0, 1.0)


class TextFineTune(Method):
    """DreamBooth with prior preservation on a Stable Diffusion pipeline (module docstring)."""

    name = "finetune"
    frozen_modules = ("vae", "text_encoder")
    default_sampler = "ddim"  # the samplers benchmark measured pixel UNets only

    def __init__(self, model: TextToImageModel, options: TextFineTuneOptions | None = None):
        super().__init__(model, options or TextFineTuneOptions())
        self.vae = model.vae
        self.text_encoder = model.text_encoder
        make_trainable(self.unet, self.options.adapter, self.options.rank)
        if self.options.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
            self.vae.enable_gradient_checkpointing()
        self.class_pixels: torch.Tensor | None = None  # class images in [-1, 1], set by api.adapt
        self._latents: dict[str, torch.Tensor] = {}

    @property
    def needs_class_images(self) -> int:
        """How many class images ``api.adapt`` must draw with the source pipeline before training (0: none)."""
        return self.options.class_images if self.options.class_prompt and self.options.prior_weight > 0 else 0

    def prompted(self, prompt: str | None, guidance_scale: float | None) -> None:
        """Sample with ``prompt`` and ``guidance_scale`` instead of the run's (None keeps each); a model with no
        prompt either way is one clear error."""
        changes = {key: value for key, value in (("prompt", prompt), ("guidance_scale", guidance_scale)) if value is not None}
        self.options = dataclasses.replace(self.options, **changes)
        self.sampler()

    def _cached_latents(self, images: torch.Tensor) -> torch.Tensor:
        """Latents of ``images``, each distinct image encoded once and alone: a latent must not depend on the batch it
        was first met in (kernels are chosen by shape), or a resumed run would drift from an uninterrupted one."""
        keys = [hashlib.sha1(image.detach().cpu().numpy().tobytes()).hexdigest() for image in images]
        for index, key in enumerate(keys):
            if key not in self._latents:
                self._latents[key] = self.model.encode(images[index : index + 1])[0]
        return torch.stack([self._latents[key] for key in keys]).to(images.device)

    def _states(self, prompts: list[str]) -> torch.Tensor:
        unique = sorted(set(prompts))
        states = self.model.embed(unique)
        return states[[unique.index(prompt) for prompt in prompts]]

    def _denoising_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One UNet pass on the noised instance latents and as many class latents (module docstring), with
        :func:`diffusion_loss`'s pieces, ``instance`` (L_inst), ``prior`` (L_prior) and ``total``."""
        count = batch.images.shape[0]
        latents = self._cached_latents(batch.images)
        prompts = [self.options.prompt] * count
        if self.needs_class_images:
            if self.class_pixels is None:
                raise TenshotError("text-to-image finetune: no class images were drawn; adapt through tenshot.adapt")
            picks = torch.randint(len(self.class_pixels), (count,), generator=batch.generator)
            latents = torch.cat([latents, self._cached_latents(self.class_pixels[picks].to(latents.device))])
            prompts += [self.options.class_prompt] * count
        unet = Conditioned(self.unet, self._states(prompts))
        terms = diffusion_loss(unet, self.model.schedule, latents, batch.generator, self.options.snr_gamma)
        instance = terms["weighted"][:count].mean()
        prior = terms["weighted"][count:].mean() if len(prompts) > count else torch.zeros_like(instance)
        return {**terms, "instance": instance, "prior": prior, "total": instance + self.options.prior_weight * prior}

    def losses(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        terms = self._denoising_terms(batch)
        return {"total": terms["total"], "instance": terms["instance"].detach(), "prior": terms["prior"].detach()}

    def sampler(self) -> PromptSampler:
        return PromptSampler(self.model, self.options.prompt, self.options.guidance_scale)

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, **settings) -> torch.Tensor:
        """Images in [-1, 1] under the run's prompt with guidance (:class:`PromptSampler`)."""
        return self.sampler().sample(noise, **settings)


class TextDomainStudio(TextFineTune):
    """DreamBooth with DomainStudio's pairwise-similarity and high-frequency terms (module docstring)."""

    name = "domainstudio"
    frozen_modules = ("vae", "text_encoder", "source")

    def __init__(self, model: TextToImageModel, options: TextDomainStudioOptions | None = None):
        super().__init__(model, options or TextDomainStudioOptions())
        self.source: torch.nn.Module | None = None  # built by setup(): sampling a run needs no second UNet

    def setup(self, target: torch.Tensor) -> None:
        """The frozen copy of the source UNet whose predictions give the source distances (before any step)."""
        self.source = frozen_source_copy(self.unet)

    def losses(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        count = batch.images.shape[0]
        if count < 3:
            raise TenshotError(f"domainstudio needs at least 3 images per micro-batch for its pairwise losses, got {count}; raise --batch-size")
        if self.source is None:
            raise RuntimeError("TextDomainStudio.setup() builds the source UNet before training")
        terms = self._denoising_terms(batch)
        schedule = self.model.schedule
        x_t, t = terms["x_t"][:count], terms["t"][:count]
        adapted = self.model.decode(terms["prediction"].x0[:count])
        with torch.no_grad():
            states = self._states([self.options.class_prompt] * count)
            output = self.source(x_t, t, encoder_hidden_states=states.to(x_t.dtype)).sample.float()
            source = self.model.decode(schedule.predict(output, x_t, t).x0)
        kl = {"direction": "source-to-adapted", "reduction": "entries"}
        adapted_hf = high_frequency(adapted)
        image_kl = pairwise_similarity_kl(adapted, source, **kl)
        hf_kl = pairwise_similarity_kl(adapted_hf, high_frequency(source), **kl)
        hf_mse = F.mse_loss(adapted_hf, high_frequency(batch.images.float()))
        options = self.options
        total = terms["total"] + options.pair_weight * image_kl + options.hf_pair_weight * hf_kl + options.hf_mse_weight * hf_mse
        return {
            "total": total, "instance": terms["instance"].detach(), "prior": terms["prior"].detach(),
            "image_kl": image_kl.detach(), "hf_kl": hf_kl.detach(), "hf_mse": hf_mse.detach(),
        }  # fmt: skip


class TextLoRA(TextFineTune):
    """``--method lora`` on a text-to-image model: DreamBooth's losses on a LoRA of the UNet."""

    name = "lora"


TEXT_METHODS: dict[str, tuple[type, type]] = {
    "finetune": (TextFineTuneOptions, TextFineTune),
    "lora": (TextLoRAOptions, TextLoRA),
    "domainstudio": (TextDomainStudioOptions, TextDomainStudio),
}
