"""A method's initialisation stage (:class:`tenshot.methods.base.Initialisation`): trained once per source model
on source images by the same trainer as adaptation, and cached.

The cache file ``<cache>/initialisation/NAME-KEY.safetensors`` (``$TENSHOT_CACHE`` or ``~/.cache/tenshot``)
holds the method's :meth:`~tenshot.methods.base.Method.extra_tensors` after the stage; KEY hashes the source
model's weights and schedule, the source images, the stage's steps, batch size and learning rate, and its
``settings``. The stage trains with seed 0 whatever the run's seed, so every run from one source model shares it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cache import cache_root, content_key, replace_file
from ..config import TrainConfig
from ..errors import TenshotError
from ..methods.base import Initialisation, Method

VERSION = "initialisation-1"


@dataclass
class InitialisationResult:
    steps: int
    seconds: float
    cached: bool
    final_losses: dict


def cache_file(spec: Initialisation, model_key: str, source: np.ndarray) -> Path:
    settings = json.dumps(spec.settings, sort_keys=True, default=str)
    key = content_key(VERSION, spec.name, model_key, source, spec.steps, spec.batch_size, spec.lr, settings)
    return cache_root() / "initialisation" / f"{spec.name}-{key}.safetensors"


def initialise(method: Method, spec: Initialisation, source: np.ndarray, model_key: str, train: TrainConfig, folder: Path, resume: bool) -> InitialisationResult:
    """Load the stage from the cache, or train it in ``folder`` (resuming its checkpoint with ``resume``) and
    cache it. On return the method holds the stage's result and is back in adaptation mode."""
    from safetensors.torch import load_file, save_file

    from .checkpoint import list_checkpoints
    from .loop import Trainer

    path = cache_file(spec, model_key, source)
    if path.is_file():
        method.load_extra_tensors(load_file(path))
        return InitialisationResult(steps=0, seconds=0.0, cached=True, final_losses={})
    if not spec.may_train:
        raise TenshotError(f"no cached {spec.name} for this source model, source data and settings: run the initialisation stage first (e.g. the default --stage both)")
    config = TrainConfig(
        steps=spec.steps,
        batch_size=spec.batch_size,
        lr=spec.lr,
        mixed_precision=train.mixed_precision,
        seed=0,
        checkpoint_every=spec.steps,
        keep_checkpoints=1,
        preview_count=0,
        log_every=train.log_every,
    )
    started = time.perf_counter()
    method.initialising(True)
    trainer = Trainer(method, source, config, folder, resume=resume and bool(list_checkpoints(folder / "checkpoints")))
    result = trainer.train()
    result.ema.copy_to(method.averaged_module())
    if trainer.is_main:
        extra = {k: v.detach().cpu().contiguous() for k, v in method.extra_tensors().items()}
        replace_file(path, lambda staging: save_file(extra, staging))
    trainer.accelerator.wait_for_everyone()
    method.initialising(False)
    return InitialisationResult(steps=result.steps, seconds=time.perf_counter() - started, cached=False, final_losses=result.final_losses)
