"""What every method shares: the batch it receives and the interface the trainer drives (DESIGN.md, Interfaces)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ..errors import TenshotError
from ..models.frozen import keep_in_eval
from ..models.unet import DiffusionModel


@dataclass
class Batch:
    """Images in [-1, 1] ``(B, 3, H, W)`` and the generator every random draw of this step must use,
    so that a resumed run repeats an uninterrupted one exactly."""

    images: torch.Tensor
    generator: torch.Generator


@dataclass
class ParameterGroup:
    """One optimiser's parameters (DESIGN.md, Interfaces). A method that trains several optimisers (a GAN's
    generator and discriminator) declares one group per optimiser; the trainer steps them in the declared
    order, each on ``losses(batch, step, name)["total"]``, with AdamW at the run's learning rate times
    ``lr_scale`` and these ``betas``."""

    name: str
    parameters: list[torch.nn.Parameter]
    lr_scale: float = 1.0
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class Initialisation:
    """A stage a method trains on source-domain images before adaptation, cached per source model (Phasic's
    fusion initialisation). ``api.adapt`` runs it through the trainer while :meth:`Method.initialising` is on,
    then caches :meth:`Method.extra_tensors` and restores them with :meth:`Method.load_extra_tensors`.

    ``name``: its run subfolder and cache namespace. ``steps``, ``batch_size``, ``lr``: its training.
    ``settings``: what besides the source model and images changes its result (part of the cache key).
    ``may_train``: False when it must come from the cache. ``alone``: the run is this stage only.
    """

    name: str
    steps: int
    batch_size: int
    lr: float
    settings: dict
    may_train: bool = True
    alone: bool = False


def make_trainable(unet: torch.nn.Module, adapter: str, rank: int) -> None:
    """What of ``unet`` trains: every weight (``full``) or a LoRA of rank ``rank`` and scale 1 (alpha = rank) on
    its attention and residual convolutions, the base frozen (``lora``; :mod:`tenshot.models.lora`)."""
    if adapter == "lora":
        from ..models.lora import add_lora

        add_lora(unet, rank, alpha=rank)
    else:
        unet.requires_grad_(True)


def frozen_source_copy(unet: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of ``unet`` before any step, in eval mode: the source that DomainStudio's pairwise terms
    compare with. A LoRA adapter, still zero then, is folded away, so the copy is the base UNet exactly."""
    from ..models.lora import has_lora, merge_in_place

    source = copy.deepcopy(unet)
    return (merge_in_place(source) if has_lora(source) else source).requires_grad_(False).eval()


def restore_tensors(module: torch.nn.Module, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], prefix: str, what: str) -> None:
    """Load into ``module`` the ``tensors`` that a method's ``extra_tensors`` saved as ``expected`` (``module``'s
    state under ``prefix``); other names or shapes are one clear error saying the file is not ``what``."""
    if set(tensors) != set(expected) or any(tensors[name].shape != value.shape for name, value in expected.items()):
        found = ", ".join(sorted(tensors)[:3]) or "nothing"
        raise TenshotError(f"method.safetensors does not hold {what} (found {found}): a run of other options or another method")
    module.load_state_dict({name[len(prefix) :]: value for name, value in tensors.items()}, strict=False)


class Method(torch.nn.Module):
    """A trainable adaptation of a diffusion model.

    Subclasses implement :meth:`losses`. The trainer optimises ``losses(...)["total"]`` (per group of
    :meth:`parameter_groups`, in their order, when there are several), logs the rest, keeps
    an EMA of :meth:`averaged_module`, and at the end saves the averaged module as the run's ``model/`` and
    :meth:`extra_tensors` as ``method.safetensors``. A run is loaded back for sampling by building the method
    on ``model/`` with the run's options, then :meth:`setup` is skipped and :meth:`load_extra_tensors` restores
    what :meth:`extra_tensors` saved; :meth:`sample` is the method's own generation procedure.
    """

    name = "method"
    model: DiffusionModel
    # True when a step may leave some trainable parameters without a gradient (CRDI trains one time segment per
    # step): multi-process training must then let DDP look for them, and Adam skips them.
    some_parameters_unused = False
    # how many source-domain images setup() needs; api.adapt loads them into ``source_images`` before setup
    needs_source_images: int = 0
    source_images: torch.Tensor | None = None
    # how many class images of its class prompt setup() needs (text-to-image); api.adapt draws them into class_pixels
    needs_class_images: int = 0
    # submodules that never train (a frozen UNet, a frozen source copy): kept in eval mode, dropout off, by train()
    frozen_modules: tuple[str, ...] = ()
    # the sampler of `tenshot sample` and `evaluate` when none is named (sampling.sampler_choice)
    default_sampler = "dpm++"

    def __init__(self, model: DiffusionModel, options):
        """Registers the UNet being adapted as ``self.unet`` and keeps the method's options."""
        super().__init__()
        self.model = model
        self.unet = model.unet
        self.options = options

    def train(self, mode: bool = True):
        super().train(mode)
        keep_in_eval(self, self.frozen_modules)
        return self

    def setup(self, target: torch.Tensor) -> None:
        """Called once before training with every target image, ``(N, 3, H, W)`` in [-1, 1], for methods whose
        parameters or state depend on the whole set (CRDI: one embedding per shot). Nothing by default."""

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def parameter_groups(self) -> list[ParameterGroup]:
        """The optimisers the trainer steps, in order. One group of every trainable parameter by default, and
        then the trainer calls ``losses(batch, step)``; with several it calls ``losses(batch, step, name)``."""
        return [ParameterGroup("main", self.trainable_parameters())]

    def training_buffers(self) -> dict[str, torch.Tensor]:
        """Buffers that training changes and that a resumed run must restore to repeat an uninterrupted one
        (spectral-norm power-iteration vectors, batch-norm statistics), by their ``named_buffers`` names,
        checkpointed beside the trainable parameters. None by default."""
        return {}

    def averaged_module(self) -> torch.nn.Module:
        """The module whose EMA is sampled from and saved (the adapted UNet by default). At the end of training
        the EMA weights are copied into it, then ``model.unet`` is saved as the run's ``model/`` and
        :meth:`extra_tensors` as ``method.safetensors``, so it may hold more than the UNet (Phasic: UNet and fusion)."""
        return self.model.unet

    def initialisation(self) -> Initialisation | None:
        """A stage to train on source images before adaptation (:class:`Initialisation`), or None (default)."""
        return None

    def initialising(self, active: bool) -> None:
        """Switch :meth:`losses`, :meth:`trainable_parameters` and :meth:`averaged_module` to the
        :meth:`initialisation` stage (``active``) or back to adaptation."""
        raise NotImplementedError(f"method {self.name} has no initialisation stage")

    def losses(self, batch: Batch, step: int, phase: str | None = None) -> dict[str, torch.Tensor]:
        """The losses of one step (of the named ``phase``, a :class:`ParameterGroup`, for several groups)."""
        raise NotImplementedError

    def forward(self, batch: Batch, step: int, phase: str | None = None) -> dict[str, torch.Tensor]:
        """DDP synchronises gradients through ``forward``, so the trainer calls the method, not ``losses``."""
        if phase is None:
            return self.losses(batch, step)
        return self.losses(batch, step, phase)

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        """Method-specific tensors saved to ``method.safetensors`` (none for plain fine-tuning)."""
        return {}

    def load_extra_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`extra_tensors` saved, when a run is loaded for sampling."""
        if tensors:
            raise TenshotError(f"method {self.name} saves no method.safetensors, but the run has one ({', '.join(sorted(tensors)[:3])})")

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, *, steps: int = 25, sampler: str = "ddim", eta: float = 0.0, generators=None) -> torch.Tensor:
        """Images in [-1, 1] from standard-normal ``noise`` ``(B, 3, H, W)``; ``generators`` (one per sample) for
        any further draw, so sample k is the same image at any batch size. Default: DDIM (Song et al. 2021,
        Eq. 12), ancestral DDPM or DPM-Solver++(2M) (``dpm++``) of the adapted UNet, ``steps`` times of its
        schedule."""
        from ..diffusion.samplers import sample_by_name

        return sample_by_name(sampler, self.model.denoiser(), noise, self.model.schedule.timesteps(steps), eta=eta, generator=generators)

    def translation_denoiser(self, images: torch.Tensor, generators=None):
        """The denoiser :meth:`translate` runs on images of the source domain ``images``: the adapted UNet by
        default; Phasic conditions its content fusion on ``images``."""
        return self.model.denoiser()

    @torch.no_grad()
    def translate(self, images: torch.Tensor, settings, generators=None, encoder=None) -> torch.Tensor:
        """Images of the source domain in [-1, 1] ``(B, 3, H, W)`` -> the same images in the adapted domain:
        encoding (``encoder``: the source model's denoiser) and denoising with iterative cross-domain structure
        guidance (:func:`tenshot.methods.translation.structure_guided_translation`, Phasic Sec. 3.4) through
        :meth:`translation_denoiser`; ``settings`` is a :class:`~tenshot.methods.translation.TranslationSettings`."""
        from .translation import structure_guided_translation

        return structure_guided_translation(self.translation_denoiser(images, generators), images, settings, generators, encoder)
