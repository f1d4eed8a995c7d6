"""A reference ADM UNet (guided-diffusion / improved-diffusion), written for the tests from the published
architecture (Dhariwal & Nichol 2021, App. A; Nichol & Dhariwal 2021) with the official state-dict names, so that
tenshot's converter is checked against the network it claims to convert. OpenAI's code is not a dependency."""

from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """[cos(t f), sin(t f)] with f_i = 10000^(-i / (dim / 2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels)


class ResBlock(nn.Module):
    def __init__(self, channels, emb, out, scale_shift, up=False, down=False):
        super().__init__()
        self.scale_shift, self.up, self.down = scale_shift, up, down
        self.in_layers = nn.Sequential(norm(channels), nn.SiLU(), nn.Conv2d(channels, out, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb, 2 * out if scale_shift else out))
        self.out_layers = nn.Sequential(norm(out), nn.SiLU(), nn.Dropout(0.0), nn.Conv2d(out, out, 3, padding=1))
        self.skip_connection = nn.Identity() if out == channels else nn.Conv2d(channels, out, 1)

    def _resample(self, x):
        if self.up:
            return nn.functional.interpolate(x, scale_factor=2, mode="nearest")
        if self.down:
            return nn.functional.avg_pool2d(x, 2)
        return x

    def forward(self, x, emb):
        h = self.in_layers[1](self.in_layers[0](x))
        h, x = self._resample(h), self._resample(x)
        h = self.in_layers[2](h)
        e = self.emb_layers(emb)[..., None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[3](self.out_layers[2](self.out_layers[1](h)))
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    def __init__(self, channels, heads, new_order):
        super().__init__()
        self.heads, self.new_order = heads, new_order
        self.norm = norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x, emb=None):
        b, c, *spatial = x.shape
        qkv = self.qkv(self.norm(x.reshape(b, c, -1)))
        width = c // self.heads
        if self.new_order:
            q, k, v = (part.reshape(b * self.heads, width, -1) for part in qkv.chunk(3, dim=1))
        else:
            q, k, v = qkv.reshape(b * self.heads, 3 * width, -1).split(width, dim=1)
        scale = 1 / math.sqrt(math.sqrt(width))
        weight = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale), dim=-1)
        h = torch.einsum("bts,bcs->bct", weight, v).reshape(b, c, -1)
        return x + self.proj_out(h).reshape(b, c, *spatial)


class Downsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x, emb=None):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x, emb=None):
        return self.conv(nn.functional.interpolate(x, scale_factor=2, mode="nearest"))


class Sequence(nn.ModuleList):
    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, (ResBlock, AttentionBlock, Downsample, Upsample)) else layer(x)
        return x


class ADMUNet(nn.Module):
    """``attention``: the levels (0 = full resolution) with self-attention; heads by ``num_heads`` or
    ``num_head_channels`` (> 0 wins), qkv in the legacy or the new order."""

    def __init__(self, model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention=(1,), num_heads=1, num_head_channels=-1,
                 scale_shift=False, resblock_updown=False, learn_sigma=False, new_order=False):  # fmt: skip
        super().__init__()
        emb = 4 * model_channels
        self.model_channels = model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb), nn.SiLU(), nn.Linear(emb, emb))

        def attention_block(ch):
            return AttentionBlock(ch, ch // num_head_channels if num_head_channels > 0 else num_heads, new_order)

        self.input_blocks = nn.ModuleList([Sequence([nn.Conv2d(3, model_channels, 3, padding=1)])])
        chans, ch = [model_channels], model_channels
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [ResBlock(ch, emb, model_channels * mult, scale_shift)]
                ch = model_channels * mult
                if level in attention:
                    layers.append(attention_block(ch))
                self.input_blocks.append(Sequence(layers))
                chans.append(ch)
            if level < len(channel_mult) - 1:
                self.input_blocks.append(Sequence([ResBlock(ch, emb, ch, scale_shift, down=True) if resblock_updown else Downsample(ch)]))
                chans.append(ch)
        self.middle_block = Sequence([ResBlock(ch, emb, ch, scale_shift), attention_block(ch), ResBlock(ch, emb, ch, scale_shift)])
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + chans.pop(), emb, model_channels * mult, scale_shift)]
                ch = model_channels * mult
                if level in attention:
                    layers.append(attention_block(ch))
                if level and i == num_res_blocks:
                    layers.append(ResBlock(ch, emb, ch, scale_shift, up=True) if resblock_updown else Upsample(ch))
                self.output_blocks.append(Sequence(layers))
        self.out = nn.Sequential(norm(ch), nn.SiLU(), nn.Conv2d(ch, 6 if learn_sigma else 3, 3, padding=1))

    def forward(self, x, t):
        emb = self.time_embed(timestep_embedding(t, self.model_channels))
        skips, h = [], x
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)
