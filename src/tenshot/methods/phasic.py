"""Phasic Content Fusing diffusion model with Directional Distribution Consistency (Hu et al., ICCV 2023,
arXiv 2309.03729; official code sjtuplayer/few-shot-diffusion). METHODS.md section 1, as adapted by its section
"How tenshot applies them". It is a few-shot *translation* method: source images in, target-style images out.

Notation: x^A a source-domain image, x^B one of the m target shots, E the feature network, t a time. Times quoted
from the paper and code (T_s = 300, the phase split 800, translation start 600, ...) belong to their cosine
schedule and are mapped to the checkpoint's schedule by equal noise level (``schedule.map_time``; on the linear
schedule 300 -> 150, 800 -> 482). Every model output is read through ``schedule.predict`` (no method assumes eps).

**Phasic content fusion (PCF, Sec. 3.2).** A condition branch runs x^A through the *same* UNet encoder
(``conv_in`` and the down blocks) under ``torch.no_grad``; its features are gated by
m(t) = 1 / (1 + exp(-(t - T_s)))::

    E^(x^A) = m(t) E(x^A_t) + (1 - m(t)) z,   z ~ N(0, I)

and fused with the main branch's bottleneck h by three 3x3 convolutions 2C -> C -> C -> C with ReLU between
(C = the bottleneck's channels, no norm, no residual); the output *replaces* h before the decoder
(:func:`tenshot.models.bottleneck.forward_with_bottleneck`). As in the code, the condition image is noised to the
same t with fresh noise (``condition="noised"``); the paper's E(x^A) of the clean image is ``condition="clean"``.
Diffusion training on the target shots uses the plain UNet, without the fusion.

**Stage 2, fusion initialisation** (``stage=init``, the code's ``train-recon.py``): only the fusion convs are
trained, the UNet frozen, on source images with the condition being the same image: the denoising loss at
t ~ U{0..T-1}. ``fusion_steps`` optimiser steps at ``fusion_batch_size``, ``fusion_lr``; ``tenshot adapt`` caches
the result per source model, source images and these settings, so a second adaptation from the same source
skips it. tenshot initialises the convs to the identity on h (``fusion_init="identity"``: Dirac kernels, the
condition half zero, a bias offset above the largest negative activation that keeps the ReLUs open, removed by
the last conv), so the fused UNet starts equal to the source UNet; the code uses PyTorch's default
initialisation and 100 epochs (``fusion_init="default"``).

**Stage 3, joint adaptation** (``stage=adapt``; the default ``both`` runs stage 2 then 3). Every UNet weight and
the fusion are trained with:

- DDC (Eqs. 3-4): w = mean_i E(x^B_i) - mean_j E(x^A_j) over the shots and the source images, and
  L_DDC = mean over feature dims of (E(x^A) + w - E(x^{A->B}_0))^2, x^{A->B}_0 the one-step x0-prediction of
  the fused UNet from x^A_t, clamped to [-1, 1] (a per-dimension mean as in the code; the paper's squared norm
  differs by the constant dimension).
- Style (Eq. 5), with a floor at the shots' own spread (``style_rule``). Per layer l, with G = F F^T / (C H W)
  of its feature maps, D_l(x) = mean_i ||G^l(x) - G^l(x^B_i)||_F^2 and the shots' leave-one-out spread
  s_l = mean_{i != j} ||G^l(x^B_i) - G^l(x^B_j)||_F^2 (0 for a single shot)::

      L_style = sum_l w_l max(0, D_l(x^{A->B}_0) - s_l)      (style_rule="hinge", the default)
      L_style = sum_l w_l D_l(x^{A->B}_0)                     (style_rule="mean": Eq. 5 as paper and code)
      L_style = sum_l w_l max(0, ||G^l(x) - G^l(x^B_i*)||_F^2 - s^nn_l)   (style_rule="nearest")

  with i* the shot nearest to the output in sum_l w_l ||G^l(x) - G^l(x^B_i)||_F^2 and s^nn_l the mean distance of
  a shot to its nearest other shot: each output is held near its own nearest shot, so the term keeps as many
  styles as there are shots where the mean keeps one ball around their average. An option, not the default
  (bench/README.md, "Option studies", has what it measured).

  Why: D_l is smallest at the shots' mean Gram, where it is (m - 1) / 2m of s_l (0.45 for ten shots), so Eq. 5
  pulls every output towards that one average style, below the spread of the shots themselves: phasic's
  noise-to-image samples collapsed in diversity with it (bench/results/quality.md). The hinge stops pulling
  once an output is as close to the shots as a shot is on average to the others, and leaves the spread inside
  that to the other terms; above it, its gradient is Eq. 5's. Comparing each output with one shot drawn per
  sample (the paper's per-image form) would not help: i is drawn independently of the output, so its
  expectation is Eq. 5, with the same pull. w_l = 1 on VGG, as the code; on EL0, whose unbounded block
  outputs make these distances ~1e4, w_l = 1 / mean_i ||G^l(x^B_i)||_F^2 (order-1 distances, as VGG's). The
  step logs ``style_spread`` = sum_l w_l D_l / sum_l w_l s_l, below 1 when outputs sit closer to the shots
  than the shots sit to one another.
- Diffusion (Eq. 6) on the shots, plain UNet: the per-sample mean of |eps^ - eps| (``diffusion_loss="l1"``,
  the code) or of its square (``"l2"``, the paper).
- The phasic schedule, ``weighting``:

  - ``code`` (default; ``train-whole.py``): a(t) = 20^(t/1000), c = 20^0.9. Of a batch of B shots, the first
    B/2 are paired with B/2 source images at t ~ U{T_s..799} each: mean[a(t) (l_DDC L_DDC + l_style L_style)]
    on the sources plus mean[(c - a(t)) L_dif] on those shots at the same t; the other B/2 shots take t from
    the times the transfer terms leave, U({0..T_s - 1} u {800..T - 1}), and add mean[d(t) L_dif] with
    d(t) = (c - a(t)) / 5 below T_s (the code's t-small phase) and d(t) = c - a(800) from the split up. The
    code alternates its two phases over two backward passes per optimiser step with 4 source and 4 + 4 target
    images; one tenshot step is that optimiser step (``--batch-size 8`` reproduces its images per step).
    Times: DDC and style train [T_s, 800), the code's range; the shots' diffusion term trains every time,
    each with the same probability, because noise-to-image sampling starts at the top of the schedule. The
    code never draws t >= 800 (its translation starts at 600) and its c - a(t) reaches 0 at t = 900 and
    turns negative, so d(t) holds the diffusion weight of the split: above it no transfer term takes its
    share a(t) of c.
  - ``baseline``: c times fine-tuning's own loss on all B shots (every time, min-SNR weighted:
    :func:`tenshot.methods.losses.diffusion_loss`), so the plain UNet that noise-to-image sampling uses is trained as
    the baseline trains it, plus the code's transfer terms mean[a(t) (l_DDC L_DDC + l_style L_style)] on B/2 source
    images at t ~ U{T_s..799}.
  - ``paper`` (Eq. 7): L = m(t)(1 - w(t)) (l_DDC L_DDC + l_style L_style) + w(t) L_dif with
    w(t) = 1 - (t/T)^alpha and t ~ U{0..T-1}, over B/2 source images and the B shots (every time, w > 0).
    alpha and the lambdas are not in the paper's main text; 1 by default.

The feature network E for DDC and style: the paper uses CLIP ViT-B/32 for DDC and VGG16 Gram matrices for
style (``ddc_network="clip"``, ``style_network="vgg"``, used when their weights are present). By default both
are **EfficientNet-Lite0** (EL0, offline): the pooled 1280-d features for DDC and the first four resolution
stages for style, on images resized to ``feature_size`` px (128 by default: one adaptation step at 224 px costs
about twice as much on a CPU). EL0 is also the network of tenshot's metrics (DESIGN.md, Metrics), so Phasic
trained on EL0 **trains against the judge: EL0 metrics (fid-el0, kid-el0, ...) can flatter it**; report ``swd``
beside them.

**Generation.** ``tenshot translate`` runs :func:`tenshot.methods.translation.structure_guided_translation`
(ICSG, Sec. 3.4) through the fused UNet conditioned on each input image from T_s up and the plain UNet below it
(:class:`FusedDenoiser`), from the source model's DDIM encoding of each input by default (DDIB; the paper's
fresh noise is ``--encode noise``: that module's docstring); ``tenshot sample`` (noise to image)
is the plain adapted UNet, without condition, which the shots' diffusion term trains at every time it samples.

The EMA covers the UNet and the fusion: the run's ``model/`` holds the UNet, ``method.safetensors`` the fusion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..diffusion.samplers import noised, randn
from ..diffusion.schedule import Prediction, cosine_schedule
from ..errors import TenshotError
from ..models.bottleneck import bottleneck_channels, encode, forward_with_bottleneck
from ..models.frozen import AlwaysEval
from ..models.unet import DiffusionModel
from .base import Batch, Initialisation, Method, restore_tensors
from .losses import diffusion_loss, prediction_error
from .options import check_choices, check_integers, check_numbers

STAGES = ("both", "init", "adapt")
WEIGHTINGS = ("code", "paper", "baseline")
CONDITIONS = ("noised", "clean")
DIFFUSION_LOSSES = ("l1", "l2")
FUSION_INITS = ("identity", "default")
DDC_NETWORKS = ("el0", "clip")
STYLE_NETWORKS = ("el0", "vgg")
STYLE_RULES = ("hinge", "mean", "nearest")
COSINE_TIMESTEPS = 1000
PHASE_SPLIT = 800  # the code's max_step: DDC and style see t in [T_s, 800) of the cosine schedule
CODE_WEIGHT_BASE = 20.0  # a(t) = 20^(t/1000)
CODE_WEIGHT_CEILING = 20.0**0.9  # c: the diffusion weight is c - a(t)
SMALL_T_SHARE = 0.2  # the code divides the small-t diffusion loss by 5
EL0_STYLE_STAGES = 4  # strides 2, 4, 8, 16 (VGG's relu1_2..relu4_3 are strides 1..8)
INITIALISATION_NAME = "fusion-init"


@dataclass
class PhasicOptions:
    """Options of :class:`Phasic` (module docstring for what each does).

    ``stage``: both, init (stage 2 alone), adapt (stage 3 from the cached stage 2). ``fusion_steps``,
    ``fusion_batch_size``, ``fusion_lr``, ``fusion_init`` (identity, default): stage 2. ``weighting``: code,
    baseline or paper; ``alpha``: the paper's w(t) exponent. ``ddc_weight``, ``style_weight``: the lambdas. ``style_rule``:
    hinge (Eq. 5 floored at the shots' own spread), mean (Eq. 5 as paper and code) or nearest (the nearest shot
    alone, floored at the shots' nearest-neighbour spread).
    ``ddc_network`` (el0, clip), ``style_network`` (el0, vgg), ``feature_size``: EL0's input size.
    ``gate_time``: T_s on the cosine schedule. ``condition``: noised (code) or clean (paper).
    ``diffusion_loss``: l1 (code) or l2 (paper). ``source_count``: source images drawn for w, stage 2 and the
    DDC pool (the maintainer advises more than 1,000 for w).
    """

    method: ClassVar[str] = "phasic"

    stage: str = "both"
    fusion_steps: int = 200
    fusion_batch_size: int = 8
    fusion_lr: float = 1e-4
    fusion_init: str = "identity"
    weighting: str = "code"
    alpha: float = 1.0
    ddc_weight: float = 1.0
    style_weight: float = 1.0
    style_rule: str = "hinge"
    ddc_network: str = "el0"
    style_network: str = "el0"
    feature_size: int = 128
    gate_time: int = 300
    condition: str = "noised"
    diffusion_loss: str = "l1"
    source_count: int = 1000

    def __post_init__(self):
        check_choices(
            self, stage=STAGES, weighting=WEIGHTINGS, condition=CONDITIONS, diffusion_loss=DIFFUSION_LOSSES, fusion_init=FUSION_INITS,
            ddc_network=DDC_NETWORKS, style_network=STYLE_NETWORKS, style_rule=STYLE_RULES,
        )  # fmt: skip
        check_integers(self, 1, "fusion_steps", "fusion_batch_size", "source_count")
        check_integers(self, 1, "gate_time", maximum=PHASE_SPLIT - 1)
        check_integers(self, 32, "feature_size", maximum=512)
        check_numbers(self, "ddc_weight", "style_weight")
        check_numbers(self, "fusion_lr", "alpha", positive=True)

def gate(t: torch.Tensor, gate_time: int) -> torch.Tensor:
    """m(t) = 1 / (1 + exp(-(t - T_s))) (Sec. 3.2): 0.5 at T_s, within 5e-5 of 0 or 1 ten steps away."""
    return torch.sigmoid(t.float() - gate_time)


def code_times(large: int, rest: int, gate_time: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine times of the code weighting: ``large`` from U{T_s..799} (transfer terms and their shots) and
    ``rest`` from the times they leave, U({0..T_s - 1} u {800..T - 1}); together every time equally often."""
    large_times = torch.randint(gate_time, PHASE_SPLIT, (large,), generator=generator)
    rest_times = torch.randint(0, gate_time + COSINE_TIMESTEPS - PHASE_SPLIT, (rest,), generator=generator)
    return large_times, torch.where(rest_times < gate_time, rest_times, rest_times - gate_time + PHASE_SPLIT)


def code_rest_weight(cosine_times: torch.Tensor, gate_time: int) -> torch.Tensor:
    """d(t) of the shots outside the transfer range: (c - a(t)) / 5 below T_s (the code's t-small phase), and
    c - a(800) from the phase split up (c - a(t) reaches 0 at t = 900)."""
    held = cosine_times.clamp(max=PHASE_SPLIT).float()
    weight = CODE_WEIGHT_CEILING - CODE_WEIGHT_BASE ** (held / COSINE_TIMESTEPS)
    return torch.where(cosine_times < gate_time, weight * SMALL_T_SHARE, weight)


def _terms(total, ddc, style, spread, diffusion) -> dict[str, torch.Tensor]:
    """The step's loss and its logged terms (``style_spread`` where the shots have a spread)."""
    terms = {"total": total, "ddc": ddc.mean().detach(), "style": style.mean().detach(), "diffusion": diffusion.mean().detach()}
    if spread is not None:
        terms["style_spread"] = spread.mean()
    return terms


class ContentFusion(torch.nn.Module):
    """The PCF convolutions: concat(h, condition) -> 3x3 conv 2C->C -> ReLU -> 3x3 conv C->C -> ReLU -> 3x3 conv C->C."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.convs = torch.nn.Sequential(
            torch.nn.Conv2d(2 * channels, channels, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(channels, channels, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, hidden: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return self.convs(torch.cat([hidden, condition.to(hidden.dtype)], dim=1))

    @torch.no_grad()
    def identity_(self, offset: torch.Tensor) -> None:
        """Make the fusion return h whenever h > -offset (per channel): Dirac kernels on the h half, zero on the
        condition half, bias +offset on the first conv and -offset on the last."""
        first, middle, last = self.convs[0], self.convs[2], self.convs[4]
        for conv in (first, middle, last):
            conv.weight.zero_()
            torch.nn.init.dirac_(conv.weight[:, : self.channels])
            conv.bias.zero_()
        first.bias.copy_(offset)
        last.bias.copy_(-offset)


def gram(maps: torch.Tensor) -> torch.Tensor:
    """Gram matrices ``(B, C, C)`` of feature maps ``(B, C, H, W)``: F F^T / (C H W), in fp32."""
    batch, channels, height, width = maps.shape
    flat = maps.float().reshape(batch, channels, height * width)
    return flat @ flat.transpose(1, 2) / (channels * height * width)


def shot_spread(target_grams: list[torch.Tensor]) -> torch.Tensor:
    """s_l = mean over ordered pairs i != j of ||G^l(x^B_i) - G^l(x^B_j)||_F^2, the shots' leave-one-out
    spread per layer, ``(L,)``; 0 for a single shot."""
    spreads = []
    for grams in target_grams:
        count = grams.shape[0]
        total = sum(float((grams[i] - grams).double().pow(2).sum()) for i in range(count))
        spreads.append(total / (count * (count - 1)) if count > 1 else 0.0)
    return torch.tensor(spreads)


def shot_distances(maps: list[torch.Tensor], target_grams: list[torch.Tensor]) -> torch.Tensor:
    """||G^l(x) - G^l(x^B_i)||_F^2 per generated image, shot i and layer l (``target_grams[l]`` is
    ``(m, C_l, C_l)``). ``(B, m, L)``."""
    distances = []
    for layer, targets in zip(maps, target_grams):
        difference = gram(layer)[:, None] - targets[None].to(layer.device)
        distances.append(difference.pow(2).sum(dim=(2, 3)))
    return torch.stack(distances, dim=2)


def layer_distances(maps: list[torch.Tensor], target_grams: list[torch.Tensor]) -> torch.Tensor:
    """D_l(x) = mean over the shots i of ||G^l(x) - G^l(x^B_i)||_F^2 per generated image and layer l. ``(B, L)``."""
    return shot_distances(maps, target_grams).mean(dim=1)


def nearest_shot_spread(target_grams: list[torch.Tensor], layer_weights: list[float]) -> torch.Tensor:
    """s^nn_l = mean over the shots i of ||G^l(x^B_i) - G^l(x^B_nn(i))||_F^2, nn(i) the other shot nearest to i in
    sum_l w_l ||.||_F^2: how far a shot's style is from its closest neighbour's, per layer, ``(L,)``; 0 for a single
    shot."""
    count = target_grams[0].shape[0]
    if count < 2:
        return torch.zeros(len(target_grams))
    pairs = torch.stack([(grams[:, None] - grams[None]).double().pow(2).sum(dim=(2, 3)) for grams in target_grams], dim=2)
    total = pairs @ torch.tensor(layer_weights, dtype=pairs.dtype, device=pairs.device)
    total.fill_diagonal_(float("inf"))
    nearest = total.argmin(dim=1)
    return pairs[torch.arange(count), nearest].mean(dim=0).float().cpu()


def nearest_style_distance(per_shot: torch.Tensor, layer_weights: list[float], floors: torch.Tensor) -> torch.Tensor:
    """The nearest-shot hinge per generated image: with i* the shot nearest to it in sum_l w_l ||.||_F^2,
    sum_l w_l max(0, ||G^l(x) - G^l(x^B_i*)||_F^2 - s^nn_l) (``per_shot`` from :func:`shot_distances`, ``floors``
    s^nn_l from :func:`nearest_shot_spread`). ``(B,)``."""
    weights = torch.tensor(layer_weights, dtype=per_shot.dtype, device=per_shot.device)
    nearest = (per_shot.detach() @ weights).argmin(dim=1)
    chosen = per_shot[torch.arange(per_shot.shape[0], device=per_shot.device), nearest]
    return (chosen - floors.to(chosen)).clamp(min=0) @ weights


def style_distance(maps: list[torch.Tensor], target_grams: list[torch.Tensor], layer_weights: list[float] | None = None,
                   floors: torch.Tensor | None = None, distances: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 5 per generated image: sum over layers l of w_l D_l(x) (:func:`layer_distances`, or ``distances`` when
    already computed), or of w_l max(0, D_l(x) - s_l) with ``floors`` s_l (:func:`shot_spread`); ``layer_weights``
    w_l (default all 1, as the code). ``(B,)``."""
    if distances is None:
        distances = layer_distances(maps, target_grams)
    if floors is not None:
        distances = (distances - floors.to(distances)).clamp(min=0)
    weights = torch.tensor(layer_weights or [1.0] * distances.shape[1], dtype=distances.dtype, device=distances.device)
    return distances @ weights


def ddc_distance(embedding: torch.Tensor, source_embedding: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """Eq. 4 per image, as the code reduces it: mean over dims of (E(x^A) + w - E(x^{A->B}_0))^2. ``(B,)``."""
    return (embedding.float() - (source_embedding + direction)).pow(2).mean(dim=1)


class FeatureEncoder(AlwaysEval):
    """E of DDC and style on images in [-1, 1], with autograd: ``(embedding, style maps)``; EL0 computes both in
    one pass when it serves both."""

    def __init__(self, ddc_network: str, style_network: str, feature_size: int):
        super().__init__()
        from ..models import features

        self.ddc_network, self.style_network, self.feature_size = ddc_network, style_network, feature_size
        self.el0 = features.EfficientNetLite0() if "el0" in (ddc_network, style_network) else None
        self.clip = features.clip_image_encoder("phasic ddc_network=clip (the paper's DDC)") if ddc_network == "clip" else None
        self.vgg = features.VGG16Style(use="phasic style_network=vgg (the paper's style loss)") if style_network == "vgg" else None

    def forward(self, images: torch.Tensor, embedding: bool = True, style: bool = True):
        from ..models.features import CLIP_MEAN, CLIP_STD, INPUT_SIZE, tensor_input

        result_embedding, result_maps = None, None
        el0_embedding = embedding and self.ddc_network == "el0"
        el0_style = style and self.style_network == "el0"
        if el0_embedding or el0_style:
            pooled, stages = self.el0.features(tensor_input(images, self.feature_size), stages=el0_style)
            result_embedding = pooled if el0_embedding else None
            result_maps = stages[:EL0_STYLE_STAGES] if el0_style else None
        if embedding and self.clip is not None:
            result_embedding = self.clip(tensor_input(images, INPUT_SIZE, CLIP_MEAN, CLIP_STD))
        if style and self.vgg is not None:
            result_maps = self.vgg(tensor_input(images, INPUT_SIZE))
        return result_embedding, result_maps


class FusedDenoiser:
    """``denoiser(x, t) -> Prediction`` for translation (the samplers): the fused UNet conditioned on source images
    from T_s up, the plain UNet below it.

    Below T_s the gate hands the fusion noise in place of the condition (m(t) ~ 0), and no loss of stage 3 trains
    the fused path there (its transfer terms take t >= T_s, as the code's); the shots' diffusion term trains the
    plain UNet at every time, so the plain UNet denoises those steps. The code's own result, the x0-prediction
    at t ~ 359 > T_s, never reaches them. Measured: translations closer to the true renderings than through the
    fused path with noise (bench/README.md, "Option studies")."""

    def __init__(self, method: "Phasic", condition: torch.Tensor, generators):
        self.method, self.condition, self.generators = method, condition, generators
        self.schedule = method.model.schedule

    def __call__(self, x: torch.Tensor, t: int) -> Prediction:
        times = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
        if int(t) < self.method.gate_time:
            output = self.method.unet(x, times).sample.float()
        else:
            output = self.method.fused_output(x, times, self.condition, self.generators)
        return self.schedule.predict(output.to(x.dtype), x, times)


class Phasic(Method):
    """Phasic content fusion with directional distribution consistency (module docstring)."""

    name = "phasic"

    def __init__(self, model: DiffusionModel, options: PhasicOptions | None = None):
        super().__init__(model, options or PhasicOptions())
        schedule = model.schedule
        cosine = cosine_schedule()
        self.needs_source_images = self.options.source_count
        self.fusion = ContentFusion(bottleneck_channels(self.unet))
        # model time of every cosine-schedule time 0..999 (equal noise level), and T_s in model time
        self.register_buffer("checkpoint_time_of", torch.tensor([schedule.map_time(t, cosine) for t in range(COSINE_TIMESTEPS)]), persistent=False)
        self.gate_time = schedule.map_time(self.options.gate_time, cosine)
        self.encoder: FeatureEncoder | None = None
        self.stage = "adapt"
        self._set_trainable()

    # --- stages -----------------------------------------------------------------------------------------

    def initialisation(self) -> Initialisation | None:
        options = self.options
        settings = {name: getattr(options, name) for name in ("fusion_init", "gate_time", "condition", "diffusion_loss")}
        return Initialisation(
            name=INITIALISATION_NAME,
            steps=options.fusion_steps,
            batch_size=options.fusion_batch_size,
            lr=options.fusion_lr,
            settings={"version": 1, **settings},
            may_train=options.stage != "adapt",
            alone=options.stage == "init",
        )

    def initialising(self, active: bool) -> None:
        """Stage 2 while ``active``: the fusion alone is trained (UNet frozen) on source images."""
        self.stage = "init" if active else "adapt"
        if active and self.options.fusion_init == "identity":
            self._identity_fusion()
        self._set_trainable()

    def _set_trainable(self) -> None:
        self.unet.requires_grad_(self.stage == "adapt")
        self.fusion.requires_grad_(True)

    def averaged_module(self) -> torch.nn.Module:
        """Stage 2: the fusion; stage 3: the UNet and the fusion together."""
        if self.stage == "init":
            return self.fusion
        return torch.nn.ModuleDict({"unet": self.unet, "fusion": self.fusion})

    @torch.no_grad()
    def _identity_fusion(self) -> None:
        """:meth:`ContentFusion.identity_` with the offset 2 max(0, -min h_c) + 1 per channel, h the bottleneck
        of up to 64 source images at five times spread over the schedule."""
        if self.source_images is None:
            raise TenshotError("phasic fusion_init=identity needs source images to measure the bottleneck")
        images = self.source_images[:64].to(next(self.unet.parameters()).device)
        generator = torch.Generator().manual_seed(0)
        lowest = None
        for t in torch.linspace(0, self.model.schedule.num_train_timesteps - 1, 5).long().tolist():
            times = torch.full((len(images),), t, device=images.device)
            x_t, _ = noised(self.model.schedule, images, times, generator)
            captured = []
            forward_with_bottleneck(self.unet, x_t, times, lambda h: captured.append(h) or h)
            low = captured[0].float().amin(dim=(0, 2, 3))
            lowest = low if lowest is None else torch.minimum(lowest, low)
        self.fusion.identity_(2.0 * (-lowest).clamp(min=0) + 1.0)

    # --- setup: the DDC direction and the shots' Gram matrices ------------------------------------------

    @torch.no_grad()
    def setup(self, target: torch.Tensor) -> None:
        """Encode the source images and the shots: w = mean E(x^B) - mean E(x^A) (Eq. 3), the source embeddings
        E(x^A) of the DDC pool and the shots' Gram matrices. Stage 2 alone needs none of it."""
        if self.options.stage == "init":
            return
        if self.source_images is None:
            raise TenshotError("phasic needs source-domain images (api.adapt loads them: --source-data)")
        self.encoder = FeatureEncoder(self.options.ddc_network, self.options.style_network, self.options.feature_size)
        device = next(self.unet.parameters()).device
        self.encoder.to(device)
        source_embeddings = torch.cat([
            self.encoder(chunk.to(device), style=False)[0].float() for chunk in self.source_images.split(32)
        ])
        target_embeddings, target_maps = [], []
        for chunk in target.split(32):
            embedding, maps = self.encoder(chunk.to(device))
            target_embeddings.append(embedding.float())
            target_maps.append([gram(layer) for layer in maps])
        target_embedding = torch.cat(target_embeddings)
        self.register_buffer("source_pool", self.source_images.to(device), persistent=False)
        self.register_buffer("source_embeddings", source_embeddings, persistent=False)
        self.register_buffer("direction", target_embedding.mean(0) - source_embeddings.mean(0), persistent=False)
        self.style_layers = 0
        for layer, grams in enumerate(zip(*target_maps)):
            self.register_buffer(f"target_gram_{layer}", torch.cat(grams), persistent=False)
            self.style_layers += 1
        # EL0's block outputs are unbounded (RMS 9-14 on the emoji shots), so their Gram distances are ~1e4 where
        # VGG's ReLU maps give order 1: each EL0 layer is divided by the shots' mean ||G^l||_F^2 (distances of
        # about 0.5-0.9 per layer from noto to OpenMoji, 0.3-0.5 among the shots), so lambda_style = 1 keeps the
        # code's balance; VGG's are left as the code has them.
        self.style_layer_weights = [
            1.0 / float(grams.pow(2).sum(dim=(1, 2)).mean()) if self.options.style_network == "el0" else 1.0 for grams in self.target_grams
        ]
        self.register_buffer("style_spread", shot_spread(self.target_grams).to(device), persistent=False)
        self.register_buffer("nearest_spread", nearest_shot_spread(self.target_grams, self.style_layer_weights).to(device), persistent=False)

    @property
    def target_grams(self) -> list[torch.Tensor]:
        """The shots' Gram matrices per style layer, ``(m, C_l, C_l)`` each."""
        return [getattr(self, f"target_gram_{layer}") for layer in range(self.style_layers)]

    # --- the fused UNet ---------------------------------------------------------------------------------

    @torch.no_grad()
    def condition_features(self, images: torch.Tensor, t: torch.Tensor, generator) -> torch.Tensor:
        """E^(x^A) = m(t) E(x^A_t) + (1 - m(t)) z, without gradient (the condition branch)."""
        if self.options.condition == "noised":
            images, _ = noised(self.model.schedule, images, t, generator)
        features = encode(self.unet, images, t)
        noise = randn(features.shape, generator, features.device, features.dtype)
        m = gate(t, self.gate_time).to(features.device).view(-1, 1, 1, 1)
        return (m * features + (1 - m) * noise).detach()

    def fused_output(self, x_t: torch.Tensor, t: torch.Tensor, condition_images: torch.Tensor, generator) -> torch.Tensor:
        """The UNet's output at (x_t, t) with its bottleneck fused with the condition branch of ``condition_images``."""
        condition = self.condition_features(condition_images, t, generator)
        return forward_with_bottleneck(self.unet, x_t, t, lambda hidden: self.fusion(hidden, condition)).float()

    def translation_denoiser(self, images: torch.Tensor, generators=None) -> FusedDenoiser:
        return FusedDenoiser(self, images, generators)

    # --- losses ---------------------------------------------------------------------------------------

    def _checkpoint_times(self, cosine_times: torch.Tensor, device) -> torch.Tensor:
        return self.checkpoint_time_of[cosine_times.to(self.checkpoint_time_of.device)].to(device)

    def _diffusion_distance(self, output: torch.Tensor, x_t: torch.Tensor, times: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Per-sample |eps^ - eps| (l1) or (eps^ - eps)^2 (l2), averaged over pixels: Eq. 6 with eps^ read from the
        model's output of any prediction type."""
        return prediction_error(self.model.schedule.predict(output.float(), x_t, times).eps, noise, self.options.diffusion_loss)

    def _shot_diffusion(self, shots: torch.Tensor, cosine_times: torch.Tensor, generator) -> torch.Tensor:
        """Eq. 6 on target shots with the plain UNet (no fusion), per sample."""
        times = self._checkpoint_times(cosine_times, shots.device)
        x_t, noise = noised(self.model.schedule, shots, times, generator)
        return self._diffusion_distance(self.unet(x_t, times).sample, x_t, times, noise)

    def _source_terms(self, count: int, cosine_times: torch.Tensor, generator, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(L_DDC, L_style, Eq. 5 over the shots' spread sum_l w_l s_l, or None for a single shot) per sample for
        ``count`` source images from the pool at ``cosine_times``."""
        index = torch.randint(len(self.source_pool), (count,), generator=generator).to(self.source_pool.device)
        sources = self.source_pool[index].to(device)
        times = self._checkpoint_times(cosine_times, device)
        x_t, _ = noised(self.model.schedule, sources, times, generator)
        output = self.fused_output(x_t, times, sources, generator)
        translated = self.model.schedule.predict(output, x_t, times).x0.clamp(-1, 1)
        embedding, maps = self.encoder(translated)
        ddc = ddc_distance(embedding, self.source_embeddings[index].to(device), self.direction)
        per_shot = shot_distances(maps, self.target_grams)
        distances = per_shot.mean(dim=1)
        if self.options.style_rule == "nearest":
            style = nearest_style_distance(per_shot, self.style_layer_weights, self.nearest_spread)
        else:
            floors = self.style_spread if self.options.style_rule == "hinge" else None
            style = style_distance(maps, self.target_grams, self.style_layer_weights, floors, distances)
        spread = float(self.style_spread.cpu() @ torch.tensor(self.style_layer_weights))
        with torch.no_grad():
            score = style_distance(maps, self.target_grams, self.style_layer_weights, distances=distances) / spread if spread > 0 else None
        return ddc, style, score

    def losses(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        if self.stage == "init":
            return self._initialisation_losses(batch)
        if self.encoder is None:
            raise TenshotError("phasic adaptation needs setup() with the shots and source images first")
        if batch.images.shape[0] < 2:
            raise TenshotError("phasic needs at least 2 images per micro-batch (half pair with source images); raise --batch-size")
        if self.options.weighting == "code":
            return self._code_losses(batch)
        if self.options.weighting == "baseline":
            return self._baseline_losses(batch)
        return self._paper_losses(batch)

    def _initialisation_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Stage 2: the denoising loss of the fused UNet conditioned on the image itself, t ~ U{0..T-1}."""
        images = batch.images
        cosine_times = torch.randint(0, COSINE_TIMESTEPS, (images.shape[0],), generator=batch.generator)
        times = self._checkpoint_times(cosine_times, images.device)
        x_t, noise = noised(self.model.schedule, images, times, batch.generator)
        output = self.fused_output(x_t, times, images, batch.generator)
        loss = self._diffusion_distance(output, x_t, times, noise).mean()
        return {"total": loss}

    def _code_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The code's phasic schedule (module docstring): one optimiser step of ``train-whole.py``, the rest of
        the shots at every time the transfer terms leave."""
        options, generator, shots = self.options, batch.generator, batch.images
        half = shots.shape[0] // 2
        large, rest = code_times(half, shots.shape[0] - half, options.gate_time, generator)
        transfer, weight_large, ddc, style, spread = self._code_transfer(half, large, generator, shots.device)
        diffusion_large = self._shot_diffusion(shots[:half], large, generator)
        diffusion_rest = self._shot_diffusion(shots[half:], rest, generator)
        total = (
            transfer
            + ((CODE_WEIGHT_CEILING - weight_large) * diffusion_large).mean()
            + (code_rest_weight(rest, options.gate_time).to(shots.device) * diffusion_rest).mean()
        )
        return _terms(total, ddc, style, spread, torch.cat([diffusion_large, diffusion_rest]))

    def _code_transfer(self, count: int, cosine_times: torch.Tensor, generator, device):
        """mean[a(t) (l_DDC L_DDC + l_style L_style)] over ``count`` source images at ``cosine_times``, with a(t), L_DDC,
        L_style and the spread score per sample."""
        weight = (CODE_WEIGHT_BASE ** (cosine_times.float() / COSINE_TIMESTEPS)).to(device)
        ddc, style, spread = self._source_terms(count, cosine_times, generator, device)
        transfer = (weight * self.options.ddc_weight * ddc).mean() + (weight * self.options.style_weight * style).mean()
        return transfer, weight, ddc, style, spread

    def _baseline_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """weighting=baseline: c times fine-tuning's own loss on every shot (every time, min-SNR weighted) plus the
        code's transfer terms on B/2 source images at t ~ U{T_s..799}."""
        generator, shots = batch.generator, batch.images
        half = shots.shape[0] // 2
        large = torch.randint(self.options.gate_time, PHASE_SPLIT, (half,), generator=generator)
        transfer, _, ddc, style, spread = self._code_transfer(half, large, generator, shots.device)
        diffusion = diffusion_loss(self.unet, self.model.schedule, shots, generator)
        return _terms(transfer + CODE_WEIGHT_CEILING * diffusion["loss"], ddc, style, spread, diffusion["weighted"])

    def _paper_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Eq. 7: m(t)(1 - w(t)) (l_DDC L_DDC + l_style L_style) + w(t) L_dif, w(t) = 1 - (t/T)^alpha."""
        options, generator, shots = self.options, batch.generator, batch.images
        half = shots.shape[0] // 2
        source_times = torch.randint(0, COSINE_TIMESTEPS, (half,), generator=generator)
        shot_times = torch.randint(0, COSINE_TIMESTEPS, (shots.shape[0],), generator=generator)

        def w(cosine_times):
            return (1.0 - (cosine_times.float() / COSINE_TIMESTEPS) ** options.alpha).to(shots.device)

        ddc, style, spread = self._source_terms(half, source_times, generator, shots.device)
        m = gate(self._checkpoint_times(source_times, shots.device), self.gate_time)
        transfer = (m * (1 - w(source_times)) * (options.ddc_weight * ddc + options.style_weight * style)).mean()
        diffusion = self._shot_diffusion(shots, shot_times, generator)
        total = transfer + (w(shot_times) * diffusion).mean()
        return _terms(total, ddc, style, spread, diffusion)

    # --- saving ---------------------------------------------------------------------------------------

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        return {f"fusion.{name}": value for name, value in self.fusion.state_dict().items()}

    def load_extra_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        restore_tensors(self.fusion, tensors, self.extra_tensors(), "fusion.", "this model's phasic fusion")
