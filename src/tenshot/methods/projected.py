"""A projected discriminator on EfficientNet-Lite0 (Projected GAN, Sauer et al. NeurIPS 2021, as GDD uses it:
METHODS.md 3.3): frozen pretrained features, frozen random projections, trainable spectral-norm heads.

For images ``x`` in [-1, 1], ``(B, 3, H, W)``:

1. Input path: bilinear resize to ``resolution`` px (128 by default; the code's 224 costs three times as much
   on a CPU, METHODS.md "How tenshot applies them"), [-1, 1] -> [0, 1], ImageNet mean/std.
2. Frozen EL0 (:class:`~tenshot.models.features.EfficientNetLite0`): the outputs of its last blocks at strides
   4, 8, 16 and 32 (24, 40, 112 and 320 channels; 32, 16, 8 and 4 px at 128 px input), the four levels of
   Projected GAN's EfficientNet.
3. Cross-channel mixing (CCM), frozen and random: a 1x1 convolution per level to c, 2c, 4c, 8c channels
   (c = ``channels``, 64 as in GDD's ``cout=64, expand=True``).
4. Cross-scale mixing (CSM), frozen and random, top-down: the coarsest CCM map is upsampled x2 (bilinear) and
   1x1-convolved to half its channels; each finer level adds that to its own CCM map, upsamples x2 and convolves
   to half the channels (the finest keeps c). The four mixed maps have c, c, 2c, 4c channels at twice each
   level's resolution (64, 32, 16, 8 px at 128 px input).
5. A trainable head per level: spectral-norm 4x4 stride-2 convolutions, each with batch norm and
   LeakyReLU(0.2), halve the map down to 8 px (Projected GAN's widths: 128 channels at 32 px, 256 at 16 px,
   512 at 8 px, capped at ``head_width``), then a spectral-norm 4x4 convolution to one channel gives a 5x5
   map of logits. A level already smaller than 8 px (inputs under 128 px) ends at its own size with a
   kernel of half that size.

:meth:`ProjectedDiscriminator.forward` returns ``(B, L)``: every head's logits of one image in a row, the
layout the GDD losses average over. The EL0 features keep their graph only when the images require grad
(the generator's phase and R1), so the discriminator's own phase runs EL0 without autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ..models.features import IMAGENET_MEAN, IMAGENET_STD, EfficientNetLite0

# EL0 block outputs at strides 4, 8, 16, 32 (see tenshot.models.features.STAGE_ENDS) and their channels
FEATURE_BLOCKS = (2, 4, 10, 15)
FEATURE_CHANNELS = (24, 40, 112, 320)
FEATURE_STRIDES = (4, 8, 16, 32)
HEAD_END = 8
# Projected GAN's head width at each resolution a head block outputs
HEAD_WIDTHS = {4: 512, 8: 512, 16: 256, 32: 128, 64: 64, 128: 64, 256: 32}


class _CrossScaleMixing(nn.Module):
    """Step 4 of the module docstring for one level: (coarser mixed map + this level's CCM map) -> x2 -> 1x1 conv."""

    def __init__(self, channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor, coarser: torch.Tensor | None = None) -> torch.Tensor:
        if coarser is not None:
            x = x + coarser
        return self.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))


def _head(channels: int, size: int, end: int, head_width: int) -> nn.Sequential:
    """Step 5: spectral-norm down blocks from ``size`` to ``end`` px, then a conv to one channel of logits."""
    layers: list[nn.Module] = []
    while size > end:
        width = min(head_width, HEAD_WIDTHS.get(size // 2, head_width))
        layers += [
            spectral_norm(nn.Conv2d(channels, width, kernel_size=4, stride=2, padding=1, bias=False)),
            nn.BatchNorm2d(width),
            nn.LeakyReLU(0.2),
        ]
        channels, size = width, size // 2
    kernel = 4 if end >= 8 else max(1, end // 2)
    layers.append(spectral_norm(nn.Conv2d(channels, 1, kernel_size=kernel, bias=False)))
    return nn.Sequential(*layers)


class ProjectedDiscriminator(nn.Module):
    """Frozen EL0 features and random projections, trainable heads (module docstring). ``heads`` holds every
    trainable parameter; ``projection`` is frozen but random, so it is saved with the heads."""

    def __init__(self, resolution: int = 128, channels: int = 64, head_width: int = 512):
        super().__init__()
        self.resolution = resolution
        self.features = EfficientNetLite0()
        mixed = [channels * 2**level for level in range(len(FEATURE_BLOCKS))]  # c, 2c, 4c, 8c
        outputs = [channels] + mixed[:-1]  # c, c, 2c, 4c
        self.projection = nn.ModuleDict(
            {
                "channel": nn.ModuleList(nn.Conv2d(c_in, c_out, kernel_size=1) for c_in, c_out in zip(FEATURE_CHANNELS, mixed)),
                "scale": nn.ModuleList(_CrossScaleMixing(c_in, c_out) for c_in, c_out in zip(mixed, outputs)),
            }
        ).requires_grad_(False)
        sizes = [2 * (resolution // stride) for stride in FEATURE_STRIDES]
        end = min(HEAD_END, sizes[-1])
        self.heads = nn.ModuleList(_head(c, size, end, head_width) for c, size in zip(outputs, sizes))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def saved_state(self) -> dict[str, torch.Tensor]:
        """Everything but the pretrained EL0 weights: the random projections and the heads (with their buffers)."""
        return {name: value for name, value in self.state_dict().items() if not name.startswith("features.")}

    def projected_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Steps 1 to 4, finest level first; differentiable with respect to ``images`` when they require grad."""
        x = F.interpolate(images, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        x = ((x + 1) / 2 - self.mean) / self.std
        with torch.set_grad_enabled(torch.is_grad_enabled() and images.requires_grad):
            levels = self.features.block_outputs(x, FEATURE_BLOCKS)
            mixed = [conv(level) for conv, level in zip(self.projection["channel"], levels)]
            scale = self.projection["scale"]
            fused = [scale[-1](mixed[-1])]
            for index in range(len(mixed) - 2, -1, -1):
                fused.insert(0, scale[index](mixed[index], fused[0]))
        return fused

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` logits, at least fp32 (autocast leaves them bf16): each head's map flattened, side by side."""
        features = self.projected_features(images)
        logits = torch.cat([head(level).flatten(1) for head, level in zip(self.heads, features)], dim=1)
        return logits.to(torch.promote_types(logits.dtype, torch.float32))
