"""Atomic, safetensors-only training checkpoints: ``checkpoints/step-N/`` holds everything to resume exactly.

Files: ``trainable.safetensors`` (the method's trainable parameters), ``ema.safetensors``,
``optimizer.safetensors`` (tensors, with the non-tensor state in its metadata; a method with several
parameter groups has one ``optimizer-GROUP.safetensors`` per group instead) and ``trainer.json``.
A checkpoint is written into a hidden sibling folder and renamed into place, so an interrupted write
never replaces the last good one. Nothing is unpickled.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..cache import replace_folder
from ..errors import TenshotError, warn

STEP_PATTERN = re.compile(r"^step-(\d+)$")
OPTIMIZER_FILE = "optimizer.safetensors"
GROUP_OPTIMIZER = re.compile(r"^optimizer-(.+)\.safetensors$")


def optimizer_to_tensors(state: dict) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Split an optimizer ``state_dict`` into safetensors tensors and JSON metadata."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"state.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    metadata = {"param_groups": json.dumps(state["param_groups"]), "scalars": json.dumps(scalars)}
    return tensors, metadata


def optimizer_from_tensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> dict:
    """Inverse of :func:`optimizer_to_tensors`."""
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for index, entries in json.loads(metadata["scalars"]).items():
        state.setdefault(int(index), {}).update(entries)
    return {"state": state, "param_groups": json.loads(metadata["param_groups"])}


def _optimizer_files(optimizer: dict) -> dict[str, dict]:
    """File name -> state: ``optimizer.safetensors`` for one optimizer, ``optimizer-NAME.safetensors`` per group."""
    if "param_groups" in optimizer:
        return {OPTIMIZER_FILE: optimizer}
    return {f"optimizer-{name}.safetensors": state for name, state in optimizer.items()}


def _read_optimizer(file: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    return optimizer_from_tensors(tensors, metadata)


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``folder`` as ``(step, path)``, oldest first."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = STEP_PATTERN.match(path.name)
        if match and (path / "trainer.json").is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def save_checkpoint(
    folder: Path,
    step: int,
    trainable: dict[str, torch.Tensor],
    ema: dict[str, torch.Tensor],
    optimizer: dict,
    trainer: dict,
    keep: int,
) -> Path:
    """Write ``folder/step-N`` atomically, then delete all but the newest ``keep`` checkpoints.

    ``optimizer`` is one optimizer's ``state_dict`` or a mapping ``{group name: state_dict}``.
    """

    def write(staging: Path) -> None:
        save_file({k: v.detach().cpu().contiguous() for k, v in trainable.items()}, staging / "trainable.safetensors")
        save_file({k: v.detach().cpu().contiguous() for k, v in ema.items()}, staging / "ema.safetensors")
        for file, state in _optimizer_files(optimizer).items():
            tensors, metadata = optimizer_to_tensors(state)
            save_file(tensors, staging / file, metadata=metadata)
        (staging / "trainer.json").write_text(json.dumps({**trainer, "step": step}, indent=2) + "\n")

    target = folder / f"step-{step}"
    replace_folder(target, write, durable=True)
    for _, old in list_checkpoints(folder)[:-keep]:
        shutil.rmtree(old)
    return target


def load_newest_readable(folder: Path) -> tuple[int, Path, dict]:
    """The newest checkpoint under ``folder`` that reads back, as ``(step, path, state)``: a newer one that does
    not (a truncated copy, a disk error) is passed over with one warning line, which is what
    ``--keep-checkpoints`` above 1 is for. None readable: the newest one's error."""
    checkpoints = list_checkpoints(folder)
    if not checkpoints:
        raise TenshotError(f"{folder.parent}: no checkpoint to resume from")
    first_error = None
    for step, path in reversed(checkpoints):
        try:
            state = load_checkpoint(path)
        except TenshotError as error:
            warn(f"{error}; trying the one before")
            first_error = first_error or error
            continue
        return step, path, state
    raise first_error


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint folder back: ``trainable``, ``ema``, ``optimizer`` (as it was saved: one state dict, or
    ``{group name: state dict}``) and ``trainer`` entries."""
    try:
        if (path / OPTIMIZER_FILE).is_file():
            optimizer = _read_optimizer(path / OPTIMIZER_FILE)
        else:
            groups = {match.group(1): file for file in path.iterdir() if (match := GROUP_OPTIMIZER.match(file.name))}
            if not groups:
                raise OSError(f"no {OPTIMIZER_FILE}")
            optimizer = {name: _read_optimizer(file) for name, file in sorted(groups.items())}
        return {
            "trainable": load_file(str(path / "trainable.safetensors")),
            "ema": load_file(str(path / "ema.safetensors")),
            "optimizer": optimizer,
            "trainer": json.loads((path / "trainer.json").read_text()),
        }
    except (OSError, KeyError, ValueError, json.JSONDecodeError, SafetensorError) as error:
        raise TenshotError(f"{path}: unreadable checkpoint ({error})") from None
