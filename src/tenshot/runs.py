"""Run folders (DESIGN.md, "Run folder"): preparing one for a training command, writing its weights, and reading
back the ``config.yaml`` that names its method, options and data."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .cache import remove_staging, replace_folder
from .config import load_yaml, save_yaml, to_dict
from .errors import TenshotError

RUN_CONFIG = "config.yaml"


def occupied(out: Path) -> bool:
    """True for a non-empty folder; a file in the way is an error."""
    if out.exists() and not out.is_dir():
        raise TenshotError(f"{out}: exists and is not a folder")
    return out.exists() and any(out.iterdir())


def read_run_config(run: str | Path, required: bool = False) -> dict | None:
    """The mapping in ``run/config.yaml``. Without one: None, or with ``required`` a one-line error; a file that
    is not YAML, or not a mapping, is always an error."""
    import yaml

    run = Path(run)
    path = run / RUN_CONFIG
    if not path.is_file():
        if not required:
            return None
        raise TenshotError(f"{run}: no such run folder" if not run.is_dir() else f"{run}: not a run folder (no {RUN_CONFIG})")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise TenshotError(f"{path}: unreadable config ({error})") from None
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise TenshotError(f"{path}: expected a mapping")
    return values


def prepare_run(out: Path, config, resume: bool) -> None:
    """A new run needs an absent or empty folder; a resumed one the same config, but for ``train.steps`` (which
    may grow), ``train.keep_checkpoints`` and ``train.report_to`` (what is kept and logged, not what is trained)
    and ``out`` (the folder may have moved).

    A resume first deletes the staging folders a killed process left (:func:`tenshot.cache.remove_staging`).
    Under ``torchrun``/``accelerate launch`` every process runs this: all of them check before any writes
    (otherwise the first to write ``config.yaml`` makes the others see a non-empty folder), then only the
    main process writes.
    """
    from .train.loop import distributed_state

    state = distributed_state()
    saved = out / RUN_CONFIG
    if resume:
        if not saved.is_file():
            raise TenshotError(f"{out}: nothing to resume (no {RUN_CONFIG})")
        previous = to_dict(load_yaml(type(config), saved))
        current = to_dict(config)
        for values in (previous, current):  # what may differ: a longer run, its retention, a folder moved elsewhere, the tracker
            for key in ("steps", "keep_checkpoints", "report_to"):
                values["train"].pop(key, None)
            values.pop("out")
        if previous != current:
            changed = sorted(k for k in current if current[k] != previous.get(k))
            raise TenshotError(f"{out}: --resume needs the same settings as the run (changed: {', '.join(changed)})")
    elif occupied(out):
        raise TenshotError(f"{out}: folder exists and is not empty; choose another --out or pass --resume")
    state.wait_for_everyone()
    if state.is_main_process:
        if resume:  # the half-made writes of a process killed mid-checkpoint or mid-export
            for folder in (out, out / "checkpoints"):
                remove_staging(folder)
        out.mkdir(parents=True, exist_ok=True)
        save_yaml(config, saved)
    state.wait_for_everyone()


ONE_STEP_SNIPPET = """\
It is a one-step generator (GDD): one UNet evaluation at time `t = unet.config["{key}"]` on scaled noise,
read as an x0-prediction of the scheduler's prediction type:

```python
import torch
from diffusers import DDPMPipeline

pipe = DDPMPipeline.from_pretrained("PATH/TO/model")
unet, scheduler = pipe.unet, pipe.scheduler
t = unet.config["{key}"]
abar = scheduler.alphas_cumprod[t]
x = (1 - abar).sqrt() * torch.randn(16, 3, unet.config.sample_size, unet.config.sample_size)
out = unet(x, t).sample
images = (abar.sqrt() * x - (1 - abar).sqrt() * out).clamp(-1, 1)  # v-prediction (scheduler.config.prediction_type)
# epsilon: ((x - (1 - abar).sqrt() * out) / abar.sqrt()); sample: out
```
"""


def model_card(run_config: dict, one_step_key: str | None = None) -> str:
    """``model/README.md`` of a run: the hub's metadata block (library, pipeline, tags, base model when it is a hub
    id) and how the run was made and is sampled, from its ``config.yaml``."""
    method = run_config.get("method", "pretrain")
    base = run_config.get("source") or run_config.get("model")
    prompt = (run_config.get("options") or {}).get("prompt")
    tags = ["tenshot", "few-shot" if method != "pretrain" else "from-scratch", method]
    task = "text-to-image" if prompt else "unconditional-image-generation"
    meta = ["library_name: diffusers", f"pipeline_tag: {task}", f"tags: [{', '.join(tags)}]"]
    if base and str(base).count("/") == 1 and not Path(str(base)).exists():
        meta.append(f"base_model: {base}")
    made = {"source": "from", "model": "distilled from", "target": "to the images of", "data": "on"}
    origin = ", ".join(f"{label} `{run_config[key]}`" for key, label in made.items() if run_config.get(key))
    steps = (run_config.get("train") or {}).get("steps")
    pipeline, call = ("StableDiffusionPipeline", f"({json.dumps(prompt)}, num_images_per_prompt=4)") if prompt else ("DDPMPipeline", "(batch_size=16)")
    lines = ["---", *meta, "---", "", f"# {method}, made with tenshot", "",
             f"`{method}` {origin}, {steps} optimiser steps; the weights are the run's EMA. The run's `config.yaml` has every setting.", "",
             "```python", f"from diffusers import {pipeline}", "", f'images = {pipeline}.from_pretrained("PATH/TO/model"){call}.images', "```", ""]  # fmt: skip
    card = "\n".join(lines)
    return card + ("\n" + ONE_STEP_SNIPPET.format(key=one_step_key) if one_step_key else "")


def write_weights(method, out: Path) -> None:
    """``out/model/`` (a diffusers pipeline folder with its model card) from ``method.model`` and
    ``out/method.safetensors`` from its extra tensors (a run's averaged weights, once the EMA has been copied into
    the method's modules). A UNet with a LoRA is saved merged, and its adapter alone as ``out/adapter/`` (peft's
    layout, naming the run's source as its base)."""
    from safetensors.torch import save_file

    from .methods.gdd import ONE_STEP_KEY, is_one_step
    from .models.lora import has_lora, merged, save_adapter
    from .models.unet import save_model

    unet = method.model.unet
    run_config = read_run_config(out) or {}
    if has_lora(unet):
        source = str(run_config.get("source", ""))
        base = str(Path(source).resolve()) if source and Path(source).exists() else source
        replace_folder(out / "adapter", lambda staging: save_adapter(unet, staging, base))
        unet = merged(unet)
    card = model_card(run_config, ONE_STEP_KEY if is_one_step(unet) else None)
    replace_folder(out / "model", lambda staging: save_model(dataclasses.replace(method.model, unet=unet), staging, card))
    extra = method.extra_tensors()
    if extra:
        save_file({k: v.detach().cpu().contiguous() for k, v in extra.items()}, out / "method.safetensors")
