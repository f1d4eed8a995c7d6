"""Checkpoints of lucidrains' ``denoising-diffusion-pytorch`` (0.28 and 2.x) as tenshot / diffusers folders.

Its ``Trainer.save`` writes ``{"model": GaussianDiffusion.state_dict(), "ema": EMA.state_dict(), "opt": ...}``;
a bare ``GaussianDiffusion`` state dict is taken too. The network (under ``model.``, or ``ema_model.model.`` in the
EMA's) becomes a :class:`tenshot.models.lucidrains_unet.LucidrainsUNet`; its layout (0.28 or 2.x), widths, levels,
attention kinds, heads and memory key/values are read from the tensors. The diffusion's buffers carry the rest:

- the schedule is the checkpoint's own ``betas`` (a diffusers ``trained_betas`` config), so linear, cosine and
  sigmoid schedules of any length convert exactly; x0 is clipped to [-1, 1] as the package's samplers do;
- the objective (``pred_noise``, ``pred_x0``, ``pred_v``: diffusers' ``epsilon``, ``sample``, ``v_prediction``)
  is read in 2.x from ``loss_weight``, which is ``min(snr, gamma) / snr``, ``min(snr, gamma)`` or
  ``min(snr, gamma) / (snr + 1)`` respectively (gamma infinite without min-SNR weighting); 0.28 records none and
  defaults to ``pred_noise`` (its own default) unless ``--objective`` says otherwise.

The 0.28 layout is that of releases 0.28 to 0.31. Releases before 0.28 hold the same tensors but compute
otherwise (plain convolutions, l2-normalised attention): their checkpoints would convert without error to a
different network, and are not supported. A learned-variance output (``LearnedGaussianDiffusion``, twice the
channels) keeps its first half, the noise prediction, whatever ``loss_weight`` says; tenshot samples with fixed
variances. Self-conditioned Unets are refused: tenshot's samplers do not feed the previous x0 back. Loading uses ``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..errors import TenshotError

OBJECTIVES = {"pred_noise": "epsilon", "pred_x0": "sample", "pred_v": "v_prediction"}
WEIGHTS = ("ema", "model")


@dataclass
class LucidrainsSettings:
    """What a denoising-diffusion-pytorch checkpoint does not record: the image size it was trained at, the
    objective where 0.28 leaves it unsaid (None: read it, or 0.28's ``pred_noise``), which weights (``ema`` as the
    package samples, or the online ``model``), 0.28's GroupNorm groups and the time embedding's theta."""

    image_size: int = 256
    objective: str | None = None
    weights: str = "ema"
    resnet_block_groups: int = 8
    sinusoidal_theta: float = 10000.0

    def validate(self) -> None:
        if self.objective is not None and self.objective not in OBJECTIVES:
            raise TenshotError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.weights not in WEIGHTS:
            raise TenshotError(f"weights must be one of {', '.join(WEIGHTS)}, got {self.weights!r}")
        if self.image_size < 8 or self.resnet_block_groups < 1 or self.sinusoidal_theta <= 1:
            raise TenshotError("image-size must be >= 8, resnet-block-groups >= 1 and sinusoidal-theta > 1")


@dataclass
class LucidrainsCheckpoint:
    """The network's tensors (without prefix) and the diffusion's buffers of one set of weights."""

    unet: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    weights: str


def _split(state: dict, prefix: str, weights: str) -> LucidrainsCheckpoint:
    network = prefix + "model."
    unet = {key[len(network) :]: value for key, value in state.items() if key.startswith(network)}
    buffers = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix) and "." not in key[len(prefix) :]}
    return LucidrainsCheckpoint(unet, buffers, weights)


WRAPPERS = re.compile(r"^((?:ema_model\.)?)(?:module\.|_orig_mod\.)+")  # DistributedDataParallel's and torch.compile's


def _unwrapped(state: dict) -> dict:
    """``state`` with DDP's ``module.`` and torch.compile's ``_orig_mod.`` taken off its keys."""
    return {WRAPPERS.sub(r"\1", key): value for key, value in state.items()}


def _diffusion_state(loaded: dict) -> dict:
    return _unwrapped(loaded["model"] if isinstance(loaded.get("model"), dict) else loaded)


def is_lucidrains(loaded) -> bool:
    """Whether a read checkpoint is a denoising-diffusion-pytorch ``Trainer`` save or ``GaussianDiffusion`` state."""
    if not isinstance(loaded, dict):
        return False
    state = _diffusion_state(loaded)
    return "model.init_conv.weight" in state and "betas" in state


def lucidrains_checkpoint(loaded: dict, weights: str) -> LucidrainsCheckpoint:
    """The ``weights`` (``ema`` or ``model``) of a Trainer save; a bare GaussianDiffusion state has only ``model``."""
    if "model.init_conv.weight" in _unwrapped(loaded):
        return _split(_unwrapped(loaded), "", "model")
    if weights == "ema":
        if not isinstance(loaded.get("ema"), dict):
            raise TenshotError("the checkpoint has no EMA weights (ema); convert its online weights with --weights model")
        ema = _unwrapped(loaded["ema"])
        if "ema_model.model.init_conv.weight" not in ema:
            raise TenshotError("the checkpoint's ema holds no ema_model weights; convert its online weights with --weights model")
        return _split(ema, "ema_model.", "ema")
    return _split(_diffusion_state(loaded), "", "model")


def _levels(unet: dict) -> int:
    return len({int(m.group(1)) for key in unet for m in [re.match(r"downs\.(\d+)\.", key)] if m})


def unet_config(unet: dict[str, torch.Tensor], settings: LucidrainsSettings) -> dict:
    """LucidrainsUNet's config, read from the network's tensors (one line when they are not such a Unet)."""
    for key in ("init_conv.weight", "time_mlp.1.weight", "final_conv.weight", "downs.0.0.block1.proj.weight"):
        if key not in unet:
            raise TenshotError(f"not a denoising-diffusion-pytorch Unet (no {key})")
    if "downs.0.2.fn.fn.to_qkv.weight" in unet:
        layout = "0.28"
    elif "downs.0.2.to_qkv.weight" in unet and "downs.0.2.mem_kv" in unet:
        layout = "2"
    else:
        raise TenshotError("a denoising-diffusion-pytorch Unet of neither 0.28's nor 2.x's layout (attention blocks differ)")
    init_dim, in_channels = unet["init_conv.weight"].shape[:2]
    out_channels = unet["final_conv.weight"].shape[0]
    dim = unet["time_mlp.1.weight"].shape[1]
    if in_channels == 2 * out_channels:
        raise TenshotError("a self-conditioned Unet (self_condition=True): tenshot's samplers do not feed x0 back; not supported")
    levels = _levels(unet)
    widths = [unet.get(f"downs.{i}.3.weight", unet.get(f"downs.{i}.3.1.weight")).shape[0] for i in range(levels)]
    if any(width % dim for width in widths):
        raise TenshotError(f"level widths {widths} are not multiples of dim {dim}")
    config = dict(layout=layout, sample_size=settings.image_size, in_channels=int(in_channels), dim=int(dim), init_dim=int(init_dim),
                  out_channels=int(in_channels), dim_mults=tuple(w // dim for w in widths), resnet_block_groups=settings.resnet_block_groups,
                  sinusoidal_theta=settings.sinusoidal_theta)  # fmt: skip
    if layout == "0.28" and settings.sinusoidal_theta != 10000.0:
        raise TenshotError("0.28's time embedding has theta 10000; --sinusoidal-theta applies to 2.x checkpoints")
    if layout == "2":
        full = tuple(f"downs.{i}.2.to_out.1.g" not in unet for i in range(levels))
        shapes = [unet[f"downs.{i}.2.mem_kv"].shape for i in range(levels)]
        heads = tuple(int(shape[1]) for shape in shapes)
        head_dims = tuple(int(shape[3] if f else shape[2]) for shape, f in zip(shapes, full))
        memory = {int(shape[2] if f else shape[3]) for shape, f in zip(shapes, full)}
        if len(memory) != 1:
            raise TenshotError(f"attention layers with different numbers of memory key/values {sorted(memory)}")
        config |= dict(full_attn=full, attn_heads=heads, attn_dim_head=head_dims, num_mem_kv=memory.pop())
    return config


def objective_of(buffers: dict[str, torch.Tensor], layout: str, learned_variance: bool, settings: LucidrainsSettings) -> tuple[str, str]:
    """(objective, how it was known): 2.x's ``loss_weight`` against the three weightings of the module docstring.
    A learned-variance Unet (``LearnedGaussianDiffusion``) always predicts the noise, whatever ``loss_weight``
    its parent class registered."""
    if learned_variance:
        if settings.objective not in (None, "pred_noise"):
            raise TenshotError(f"a learned-variance Unet (LearnedGaussianDiffusion) predicts the noise; --objective {settings.objective} does not apply")
        return "pred_noise", "LearnedGaussianDiffusion's"
    if "loss_weight" not in buffers:
        if settings.objective is None and layout == "2":
            raise TenshotError("the checkpoint records no loss_weight, so its objective is unknown; give --objective")
        return settings.objective or "pred_noise", "given" if settings.objective else "0.28's default"
    # snr from the square roots, which the package computed in float64: 1 - abar in float32 loses the small betas
    snr = (buffers["sqrt_alphas_cumprod"].double() / buffers["sqrt_one_minus_alphas_cumprod"].double()) ** 2
    weight = buffers["loss_weight"].double()
    matches = []
    for name, factor in (("pred_noise", snr), ("pred_x0", torch.ones_like(snr)), ("pred_v", snr + 1)):
        clipped = weight * factor
        if torch.allclose(clipped, torch.minimum(snr, clipped.max()), rtol=1e-3, atol=1e-6):
            matches.append(name)
    if len(matches) != 1:
        if settings.objective is None:
            raise TenshotError("the checkpoint's loss_weight matches no single objective; give --objective")
        return settings.objective, "given"
    if settings.objective is not None and settings.objective != matches[0]:
        raise TenshotError(f"--objective {settings.objective} disagrees with the checkpoint's loss_weight, which is {matches[0]}'s")
    return matches[0], "read from loss_weight"


def scheduler_config(buffers: dict[str, torch.Tensor], objective: str) -> dict:
    """The checkpoint's own betas as a diffusers DDPMScheduler config, x0 clipped to [-1, 1]."""
    if "betas" not in buffers:
        raise TenshotError("the checkpoint holds no betas (not a GaussianDiffusion state)")
    betas = buffers["betas"].double().tolist()
    return {"num_train_timesteps": len(betas), "trained_betas": betas, "beta_schedule": "linear", "prediction_type": OBJECTIVES[objective],
            "clip_sample": True, "clip_sample_range": 1.0}  # fmt: skip


def _target_key(key: str, expected: dict) -> str:
    """A source key's name in LucidrainsUNet: down/up samplers are ``.conv`` there (``Sequential``'s ``.1`` or a
    bare 4x4 conv in the package); everything else keeps its name."""
    renamed = re.sub(r"^((?:downs|ups)\.\d+\.3)\.(?:1\.)?(weight|bias)$", r"\1.conv.\2", key)
    return renamed if renamed in expected else key


def convert_lucidrains(loaded: dict, settings: LucidrainsSettings):
    """(LucidrainsUNet, scheduler config, one line on what it holds) of a read checkpoint: every tensor mapped."""
    from .lucidrains_unet import LucidrainsUNet

    settings.validate()
    checkpoint = lucidrains_checkpoint(loaded, settings.weights)
    config = unet_config(checkpoint.unet, settings)
    learned_variance = checkpoint.unet["final_conv.weight"].shape[0] == 2 * config["in_channels"]
    objective, known = objective_of(checkpoint.buffers, config["layout"], learned_variance, settings)
    unet = LucidrainsUNet(**config)
    expected = unet.state_dict()
    converted = {_target_key(key, expected): value for key, value in checkpoint.unet.items()}
    if learned_variance:
        for leaf in ("weight", "bias"):
            converted[f"final_conv.{leaf}"] = converted[f"final_conv.{leaf}"][: config["in_channels"]]
    left, absent = sorted(set(converted) - set(expected)), sorted(set(expected) - set(converted))
    wrong = [key for key in set(converted) & set(expected) if converted[key].shape != expected[key].shape]
    if left or absent or wrong:
        detail = f"unused {left[0]}" if left else f"no value for {absent[0]}" if absent else f"{wrong[0]} is {tuple(converted[wrong[0]].shape)}"
        raise TenshotError(f"the checkpoint does not fit the denoising-diffusion-pytorch Unet read from it ({detail})")
    unet.load_state_dict({key: value.float() for key, value in converted.items()})
    schedule = scheduler_config(checkpoint.buffers, objective)
    attention = "" if config["layout"] == "0.28" else f", full attention at levels {[i for i, f in enumerate(config['full_attn']) if f]} and the middle"
    variance = "; learned variance: the variance half of the output dropped (tenshot samples with fixed variances)" if learned_variance else ""
    summary = (f"denoising-diffusion-pytorch {config['layout']} Unet (dim {config['dim']}, mults {config['dim_mults']}{attention}), "
               f"{checkpoint.weights} weights, objective {objective} ({known}), {schedule['num_train_timesteps']}-step schedule from its betas{variance}")  # fmt: skip
    return unet.eval(), schedule, summary


def lucidrains_assumed(settings: LucidrainsSettings, layout: str) -> str:
    """The settings a conversion took from flags, in words."""
    groups = f", GroupNorm of {settings.resnet_block_groups} groups" if layout == "0.28" else ""
    return f"image size {settings.image_size}, time embedding theta {settings.sinusoidal_theta:g}{groups}"
