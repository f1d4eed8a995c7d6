"""Generation from a model or a run: rebuilding a run's method, batches, devices, writing sample folders."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .cache import replace_folder
from .errors import TenshotError
from .runs import occupied, read_run_config

if TYPE_CHECKING:
    from .methods import Method


def resolve_device(spec: str = "auto") -> torch.device:
    """The device ``--device`` names: ``auto`` (CUDA when torch sees it, else the CPU), ``cpu``, ``cuda`` or
    ``cuda:N``; a CUDA device that is not there is one clear error, before any work."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise TenshotError(f"--device {spec}: torch sees {count} CUDA device(s) here; use --device cpu or auto")
    return device


def load_for_sampling(reference: str | Path, device: str | torch.device = "cpu", keep_adapters: bool = False) -> Method:
    """What ``sample`` and ``evaluate`` draw from: a run folder through its own method (its ``config.yaml``
    names the method and options, ``model/`` holds the averaged weights, ``method.safetensors`` the method's
    tensors); any other model reference through plain fine-tuning's sampler (DDIM or DDPM of the UNet), or
    through GDD's one evaluation when its config marks it a one-step generator (a distilled ``model/``).
    A LoRA run's method adds zero adapters to its merged ``model/``; they are folded away (a quarter of the
    sampling time) unless ``keep_adapters``, for loading a checkpoint's adapter into them (``export``)."""
    from safetensors.torch import load_file

    from .methods import build_method, is_one_step
    from .models.lora import has_lora, merge_in_place
    from .models.unet import load_model

    model = load_model(reference, device)
    run = Path(reference)
    name, options = ("gdd" if is_one_step(model.unet) else "finetune"), {}
    config = read_run_config(run) if run.is_dir() else None
    if config and "method" in config:
        name, options = config["method"], config.get("options") or {}
    method = build_method(name, model, options)
    extra = run / "method.safetensors"
    method.load_extra_tensors(load_file(extra, device=str(device)) if run.is_dir() and extra.is_file() else {})
    if not keep_adapters and has_lora(method.unet):
        merge_in_place(method.unet)
    return method.to(device).eval()


TEXT_TO_IMAGE_SAMPLE_BATCH = 4  # Stable Diffusion at 512 px: 8 guided UNet inputs and 4 VAE decodes a call


def sampler_choice(method, sampler: str | None, steps: int | None, eta: float = 0.0) -> tuple[str, int]:
    """The sampler and steps of ``tenshot sample`` and ``evaluate``: those given, else DDIM when an ``eta`` above
    0 asks for its noise, else ``method.default_sampler`` (DPM-Solver++(2M); DDIM where a method's sampling is
    defined on DDIM steps), at that sampler's ``DEFAULT_STEPS``: DPM-Solver++(2M) at 10 steps reaches DDIM-25's
    fid-el0 (``bench/results/samplers.md``)."""
    from .config import DEFAULT_STEPS

    sampler = sampler or ("ddim" if eta else method.default_sampler)
    return sampler, steps or DEFAULT_STEPS[sampler]


def default_sample_batch(device, model=None) -> int:
    """Images per sampling call when none is given: 16 on a CPU, the fastest of the sizes measured (larger calls
    fall out of cache; ``bench/README.md``, "Option studies"), 64 on an accelerator; 4 for a text-to-image
    ``model``, whose calls are two UNet passes a step and a VAE decode of full-size images."""
    from .models.text_to_image import TextToImageModel

    if isinstance(model, TextToImageModel):
        return TEXT_TO_IMAGE_SAMPLE_BATCH
    return 16 if torch.device(device).type == "cpu" else 64


def _in_batches(n: int, batch_size: int, seed: int, start: int, desc: str, progress: bool, draw) -> np.ndarray:
    """``draw(first, generators)`` for each run of ``batch_size`` images (``first`` the run's offset, one
    generator per image k of seed ``(seed, start + k)``), as one uint8 array ``(n, H, W, 3)``."""
    from tqdm.auto import tqdm

    from .data.images import to_uint8
    from .diffusion.samplers import sample_generators

    chunks = []
    with torch.no_grad(), tqdm(total=n, disable=not progress, desc=desc, unit="img", dynamic_ncols=True) as bar:
        for first in range(0, n, batch_size):
            generators = sample_generators(seed, range(start + first, start + min(first + batch_size, n)))
            chunks.append(to_uint8(draw(first, generators)))
            bar.update(len(generators))
    return np.concatenate(chunks)


def generate(method, n: int, *, steps: int = 25, sampler: str = "ddim", eta: float = 0.0, seed: int = 0, batch_size: int | None = None, start: int = 0, progress: bool = False) -> np.ndarray:
    """``n`` images as uint8 ``(n, H, W, 3)`` from ``method.sample`` (:func:`load_for_sampling`),
    ``batch_size`` at a time (default :func:`default_sample_batch`); image k uses seed ``(seed, start + k)``
    whatever ``batch_size``."""
    from .diffusion.samplers import randn

    shape = method.model.noise_shape
    device = next(method.model.unet.parameters()).device

    def draw(first: int, generators) -> torch.Tensor:
        noise = randn((len(generators), *shape), generators, device)
        return method.sample(noise, steps=steps, sampler=sampler, eta=eta, generators=generators)

    return _in_batches(n, batch_size or default_sample_batch(device, method.model), seed, start, "sample", progress, draw)


def translate_images(method, images: np.ndarray, settings, *, encoder=None, seed: int = 0, batch_size: int = 16, progress: bool = False) -> np.ndarray:
    """Source-domain uint8 ``images`` translated by ``method.translate`` with ``settings`` (``encoder``: the source
    model's denoiser), ``batch_size`` at a time; image k uses seed ``(seed, k)`` whatever ``batch_size``."""
    from .data.images import to_tensor

    device = next(method.model.unet.parameters()).device

    def draw(first: int, generators) -> torch.Tensor:
        return method.translate(to_tensor(images[first : first + len(generators)]).to(device), settings, generators, encoder)

    return _in_batches(len(images), batch_size, seed, 0, "translate", progress, draw)


def write_samples(images: np.ndarray, out: Path, names: list[Path] | None = None) -> tuple[Path, Path]:
    """Fill ``out`` with ``names`` (default ``000000.png``, ...; nested names make their folders) and nothing
    else, and write the grid of the first 64 beside it as ``out.png``."""
    from .data.images import make_grid, save_png

    if occupied(out):
        raise TenshotError(f"{out}: folder exists and is not empty; choose another --out")
    names = names or [Path(f"{index:06d}.png") for index in range(len(images))]

    def write(staging: Path) -> None:
        for name, image in zip(names, images):
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            save_png(image, staging / name)

    replace_folder(out, write)
    grid = out.with_name(out.name + ".png")
    save_png(make_grid(images[:64]), grid)
    return out, grid
