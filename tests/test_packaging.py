"""The package as a user installs it: a wheel, installed outside the checkout, carries the shipped model."""

from __future__ import annotations

import shutil
import subprocess
import sys

from conftest import REPO, cli_env, write_images


def test_a_wheel_installed_outside_the_checkout_runs_the_shipped_model(tmp_path):
    tree = tmp_path / "tree"  # built from a copy, so the checkout gets no build/ folder
    shutil.copytree(REPO / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tree / name)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", str(tree), "-w", str(tmp_path / "dist")], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("tenshot-*.whl")
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, capture_output=True)
    env = cli_env(PYTHONPATH=str(site))  # the wheel's tenshot over the environment's dependencies
    env.pop("TENSHOT_ASSETS", None)

    def tenshot(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tenshot", *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)

    where = subprocess.run([sys.executable, "-c", "import tenshot; print(tenshot.__file__)"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert where.stdout.strip().startswith(str(site))
    sampled = tenshot("sample", "noto-32", "--n", "2", "--steps", "2", "--out", str(tmp_path / "samples"))
    assert sampled.returncode == 0, sampled.stderr
    assert sorted(path.name for path in (tmp_path / "samples").iterdir()) == ["000000.png", "000001.png"]
    shots = write_images(tmp_path / "shots", 3, 32)
    adapted = tenshot("adapt", "--source", "noto-32", "--target", str(shots), "--steps", "1", "--batch-size", "3", "--preview-count", "0", "--out", str(tmp_path / "run"))
    assert adapted.returncode == 0, adapted.stderr
    assert (tmp_path / "run" / "model" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
