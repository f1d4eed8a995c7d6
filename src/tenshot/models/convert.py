"""Checkpoints of the papers' own code as diffusers folders: guided-diffusion / improved-diffusion (ADM) UNets.

ADM (Dhariwal & Nichol 2021; Nichol & Dhariwal 2021) and diffusers' ``UNet2DModel`` are the same network when
``channel_mult[0] == 1`` and every attention layer has the same head width: a sinusoidal time embedding
[cos, sin] of ``model_channels`` dims and a two-layer MLP; per level ``num_res_blocks`` residual blocks
(GroupNorm(32), SiLU, 3x3 conv; the embedding added, or applied as ``norm(h) (1 + scale) + shift`` with
``use_scale_shift_norm``), optional self-attention after each, and a strided-conv (or, with ``resblock_updown``, a
residual block with average pooling) downsampler; a middle of residual block, attention, residual block; the
mirrored decoder with skip concatenation and one block more per level; GroupNorm, SiLU, 3x3 conv out.

Everything but the attention heads, their qkv order and the diffusion settings is read from the state dict
itself: the channels, levels, blocks per level, attention levels, scale-shift norm, resblock up/down and learned
sigma. A learned-sigma output (2 x 3 channels) keeps its first half (the eps prediction) and drops the variance
half: tenshot's samplers use fixed variances. The schedule becomes a diffusers scheduler config: ADM's
``linear`` is diffusers' linear betas scaled by 1000 / T, its ``cosine`` is ``squaredcos_cap_v2``.
Loading uses ``torch.load(weights_only=True)``: a checkpoint runs no code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import TenshotError

NOISE_SCHEDULES = ("linear", "cosine")


@dataclass
class ADMSettings:
    """What an ADM state dict does not record: guided-diffusion's flags of the same names.

    ``num_heads`` or ``num_head_channels`` (the latter wins when > 0), ``use_new_attention_order`` (qkv split
    before the heads) and the diffusion: ``noise_schedule``, ``diffusion_steps``, ``predict_xstart``;
    ``image_size`` is the sample size the converted model reports."""

    image_size: int = 256
    num_heads: int = 4
    num_head_channels: int = -1
    use_new_attention_order: bool = False
    noise_schedule: str = "linear"
    diffusion_steps: int = 1000
    predict_xstart: bool = False

    def validate(self) -> None:
        if self.noise_schedule not in NOISE_SCHEDULES:
            raise TenshotError(f"noise-schedule must be one of {', '.join(NOISE_SCHEDULES)}, got {self.noise_schedule!r}")
        if self.diffusion_steps < 2 or self.image_size < 8 or (self.num_head_channels <= 0 and self.num_heads < 1):
            raise TenshotError("diffusion-steps must be >= 2, image-size >= 8, and num-heads >= 1 or num-head-channels > 0")


@dataclass
class ADMStructure:
    """What the state dict records (see the module docstring)."""

    in_channels: int
    out_channels: int
    learn_sigma: bool
    model_channels: int
    channels: list[int]  # per level
    num_res_blocks: int
    attention: list[bool]  # per level
    scale_shift: bool
    resblock_updown: bool


def read_checkpoint(path: Path):
    """What a ``.pt`` holds, read with ``weights_only=True`` (one line when it is not a torch checkpoint)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and unpickler errors come in many types; all mean the same here
        raise TenshotError(f"{path}: not a readable torch checkpoint of tensors ({type(error).__name__}: {str(error).splitlines()[0][:200]})") from None


def adm_state_dict(loaded, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a read checkpoint: a bare state dict, or one under ``ema``/``model``/``state_dict``."""
    for key in ("ema", "model", "state_dict"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
            break
    if not isinstance(loaded, dict) or not all(isinstance(value, torch.Tensor) for value in loaded.values()):
        raise TenshotError(f"{path}: not a state dict of tensors")
    return loaded


def _indices(state: dict, prefix: str) -> list[int]:
    return sorted({int(match.group(1)) for key in state for match in [re.match(rf"{prefix}\.(\d+)\.", key)] if match})


def _is_resblock(state: dict, prefix: str) -> bool:
    return f"{prefix}.in_layers.0.weight" in state


def adm_structure(state: dict[str, torch.Tensor]) -> ADMStructure:
    """Read the architecture of an ADM UNet from its state dict (one line when it is not one)."""
    needed = ("input_blocks.0.0.weight", "time_embed.0.weight", "middle_block.0.in_layers.0.weight", "out.2.weight")
    missing = [key for key in needed if key not in state]
    if missing:
        raise TenshotError(f"not a guided-diffusion / improved-diffusion UNet state dict (no {missing[0]})")
    if any(key.startswith("label_emb.") for key in state):
        raise TenshotError("class-conditional ADM checkpoints (label_emb) are not supported: tenshot's models are unconditional")
    conv_in = state["input_blocks.0.0.weight"]
    model_channels, in_channels = conv_in.shape[0], conv_in.shape[1]
    out_channels = state["out.2.weight"].shape[0]
    learn_sigma = out_channels == 2 * in_channels
    outputs = _indices(state, "output_blocks")

    def upsamples(k: int) -> bool:
        parts = _indices(state, f"output_blocks.{k}")
        last = f"output_blocks.{k}.{parts[-1]}"
        return len(parts) > 1 and (f"{last}.conv.weight" in state or _is_resblock(state, last))

    first_up = next((k for k in outputs if upsamples(k)), None)
    blocks_per_level = (first_up + 1) if first_up is not None else len(outputs)
    levels = len(outputs) // blocks_per_level
    num_res_blocks = blocks_per_level - 1
    channels, attention = [], []
    index = 1
    for level in range(levels):
        block = f"input_blocks.{index}"
        channels.append(state[f"{block}.0.out_layers.3.weight"].shape[0])
        attention.append(f"{block}.1.qkv.weight" in state)
        index += num_res_blocks + (1 if level < levels - 1 else 0)
    resblock_updown = levels > 1 and _is_resblock(state, f"input_blocks.{1 + num_res_blocks}.0")
    first = "input_blocks.1.0"
    scale_shift = state[f"{first}.emb_layers.1.weight"].shape[0] == 2 * state[f"{first}.out_layers.3.weight"].shape[0]
    return ADMStructure(in_channels, 3 if learn_sigma else out_channels, learn_sigma, model_channels, channels, num_res_blocks, attention, scale_shift, resblock_updown)


def _head_dim(structure: ADMStructure, settings: ADMSettings) -> int:
    """The one head width of every attention layer (diffusers' ``attention_head_dim``)."""
    widths = {c for c, a in zip(structure.channels, structure.attention) if a} | {structure.channels[-1]}
    if settings.num_head_channels > 0:
        return settings.num_head_channels
    dims = {width // settings.num_heads for width in widths}
    if len(dims) != 1 or any(width % settings.num_heads for width in widths):
        raise TenshotError(
            f"num-heads {settings.num_heads} gives attention layers of {sorted(widths)} channels different head widths, "
            "which a diffusers UNet2DModel cannot hold; give --num-head-channels if the model was trained with it"
        )
    return dims.pop()


def _unet_config(structure: ADMStructure, settings: ADMSettings) -> dict:
    if structure.channels[0] != structure.model_channels:
        raise TenshotError(f"channel_mult[0] must be 1 (model channels {structure.model_channels}, first level {structure.channels[0]})")
    up = "resnet" if structure.resblock_updown else "conv"
    down_types = ["AttnDownBlock2D" if a else ("ResnetDownsampleBlock2D" if structure.resblock_updown else "DownBlock2D") for a in structure.attention]
    up_types = ["AttnUpBlock2D" if a else ("ResnetUpsampleBlock2D" if structure.resblock_updown else "UpBlock2D") for a in reversed(structure.attention)]
    return dict(
        sample_size=settings.image_size, in_channels=structure.in_channels, out_channels=structure.out_channels,
        block_out_channels=tuple(structure.channels), layers_per_block=structure.num_res_blocks,
        down_block_types=tuple(down_types), up_block_types=tuple(up_types), downsample_type=up, upsample_type=up,
        attention_head_dim=_head_dim(structure, settings), norm_num_groups=32, attn_norm_num_groups=32, norm_eps=1e-5,
        resnet_time_scale_shift="scale_shift" if structure.scale_shift else "default", flip_sin_to_cos=True, freq_shift=0,
    )  # fmt: skip


def _resblock(source: str, target: str) -> dict[str, str]:
    names = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj", "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}
    return {f"{source}.{a}": f"{target}.{b}" for a, b in names.items()}


def _sampler(state: dict, source: str, target: str) -> dict[str, str]:
    """An ADM Downsample (``op``) / Upsample (``conv``), or a residual block with down/up, to diffusers' sampler."""
    if _is_resblock(state, source):
        return _resblock(source, target)
    return {f"{source}.op": f"{target}.conv", f"{source}.conv": f"{target}.conv"}


def _module_map(state: dict, structure: ADMStructure) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """ADM module name -> diffusers module name for every layer but attention, and the (ADM, diffusers) pairs
    of attention blocks, whose qkv is split below."""
    names = {"time_embed.0": "time_embedding.linear_1", "time_embed.2": "time_embedding.linear_2", "input_blocks.0.0": "conv_in",
             "out.0": "conv_norm_out", "out.2": "conv_out"}  # fmt: skip
    attention: list[tuple[str, str]] = []
    levels, n = len(structure.channels), structure.num_res_blocks
    index = 1
    for level in range(levels):
        for j in range(n):
            names |= _resblock(f"input_blocks.{index}.0", f"down_blocks.{level}.resnets.{j}")
            if structure.attention[level]:
                attention.append((f"input_blocks.{index}.1", f"down_blocks.{level}.attentions.{j}"))
            index += 1
        if level < levels - 1:
            names |= _sampler(state, f"input_blocks.{index}.0", f"down_blocks.{level}.downsamplers.0")
            index += 1
    names |= _resblock("middle_block.0", "mid_block.resnets.0") | _resblock("middle_block.2", "mid_block.resnets.1")
    attention.append(("middle_block.1", "mid_block.attentions.0"))
    index = 0
    for up_level, level in enumerate(reversed(range(levels))):
        for j in range(n + 1):
            names |= _resblock(f"output_blocks.{index}.0", f"up_blocks.{up_level}.resnets.{j}")
            position = 1
            if structure.attention[level]:
                attention.append((f"output_blocks.{index}.1", f"up_blocks.{up_level}.attentions.{j}"))
                position = 2
            if level > 0 and j == n:
                names |= _sampler(state, f"output_blocks.{index}.{position}", f"up_blocks.{up_level}.upsamplers.0")
            index += 1
    return names, attention


def _split_qkv(weight: torch.Tensor, heads: int, new_order: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ADM's fused qkv (3C rows) as q, k, v (C rows each, head h in rows h*C/heads..): the legacy order holds
    [q_h, k_h, v_h] per head, the new order [q, k, v] each split into heads."""
    if new_order:
        return tuple(weight.chunk(3, dim=0))
    per_head = weight.reshape(heads, 3, weight.shape[0] // (3 * heads), *weight.shape[1:])
    return tuple(per_head[:, i].reshape(weight.shape[0] // 3, *weight.shape[1:]) for i in range(3))


def convert_adm(state: dict[str, torch.Tensor], settings: ADMSettings):
    """(UNet2DModel, scheduler config) of an ADM state dict: every tensor mapped, none left over."""
    from diffusers import UNet2DModel

    settings.validate()
    structure = adm_structure(state)
    config = _unet_config(structure, settings)
    unet = UNet2DModel(**config)
    names, attention = _module_map(state, structure)
    converted: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        if module in names:
            converted[f"{names[module]}.{leaf}"] = value
            used.add(key)
    for source, target in attention:
        width = state[f"{source}.qkv.weight"].shape[0] // 3
        heads = width // config["attention_head_dim"]
        for leaf in ("weight", "bias"):
            parts = _split_qkv(state[f"{source}.qkv.{leaf}"], heads, settings.use_new_attention_order)
            for name, part in zip(("to_q", "to_k", "to_v"), parts):
                converted[f"{target}.{name}.{leaf}"] = part.squeeze(-1) if leaf == "weight" else part
            converted[f"{target}.to_out.0.{leaf}"] = state[f"{source}.proj_out.{leaf}"].squeeze(-1) if leaf == "weight" else state[f"{source}.proj_out.{leaf}"]
            converted[f"{target}.group_norm.{leaf}"] = state[f"{source}.norm.{leaf}"]
            used |= {f"{source}.{part}.{leaf}" for part in ("qkv", "proj_out", "norm")}
    if structure.learn_sigma:
        for leaf in ("weight", "bias"):
            converted[f"conv_out.{leaf}"] = converted[f"conv_out.{leaf}"][: structure.out_channels]
    left = sorted(set(state) - used)
    expected = unet.state_dict()
    absent = sorted(set(expected) - set(converted))
    if left or absent:
        raise TenshotError(f"the state dict does not fit the ADM architecture read from it ({'unused ' + left[0] if left else 'no value for ' + absent[0]})")
    wrong = [key for key, value in converted.items() if value.shape != expected[key].shape]
    if wrong:
        raise TenshotError(f"the state dict does not fit the ADM architecture read from it ({wrong[0]} is {tuple(converted[wrong[0]].shape)})")
    unet.load_state_dict({key: value.float() for key, value in converted.items()})
    return unet.eval(), _scheduler_config(settings)


def _scheduler_config(settings: ADMSettings) -> dict:
    """ADM's schedule as a diffusers DDPMScheduler config (its ``linear`` betas scale with 1000 / T)."""
    config = {"num_train_timesteps": settings.diffusion_steps, "prediction_type": "sample" if settings.predict_xstart else "epsilon", "clip_sample": False}
    if settings.noise_schedule == "cosine":
        return config | {"beta_schedule": "squaredcos_cap_v2"}
    scale = 1000 / settings.diffusion_steps
    return config | {"beta_schedule": "linear", "beta_start": scale * 0.0001, "beta_end": scale * 0.02}


def describe(structure: ADMStructure) -> str:
    """One line on what a converted checkpoint holds, and what was dropped."""
    attention = [i for i, a in enumerate(structure.attention) if a] or "none"
    dropped = "; learned sigma: the variance half of the output dropped (tenshot samples with fixed variances)" if structure.learn_sigma else ""
    return (f"ADM of {len(structure.channels)} levels ({', '.join(map(str, structure.channels))} channels), {structure.num_res_blocks} residual "
            f"blocks per level, attention at levels {attention} and the middle{dropped}")  # fmt: skip


def adm_assumed(settings: ADMSettings) -> str:
    """The settings an ADM conversion took from flags, in words."""
    heads = f"{settings.num_head_channels} channels per head" if settings.num_head_channels > 0 else f"{settings.num_heads} heads"
    order = "new" if settings.use_new_attention_order else "legacy"
    target = "x0" if settings.predict_xstart else "eps"
    return (f"image size {settings.image_size}, {heads}, {order} qkv order, {settings.noise_schedule} schedule of "
            f"{settings.diffusion_steps} steps, predicting {target}")  # fmt: skip


def converted_card(source: Path, origin: str, tag: str, summary: str, assumed: str, usage: str = "") -> str:
    """The model card of a converted folder: the hub's metadata block, where it came from (``origin``, the code that
    wrote the checkpoint), the settings the file did not record (``assumed``) and how to load it (``usage``)."""
    return "\n".join([
        "---", "library_name: diffusers", "pipeline_tag: unconditional-image-generation", f"tags: [tenshot, converted, {tag}]", "---", "",
        f"# Converted by tenshot from a {origin} checkpoint", "", f"From `{source}`: {summary}.", "",
        f"Settings not in the checkpoint: {assumed}.", "", *([usage, ""] if usage else []),
    ])  # fmt: skip
