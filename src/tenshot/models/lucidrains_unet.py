"""The Unet of lucidrains' ``denoising-diffusion-pytorch`` (Phasic Content Fusing's backbone), written for tenshot.

No diffusers class holds it, so a converted checkpoint (:mod:`tenshot.models.convert_lucidrains`) becomes this
``ModelMixin``: ``save_pretrained`` / ``from_pretrained`` like a ``UNet2DModel``, and its ``forward(sample,
timestep).sample`` is what the samplers and methods call. Two generations of the package's architecture:

- ``layout="0.28"`` (the release Phasic's code pins): residual blocks of weight-standardised 3x3 convolutions
  (Qiao et al. 2019) with GroupNorm, a 4x4 stride-2 convolution to downsample, linear attention (Shen et al. 2021:
  softmax over q's channels and k's positions, v divided by the pixel count) after a channel LayerNorm at every
  level, full softmax attention in the middle; the final block sees ``2 * dim`` channels.
- ``layout="2"`` (2.x, current on PyPI): plain convolutions with RMSNorm (``normalize(x) * g * sqrt(C)``),
  pixel-unshuffle then a 1x1 convolution to downsample, learned memory keys/values prepended to k and v, linear
  attention at every level but those marked ``full_attn`` (by default the last), heads and head width per level.

Both: a 7x7 stem, a sinusoidal time embedding ``[sin, cos]`` of ``dim`` features (frequencies
``theta^(-i / (dim/2 - 1))``) through Linear-GELU-Linear to ``4 dim``, resnet blocks with a scale-shift time
modulation ``norm(h) (1 + scale) + shift``, two blocks and one attention per level, skip concatenation of both
blocks' outputs, nearest 2x upsampling and a 3x3 convolution, a final resnet block on the stem's output
concatenated, and a 1x1 convolution out. Dropout and self-conditioning are left out (inference and adaptation of
unconditional models only).
"""

from __future__ import annotations

import math
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d import UNet2DOutput
from torch import nn

LAYOUTS = ("0.28", "2")


class WeightStandardizedConv2d(nn.Conv2d):
    """A convolution whose kernel is standardised per output channel before use (0.28's blocks)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = 1e-5 if x.dtype == torch.float32 else 1e-3
        weight = self.weight
        mean = weight.mean(dim=(1, 2, 3), keepdim=True)
        var = weight.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
        return F.conv2d(x, (weight - mean) * (var + eps).rsqrt(), self.bias, self.stride, self.padding, self.dilation, self.groups)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over channels with a gain and no bias (0.28)."""

    def __init__(self, channels: int):
        super().__init__()
        self.g = nn.Parameter(torch.ones(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = 1e-5 if x.dtype == torch.float32 else 1e-3
        var = torch.var(x, dim=1, unbiased=False, keepdim=True)
        mean = torch.mean(x, dim=1, keepdim=True)
        return (x - mean) * (var + eps).rsqrt() * self.g


class ChannelRMSNorm(nn.Module):
    """``normalize(x, dim=1) * g * sqrt(C)`` (2.x)."""

    def __init__(self, channels: int):
        super().__init__()
        self.scale = channels**0.5
        self.g = nn.Parameter(torch.ones(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * self.g * self.scale


def _norm(layout: str, channels: int) -> nn.Module:
    return ChannelLayerNorm(channels) if layout == "0.28" else ChannelRMSNorm(channels)


class Block(nn.Module):
    """conv 3x3, norm, optional ``(1 + scale), + shift``, SiLU."""

    def __init__(self, layout: str, dim_in: int, dim_out: int, groups: int):
        super().__init__()
        conv = WeightStandardizedConv2d if layout == "0.28" else nn.Conv2d
        self.proj = conv(dim_in, dim_out, 3, padding=1)
        self.norm = nn.GroupNorm(groups, dim_out) if layout == "0.28" else ChannelRMSNorm(dim_out)

    def forward(self, x: torch.Tensor, scale_shift: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x = self.norm(self.proj(x))
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x * (scale + 1) + shift
        return F.silu(x)


class ResnetBlock(nn.Module):
    """``block2(block1(x, scale-shift from SiLU-Linear(t))) + res_conv(x)``."""

    def __init__(self, layout: str, dim_in: int, dim_out: int, time_dim: int, groups: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, dim_out * 2))
        self.block1 = Block(layout, dim_in, dim_out, groups)
        self.block2 = Block(layout, dim_out, dim_out, groups)
        self.res_conv = nn.Conv2d(dim_in, dim_out, 1) if dim_in != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor) -> torch.Tensor:
        scale_shift = self.mlp(time_emb)[:, :, None, None].chunk(2, dim=1)
        return self.block2(self.block1(x, scale_shift)) + self.res_conv(x)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, heads * d, H, W) -> (B, heads, d, H * W)."""
    b, c, h, w = x.shape
    return x.reshape(b, heads, c // heads, h * w)


class HeadAttention(nn.Module):
    """What both attentions share: the 1x1 qkv projection split into heads, and in 2.x an RMSNorm of the input,
    ``num_mem_kv`` learned keys and values (laid out ``memory_shape``) and the input added back."""

    def __init__(self, layout: str, dim: int, heads: int, dim_head: int, to_out: nn.Module, memory_shape: tuple[int, ...]):
        super().__init__()
        self.layout, self.heads, self.scale = layout, heads, dim_head**-0.5
        if layout == "2":
            self.norm = ChannelRMSNorm(dim)
            self.mem_kv = nn.Parameter(torch.zeros(2, heads, *memory_shape))
        self.to_qkv = nn.Conv2d(dim, heads * dim_head * 3, 1, bias=False)
        self.to_out = to_out

    def heads_of(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v as (B, heads, d, H * W), of the normalised input in 2.x."""
        if self.layout == "2":
            x = self.norm(x)
        return tuple(_heads(part, self.heads) for part in self.to_qkv(x).chunk(3, dim=1))

    def memory(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mem_kv[0].expand(batch, -1, -1, -1), self.mem_kv[1].expand(batch, -1, -1, -1)

    def output(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``to_out`` of the heads' output (B, heads, H * W or d, ...) reshaped to ``x``'s, plus ``x`` in 2.x."""
        out = self.to_out(out.reshape(x.shape[0], -1, *x.shape[2:]))
        return out + x if self.layout == "2" else out


class LinearAttention(HeadAttention):
    """Linear attention: ``out = (softmax_n(k) v^T)^T softmax_d(q) * d^-1/2`` per head; 0.28 divides v by the
    pixel count, 2.x prepends its memory to k and v."""

    def __init__(self, layout: str, dim: int, heads: int, dim_head: int, num_mem_kv: int):
        super().__init__(layout, dim, heads, dim_head, nn.Sequential(nn.Conv2d(heads * dim_head, dim, 1), _norm(layout, dim)), (dim_head, num_mem_kv))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.heads_of(x)
        if self.layout == "2":
            memory_k, memory_v = self.memory(x.shape[0])
            k, v = torch.cat((memory_k, k), dim=-1), torch.cat((memory_v, v), dim=-1)
        else:
            v = v / (x.shape[2] * x.shape[3])
        q = q.softmax(dim=-2) * self.scale
        context = torch.einsum("bhdn,bhen->bhde", k.softmax(dim=-1), v)
        return self.output(torch.einsum("bhde,bhdn->bhen", context, q), x)


class Attention(HeadAttention):
    """Softmax attention over pixels, ``softmax(q k^T d^-1/2) v`` per head; 2.x prepends its memory to k and v."""

    def __init__(self, layout: str, dim: int, heads: int, dim_head: int, num_mem_kv: int):
        super().__init__(layout, dim, heads, dim_head, nn.Conv2d(heads * dim_head, dim, 1), (num_mem_kv, dim_head))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (part.transpose(-1, -2) for part in self.heads_of(x))
        if self.layout == "2":
            memory_k, memory_v = self.memory(x.shape[0])
            k, v = torch.cat((memory_k, k), dim=-2), torch.cat((memory_v, v), dim=-2)
        if self.layout == "0.28":  # each release's order of the scaling, so float32 outputs agree to the last bits
            similarity = (q * self.scale) @ k.transpose(-1, -2)
        else:
            similarity = (q @ k.transpose(-1, -2)) * self.scale
        return self.output((similarity.softmax(dim=-1) @ v).transpose(-1, -2), x)


class PreNormResidual(nn.Module):
    """``x + fn(norm(x))``: how 0.28 wraps each attention (hence its state dict's ``fn.norm`` and ``fn.fn``)."""

    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.fn = nn.Module()
        self.fn.norm = ChannelLayerNorm(dim)
        self.fn.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn.fn(self.fn.norm(x)) + x


class Downsample(nn.Module):
    """Half resolution: a 4x4 stride-2 convolution (0.28), or pixel-unshuffle and a 1x1 convolution (2.x)."""

    def __init__(self, layout: str, dim_in: int, dim_out: int):
        super().__init__()
        self.unshuffle = layout == "2"
        self.conv = nn.Conv2d(dim_in * 4, dim_out, 1) if self.unshuffle else nn.Conv2d(dim_in, dim_out, 4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pixel_unshuffle(x, 2) if self.unshuffle else x)


class Upsample(nn.Module):
    """Nearest 2x, then a 3x3 convolution."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.conv = nn.Conv2d(dim_in, dim_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def sinusoidal_embedding(times: torch.Tensor, dim: int, theta: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[sin(t f_i), cos(t f_i)]`` with ``f_i = theta^(-i / (dim/2 - 1))``, i < dim/2: the frequencies in float32
    as the package computes them, the angles in ``dtype``."""
    half = dim // 2
    frequencies = torch.exp(torch.arange(half, device=times.device) * -(math.log(theta) / (half - 1))).to(dtype)
    angles = times.to(dtype)[:, None] * frequencies[None, :]
    return torch.cat((angles.sin(), angles.cos()), dim=-1)


class LucidrainsUNet(ModelMixin, ConfigMixin):
    """denoising-diffusion-pytorch's ``Unet`` (module docstring) as a diffusers model; ``forward(sample, timestep)``
    returns ``.sample`` of ``out_channels``. ``full_attn``, ``attn_heads`` and ``attn_dim_head`` are per level
    (2.x; 0.28 has linear attention of 4 heads of 32 at every level and full attention in the middle)."""

    @register_to_config
    def __init__(
        self,
        layout: str = "2",
        sample_size: int = 32,
        in_channels: int = 3,
        out_channels: int = 3,
        dim: int = 64,
        init_dim: int | None = None,
        dim_mults: tuple[int, ...] = (1, 2, 4, 8),
        resnet_block_groups: int = 8,
        full_attn: tuple[bool, ...] | None = None,
        attn_heads: tuple[int, ...] | None = None,
        attn_dim_head: tuple[int, ...] | None = None,
        num_mem_kv: int = 4,
        sinusoidal_theta: float = 10000.0,
    ):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        levels = len(dim_mults)
        init_dim = init_dim or dim
        full_attn = tuple(full_attn) if full_attn else (False,) * (levels - 1) + (True,)
        heads = tuple(attn_heads) if attn_heads else (4,) * levels
        head_dims = tuple(attn_dim_head) if attn_dim_head else (32,) * levels
        if layout == "0.28":
            full_attn, heads, head_dims = (False,) * levels, (4,) * levels, (32,) * levels
        dims = [init_dim, *(dim * m for m in dim_mults)]
        pairs = list(zip(dims[:-1], dims[1:]))
        time_dim = dim * 4
        self.init_conv = nn.Conv2d(in_channels, init_dim, 7, padding=3)
        self.time_mlp = nn.Sequential(nn.Identity(), nn.Linear(dim, time_dim), nn.GELU(), nn.Linear(time_dim, time_dim))

        def resnet(a: int, b: int) -> ResnetBlock:
            return ResnetBlock(layout, a, b, time_dim, resnet_block_groups)

        def attention(width: int, level: int, full: bool) -> nn.Module:
            kind = Attention if full else LinearAttention
            inner = kind(layout, width, heads[level], head_dims[level], num_mem_kv)
            return PreNormResidual(width, inner) if layout == "0.28" else inner

        self.downs = nn.ModuleList()
        for level, (a, b) in enumerate(pairs):
            last = level == levels - 1
            sampler = nn.Conv2d(a, b, 3, padding=1) if last else Downsample(layout, a, b)
            self.downs.append(nn.ModuleList([resnet(a, a), resnet(a, a), attention(a, level, full_attn[level]), sampler]))
        mid = dims[-1]
        self.mid_block1 = resnet(mid, mid)
        self.mid_attn = attention(mid, levels - 1, True)
        self.mid_block2 = resnet(mid, mid)
        self.ups = nn.ModuleList()
        for index, (a, b) in enumerate(reversed(pairs)):
            level = levels - 1 - index
            sampler = nn.Conv2d(b, a, 3, padding=1) if level == 0 else Upsample(b, a)
            self.ups.append(nn.ModuleList([resnet(b + a, b), resnet(b + a, b), attention(b, level, full_attn[level]), sampler]))
        final = dim if layout == "0.28" else init_dim
        self.final_res_block = resnet(final * 2, final)
        self.final_conv = nn.Conv2d(final, out_channels, 1)

    @property
    def bottleneck_channels(self) -> int:
        return self.mid_block1.block1.proj.out_channels

    def time_embedding(self, sample: torch.Tensor, timestep: torch.Tensor | int) -> torch.Tensor:
        times = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(sample.shape[0])
        precision = torch.float64 if sample.dtype == torch.float64 else torch.float32
        return self.time_mlp(sinusoidal_embedding(times, self.config.dim, self.config.sinusoidal_theta, precision).to(sample.dtype))

    def _encoder(self, sample: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """The stem and every level down: (bottleneck input, skip states, stem output)."""
        x = self.init_conv(sample)
        stem, skips = x, []
        for block1, block2, attention, sampler in self.downs:
            x = block1(x, emb)
            skips.append(x)
            x = attention(block2(x, emb))
            skips.append(x)
            x = sampler(x)
        return x, skips, stem

    def encode(self, sample: torch.Tensor, timestep: torch.Tensor | int) -> torch.Tensor:
        """The encoder E(x_t, t) of Phasic Content Fusing: stem and every level down, the bottleneck's shape."""
        return self._encoder(sample, self.time_embedding(sample, timestep))[0]

    def forward_with_bottleneck(self, sample: torch.Tensor, timestep: torch.Tensor | int, hook=None) -> torch.Tensor:
        """The prediction, with the middle's output ``h`` replaced by ``hook(h)`` when a hook is given."""
        emb = self.time_embedding(sample, timestep)
        x, skips, stem = self._encoder(sample, emb)
        x = self.mid_block2(self.mid_attn(self.mid_block1(x, emb)), emb)
        if hook is not None:
            x = hook(x)
        for block1, block2, attention, sampler in self.ups:
            x = block1(torch.cat((x, skips.pop()), dim=1), emb)
            x = attention(block2(torch.cat((x, skips.pop()), dim=1), emb))
            x = sampler(x)
        return self.final_conv(self.final_res_block(torch.cat((x, stem), dim=1), emb))

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | int, return_dict: bool = True):
        output = self.forward_with_bottleneck(sample, timestep)
        return UNet2DOutput(sample=output) if return_dict else (output,)
