"""Text-to-image models: a Stable Diffusion pipeline folder read as a :class:`DiffusionModel` in latent space.

A folder in diffusers' ``StableDiffusionPipeline`` layout (``unet/`` a ``UNet2DConditionModel``, ``vae/`` an
``AutoencoderKL``, ``text_encoder/`` a ``CLIPTextModel``, ``tokenizer/`` a ``CLIPTokenizer``, ``scheduler/``) is
the source of DomainStudio's text-to-image half (METHODS.md 2.5). The UNet works on latents
``z = E(x) * scaling_factor`` (Rombach et al. 2022, Sec. 3); :attr:`TextToImageModel.size` is the image size in
pixels and :attr:`TextToImageModel.noise_shape` the latent shape the samplers start from. The VAE and the text
encoder are frozen; a run saves the whole pipeline back, its UNet adapted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..diffusion.schedule import NoiseSchedule
from ..errors import TenshotError
from .diffusion_model import PIPELINE_FILE, SCHEDULER_FILE, DiffusionModel, unet_class_name

CONDITIONAL_UNET = "UNet2DConditionModel"
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def is_text_to_image(folder: str | Path) -> bool:
    """True for a pipeline folder whose ``unet/`` is a ``UNet2DConditionModel``."""
    return unet_class_name(Path(folder) / "unet") == CONDITIONAL_UNET


class Conditioned(torch.nn.Module):
    """``unet(x, t)`` of a text-conditional UNet with fixed text states ``(B, L, D)``, so that the samplers and
    :func:`tenshot.methods.losses.diffusion_loss` call it like an unconditional one."""

    def __init__(self, unet: torch.nn.Module, states: torch.Tensor):
        super().__init__()
        self.unet = unet
        self.states = states

    def forward(self, x: torch.Tensor, t: torch.Tensor):
        return self.unet(x, t, encoder_hidden_states=self.states.to(x.dtype))


@dataclass
class TextToImageModel(DiffusionModel):
    """A Stable Diffusion pipeline: the UNet and schedule of :class:`DiffusionModel` (in latent space) with the
    frozen VAE, text encoder and tokenizer that map between pixels, prompts and latents."""

    vae: Any
    text_encoder: Any
    tokenizer: Any

    @property
    def latent_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_size(self) -> int:
        size = self.unet.config.sample_size
        return size if isinstance(size, int) else size[0]

    @property
    def size(self) -> int:
        return self.latent_size * self.latent_factor

    @property
    def noise_shape(self) -> tuple[int, int, int]:
        return (self.unet.config.in_channels, self.latent_size, self.latent_size)

    @torch.no_grad()
    def embed(self, prompts: list[str]) -> torch.Tensor:
        """The text encoder's last hidden states ``(B, L, D)`` of ``prompts``, padded to the tokenizer's length."""
        tokens = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt")
        device = next(self.text_encoder.parameters()).device
        return self.text_encoder(tokens.input_ids.to(device))[0]

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Latents ``E(x) * scaling_factor`` of images in [-1, 1]: the posterior's mean, so a cached latent is
        the same whenever it is computed."""
        posterior = self.vae.encode(images.to(self.vae.dtype)).latent_dist
        return posterior.mean.float() * self.vae.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images in about [-1, 1] from latents; differentiable (DomainStudio's terms train through it)."""
        return self.vae.decode((latents / self.vae.config.scaling_factor).to(self.vae.dtype)).sample.float()

    def write(self, folder: Path) -> None:
        """A ``StableDiffusionPipeline`` folder: every component, safetensors weights, ``model_index.json``, and the
        schedule as a ``DDIMScheduler`` (the official code saves its pipelines with one)."""
        import diffusers

        for name in ("unet", "vae", "text_encoder"):
            getattr(self, name).save_pretrained(folder / name, safe_serialization=True)
        self.tokenizer.save_pretrained(folder / "tokenizer")
        (folder / "scheduler").mkdir(parents=True, exist_ok=True)
        scheduler = {"_class_name": "DDIMScheduler", **self.schedule.config, "clip_sample": False}  # DDIM, as the code saves its pipelines
        (folder / "scheduler" / SCHEDULER_FILE).write_text(json.dumps(scheduler, indent=2, default=list) + "\n")
        index = {
            "_class_name": "StableDiffusionPipeline", "_diffusers_version": diffusers.__version__,
            "unet": ["diffusers", CONDITIONAL_UNET], "vae": ["diffusers", type(self.vae).__name__],
            "text_encoder": ["transformers", type(self.text_encoder).__name__], "tokenizer": ["transformers", type(self.tokenizer).__name__],
            "scheduler": ["diffusers", "DDIMScheduler"], "safety_checker": [None, None], "feature_extractor": [None, None],
            "requires_safety_checker": False,
        }  # fmt: skip
        (folder / PIPELINE_FILE).write_text(json.dumps(index, indent=2) + "\n")


def load_text_to_image(folder: Path, device: str | torch.device = "cpu") -> TextToImageModel:
    """A :class:`TextToImageModel` from a pipeline folder; weights from safetensors only, VAE and text encoder
    frozen, x0 never clipped. A missing or unloadable component, or a UNet that takes more than latents and text
    (SDXL, inpainting), is one clear error."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # its per-file bars are noise on a command's stderr
    missing = [name for name in COMPONENTS if not (folder / name).is_dir()]
    if missing:
        raise TenshotError(f"{folder}: a text-to-image pipeline needs {', '.join(COMPONENTS)}/; {', '.join(missing)}/ missing")
    try:
        unet = UNet2DConditionModel.from_pretrained(folder / "unet", use_safetensors=True, low_cpu_mem_usage=False)
        vae = AutoencoderKL.from_pretrained(folder / "vae", use_safetensors=True, low_cpu_mem_usage=False)
        text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
        # latents span about +-4: a scheduler config without clip_sample (Euler's, PNDM's) would get diffusers' True
        schedule = NoiseSchedule({**json.loads((folder / "scheduler" / SCHEDULER_FILE).read_text()), "clip_sample": False})
    except (OSError, ValueError, RuntimeError, TypeError, KeyError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TenshotError(f"{folder}: not a loadable text-to-image pipeline ({message})") from None
    unsupported = [
        reason for reason, found in (
            ("extra conditioning (SDXL's added embeddings)", unet.config.addition_embed_type is not None),
            (f"{unet.config.in_channels} input channels for {vae.config.latent_channels} latent ones (inpainting, instruct-pix2pix)",
             unet.config.in_channels != vae.config.latent_channels),
            (f"cross-attention of width {unet.config.cross_attention_dim} over a text encoder of {text_encoder.config.hidden_size}",
             unet.config.cross_attention_dim != text_encoder.config.hidden_size),
        ) if found
    ]  # fmt: skip
    if unsupported:
        raise TenshotError(f"{folder}: a text-to-image pipeline tenshot does not adapt: its UNet takes {unsupported[0]}; Stable Diffusion 1.x and 2.x do")
    return TextToImageModel(
        unet=unet.to(device).eval(),
        schedule=schedule,
        vae=vae.requires_grad_(False).to(device).eval(),
        text_encoder=text_encoder.requires_grad_(False).to(device).eval(),
        tokenizer=tokenizer,
    )
