"""Shared fixtures: tiny models, small image folders, and how to run the CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tenshot.diffusion.schedule import NoiseSchedule, Prediction

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def write_images(folder: Path, count: int, size: int = 16, seed: int = 0) -> Path:
    """``count`` random smooth RGB PNGs of ``size`` px in ``folder`` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        low = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        image = Image.fromarray(low).resize((size, size), Image.BILINEAR)
        image.save(folder / f"{index:03d}.png")
    return folder


def uniform_images(seed: int, count: int, size: int):
    """``count`` images as a float tensor ``(count, 3, size, size)``, uniform in [-1, 1], from ``seed``."""
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """Eight 16 px RGB images: a tiny training domain."""
    return write_images(tmp_path_factory.mktemp("images") / "data", 8, 16)


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["OMP_NUM_THREADS"] = "1"  # the in-process runs of the tests use one thread too (conftest)
    env.update(extra)
    return env


def run_cli(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """``tenshot ARGS`` in a subprocess, output captured as text."""
    return subprocess.run(
        [str(VENV_BIN / "tenshot"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(),
        cwd=kwargs.pop("cwd", None),
        **kwargs,
    )


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One intra-op thread: the tensors here are tiny, and on a shared 2-core machine torch's default
    thread pool spins against other processes (measured 20x slower under load)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def interrupt_when(process: subprocess.Popen, ready, sig: int, timeout: float = 240, settle: float = 0.0) -> str:
    """Wait (up to ``timeout`` s) until ``ready()``, then ``settle`` s more, send ``sig`` to ``process`` and return
    its stderr once it has exited; the process is killed if anything fails on the way."""
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, f"not ready within {timeout} s"
            time.sleep(0.05)
        time.sleep(settle)
        process.send_signal(sig)
        return process.communicate(timeout=120)[1]
    finally:
        if process.poll() is None:
            process.kill()


class ConstantNoiseDenoiser:
    """Predicts the same noise everywhere: the DDIM ODE is then a straight line, which Euler steps
    (sampling and inversion alike) follow exactly, so inversion then sampling must give the input back
    to float64 precision. Any bookkeeping slip (a skipped or doubled move, a wrong abar) breaks it."""

    def __init__(self, schedule: NoiseSchedule, eps: torch.Tensor):
        self.schedule, self.eps = schedule, eps

    def __call__(self, x, t):
        abar = float(self.schedule.abar(t))
        x0 = (x - (1 - abar) ** 0.5 * self.eps) / abar**0.5
        return Prediction(eps=self.eps.expand_as(x), x0=x0, v=abar**0.5 * self.eps - (1 - abar) ** 0.5 * x0)
