"""A diffusers ``UNet2DModel`` forward pass with a hook at its bottleneck, and its encoder alone.

Phasic Content Fusing (Hu et al., ICCV 2023, Sec. 3.2) replaces the UNet's bottleneck features by a fusion of
them with the encoder features of a condition image. diffusers' ``UNet2DModel.forward`` has no such hook, so
:func:`forward_with_bottleneck` is that forward written out step by step (time embedding, ``conv_in``, the
down blocks and their skip states, the mid block, **the hook**, the up blocks, norm/act/``conv_out``), the
same sequence as ``UNet2DModel.forward`` of diffusers 0.30 to 0.42; with no hook it returns exactly what
``unet(x, t).sample`` returns (tested). :func:`encode` stops after the down blocks: the UNet encoder E of the
paper, whose output has the bottleneck's shape. A converted denoising-diffusion-pytorch network
(:class:`tenshot.models.lucidrains_unet.LucidrainsUNet`) carries both itself; these functions hand it over.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..errors import TenshotError


def _own(unet) -> bool:
    from .lucidrains_unet import LucidrainsUNet

    return isinstance(unet, LucidrainsUNet)


def bottleneck_channels(unet) -> int:
    """Channels C at the bottleneck: the last down block's output, which the mid block keeps."""
    return unet.bottleneck_channels if _own(unet) else int(unet.config.block_out_channels[-1])


def _check_unconditional(unet) -> None:
    if getattr(unet, "class_embedding", None) is not None:
        raise TenshotError("a bottleneck fusion needs an unconditional UNet2DModel (this one is class-conditional)")


def _time_embedding(unet, sample: torch.Tensor, timestep: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-sample times, time embedding), as ``UNet2DModel.forward`` step 1."""
    times = torch.as_tensor(timestep, device=sample.device)
    if times.ndim == 0:
        times = times[None]
    times = times * torch.ones(sample.shape[0], dtype=times.dtype, device=sample.device)
    return times, unet.time_embedding(unet.time_proj(times).to(dtype=unet.dtype))


def _down(unet, sample: torch.Tensor, emb: torch.Tensor):
    """``conv_in`` and the down blocks: (bottleneck features, skip states, skip sample)."""
    if unet.config.center_input_sample:
        sample = 2 * sample - 1.0
    skip_sample = sample
    hidden = unet.conv_in(sample)
    residuals = (hidden,)
    for block in unet.down_blocks:
        if hasattr(block, "skip_conv"):
            hidden, states, skip_sample = block(hidden_states=hidden, temb=emb, skip_sample=skip_sample)
        else:
            hidden, states = block(hidden_states=hidden, temb=emb)
        residuals += states
    return hidden, residuals, skip_sample


def encode(unet, sample: torch.Tensor, timestep: torch.Tensor | int) -> torch.Tensor:
    """The UNet encoder E(x_t, t): ``conv_in`` and every down block, ``(B, C, H / 2^(L-1), W / 2^(L-1))``."""
    if _own(unet):
        return unet.encode(sample, timestep)
    _check_unconditional(unet)
    _, emb = _time_embedding(unet, sample, timestep)
    return _down(unet, sample, emb)[0]


def forward_with_bottleneck(
    unet,
    sample: torch.Tensor,
    timestep: torch.Tensor | int,
    hook: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``unet(sample, timestep).sample`` with the mid block's output ``h`` replaced by ``hook(h)``.

    ``hook`` must keep the shape of ``h``; ``None`` runs the plain UNet.
    """
    if _own(unet):
        return unet.forward_with_bottleneck(sample, timestep, hook)
    _check_unconditional(unet)
    times, emb = _time_embedding(unet, sample, timestep)
    hidden, residuals, skip_sample = _down(unet, sample, emb)
    if unet.mid_block is not None:
        hidden = unet.mid_block(hidden, emb)
    if hook is not None:
        hidden = hook(hidden)
    skip_sample = None
    for block in unet.up_blocks:
        states = residuals[-len(block.resnets):]
        residuals = residuals[: -len(block.resnets)]
        if hasattr(block, "skip_conv"):
            hidden, skip_sample = block(hidden, states, emb, skip_sample)
        else:
            hidden = block(hidden, states, emb)
    hidden = unet.conv_out(unet.conv_act(unet.conv_norm_out(hidden)))
    if skip_sample is not None:
        hidden = hidden + skip_sample
    if unet.config.time_embedding_type == "fourier":
        hidden = hidden / times.reshape((hidden.shape[0], *([1] * (hidden.ndim - 1))))
    return hidden
