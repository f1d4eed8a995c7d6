"""Source-domain images for the methods that need them (Phasic: the DDC direction, the fusion initialisation;
text-to-image runs: the class images of their class prompt, :func:`prompt_samples`).

Where they come from, in order (METHODS.md, "How tenshot applies them"):

1. ``--source-data``: a folder or ``emoji:STYLE[:SPLIT]`` (default split ``all``);
2. the dataset the source model's card names: the ``data`` of a ``tenshot pretrain`` run's ``config.yaml``, or
   the ``--data`` of the ``tenshot pretrain`` command in the ``README.md`` beside the weights (the shipped
   ``noto-32`` names ``emoji:noto``); a card naming a dataset that cannot be loaded is an error, not a fallback;
3. otherwise samples drawn from the source model (25-step DDIM, seed 0), cached by the model's weights.

At most ``count`` images are used: a fixed random choice (seed 0, whatever the training seed) when there are more,
so that everything cached per source model sees the same images.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import torch

from .cache import cache_root, content_key, replace_file
from .errors import TenshotError
from .runs import read_run_config
from .models.unet import DiffusionModel, resolve_model_folder

SAMPLE_STEPS = 25
SAMPLES_VERSION = "source-samples-1"
PROMPT_SAMPLES_VERSION = "prompt-samples-1"
_PRETRAIN_DATA = re.compile(r"tenshot\s+pretrain\b[^`]*?--data[ =]+(\S+)")


def model_fingerprint(model: DiffusionModel) -> str:
    """SHA-256 of a model's weights and schedule (a text-to-image model's VAE and text encoder too): the key of what
    is cached per source model."""
    digest = hashlib.sha256(json.dumps(model.schedule.config, sort_keys=True, default=str).encode())
    # a fresh LoRA (B = 0) changes nothing: the key is its base model's
    weights = {name.replace(".base_layer", ""): value for name, value in model.unet.state_dict().items() if ".lora_" not in name}
    for part in ("vae", "text_encoder"):
        if hasattr(model, part):
            weights.update({f"{part}/{name}": value for name, value in getattr(model, part).state_dict().items()})
    for name, value in sorted(weights.items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


def card_dataset(reference: str | Path) -> str | None:
    """The dataset a source model's card names (module docstring), or None."""
    folder = resolve_model_folder(reference)
    values = read_run_config(folder.parent) if folder.name == "model" else None
    if values and "data" in values and "method" not in values:
        return str(values["data"])
    card = folder / "README.md"
    if card.is_file():
        match = _PRETRAIN_DATA.search(card.read_text(errors="replace").replace("\\\n", " "))
        if match:
            return match.group(1)
    return None


def _choose(files: list[Path], count: int) -> list[Path]:
    if len(files) <= count:
        return files
    picked = np.sort(np.random.default_rng(0).choice(len(files), count, replace=False))
    return [files[i] for i in picked]


def _sampled(model: DiffusionModel, count: int) -> np.ndarray:
    """``count`` samples of the source model, cached under ``<cache>/source-samples`` by its weights and sample size."""
    from .methods.finetune import FineTune
    from .sampling import generate

    key = content_key(SAMPLES_VERSION, model_fingerprint(model), model.noise_shape, count, SAMPLE_STEPS)
    path = cache_root() / "source-samples" / f"{key}.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    with torch.no_grad():
        images = generate(FineTune(model).eval(), count, steps=SAMPLE_STEPS, seed=0, progress=True)
    replace_file(path, lambda staging: np.save(staging, images, allow_pickle=False))
    return images


def prompt_samples(model, prompt: str, count: int, steps: int, guidance_scale: float, device="cpu") -> np.ndarray:
    """``count`` images of a text-to-image source model for ``prompt`` (DreamBooth's class images: classifier-free
    guidance ``guidance_scale``, ``steps`` DDIM steps, seed 0), cached under ``<cache>/prompt-samples`` by the UNet's
    weights, its sample size (the same weights draw at another size), the prompt and the settings. Drawn on
    ``device``; the model is left there."""
    from .methods.text_to_image import PromptSampler
    from .sampling import generate

    key = content_key(PROMPT_SAMPLES_VERSION, model_fingerprint(model), model.noise_shape, prompt, count, steps, guidance_scale)
    path = cache_root() / "prompt-samples" / f"{key}.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    with torch.no_grad():
        images = generate(PromptSampler(model, prompt, guidance_scale).to(device).eval(), count, steps=steps, seed=0, progress=True)
    replace_file(path, lambda staging: np.save(staging, images, allow_pickle=False))
    return images


def load_source_images(source_data: str | None, reference: str | Path, model: DiffusionModel, count: int) -> np.ndarray:
    """Up to ``count`` source-domain images as uint8 ``(N, size, size, 3)`` (module docstring for the order)."""
    from .data.domains import domain_files
    from .data.images import load_images

    if source_data:
        return load_images(_choose(domain_files(source_data, model.size, "all"), count), model.size)
    named = card_dataset(reference)
    if named is None:
        return _sampled(model, count)
    try:
        return load_images(_choose(domain_files(named, model.size, "all"), count), model.size)
    except TenshotError as error:
        raise TenshotError(f"the source model's card names its data {named!r}, which could not be loaded ({error}); pass --source-data") from None
