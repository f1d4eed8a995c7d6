"""denoising-diffusion-pytorch itself, of a given release, as the reference the converter is checked against.

``make test`` installs releases 0.28.0 and 2.3.4 side by side with ``pip install --no-deps --target
.venv/dd-pytorch/VERSION`` (one environment cannot hold two versions of a package). :func:`package` imports one
of them under its own name without running its ``__init__`` (which imports every model of the package), with
``torchvision`` and ``pytorch_fid`` stubbed: the package imports them at the top for its Trainer's data loading
and FID, which the Unet and GaussianDiffusion never call, and torchvision does not import beside the CPU torch
pinned here."""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import pytest

VERSIONS = ("0.28.0", "2.3.4")
ROOT = Path(sys.prefix) / "dd-pytorch"
STUBS = ("torchvision", "torchvision.transforms", "torchvision.utils", "pytorch_fid", "pytorch_fid.inception")


def _stub(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__getattr__ = lambda attribute: types.SimpleNamespace()
    return module


def package(version: str) -> types.ModuleType:
    """The module ``denoising_diffusion_pytorch.denoising_diffusion_pytorch`` of ``version``."""
    folder = ROOT / version / "denoising_diffusion_pytorch"
    if not folder.is_dir():
        pytest.fail(f"{folder} is missing: `make test` installs denoising-diffusion-pytorch {version} there")
    saved = {name: sys.modules.pop(name) for name in list(sys.modules) if name == "denoising_diffusion_pytorch" or name.startswith("denoising_diffusion_pytorch.")}
    stubbed = {name: sys.modules.get(name) for name in STUBS}
    try:
        for name in STUBS:
            sys.modules[name] = _stub(name)
        root = types.ModuleType("denoising_diffusion_pytorch")
        root.__path__ = [str(folder)]
        sys.modules["denoising_diffusion_pytorch"] = root
        return importlib.import_module("denoising_diffusion_pytorch.denoising_diffusion_pytorch")
    finally:
        for name in [n for n in sys.modules if n == "denoising_diffusion_pytorch" or n.startswith("denoising_diffusion_pytorch.")]:
            del sys.modules[name]
        sys.modules.update(saved)
        for name, module in stubbed.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
