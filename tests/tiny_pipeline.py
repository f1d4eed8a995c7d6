"""A tiny Stable Diffusion pipeline of random weights, built from configs: the tests' text-to-image model (16 px,
a VAE of factor 2) and ``bench/text_to_image_gpu.py``'s (512 px, a VAE of factor 8 as Stable Diffusion's)."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def build_tiny_pipeline(folder: Path, pixels: int = 16, vae_levels: int = 2) -> Path:
    """A ``StableDiffusionPipeline`` folder in diffusers' layout: a character-level CLIP tokenizer and text encoder,
    a two-level UNet on ``pixels / 2^(vae_levels - 1)`` latent pixels with cross-attention at the first level."""
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    letters = list("abcdefghijklmnopqrstuvwxyz[]")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    vocab.update({token: len(vocab) + i for i, token in enumerate(letters + [f"{c}</w>" for c in letters])})
    words = folder.parent / "vocabulary"
    words.mkdir(parents=True, exist_ok=True)
    (words / "vocab.json").write_text(json.dumps(vocab))
    (words / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(words / "vocab.json"), str(words / "merges.txt"), model_max_length=16)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                       max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    )  # fmt: skip
    unet = UNet2DConditionModel(
        sample_size=pixels // 2 ** (vae_levels - 1), in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    )  # fmt: skip
    vae = AutoencoderKL(
        block_out_channels=(16,) + (32,) * (vae_levels - 1), latent_channels=4, down_block_types=("DownEncoderBlock2D",) * vae_levels,
        up_block_types=("UpDecoderBlock2D",) * vae_levels, norm_num_groups=8, sample_size=pixels,
    )  # fmt: skip
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, steps_offset=1)
    pipeline = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)  # fmt: skip
    pipeline.save_pretrained(folder)
    return folder
