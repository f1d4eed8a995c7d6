"""GPU check (issue: GPU-ready, item 1): every command that runs a network, on the accelerator, and the speed table.

In one process, through the Python API, on the shipped ``noto-32``: ``adapt`` (fine-tuning), ``sample``,
``distill`` (GDD-I from the adapted run, teacher samples included), ``translate`` and ``evaluate``. Before each
command the CUDA peak-memory counter is reset; after it, the check asserts the command made CUDA allocations
(so it ran on the device, not silently on the CPU) and records its wall seconds and peak. Then
``bench/speed.py`` runs at 32 and 64 px on the same machine, its table written beside the CPU one.

    .venv/bin/python bench/gpu_check.py                   # on a machine with a GPU: about 10 minutes
    .venv/bin/python bench/gpu_check.py --device cpu --share 0.02 --no-speed --name gpu-dry   # a dry run of the same path here

Writes ``bench/results/gpu-check.json`` and ``.md`` (``--name``), and ``speed-gpu.json`` / ``.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def commands(work: Path, device: str, share: float) -> list[tuple[str, callable]]:
    """(name, call) of each command, in order; later ones read what earlier ones wrote."""
    from tenshot import api
    from tenshot.config import AdaptConfig, DistillConfig, EvaluateConfig, SampleConfig, TranslateConfig, adapt_train_defaults
    from tenshot.metrics.evaluate import evaluate

    def part(n: int) -> int:
        return max(4, round(n * share))

    run, samples = work / "adapt", work / "samples"
    adapt_train = adapt_train_defaults("finetune")
    adapt_train.steps, adapt_train.preview_every, adapt_train.checkpoint_every = part(300), part(300), part(300)
    distill_train = DistillConfig().train
    distill_train.steps, distill_train.checkpoint_every, distill_train.preview_every = part(200), part(200), part(200)
    return [
        ("adapt", lambda: api.adapt(AdaptConfig(source="noto-32", target="emoji:openmoji", method="finetune", out=str(run), train=adapt_train))),
        ("sample", lambda: api.sample(SampleConfig(model=str(run), out=str(samples), n=part(1000), device=device))),
        ("distill", lambda: api.distill(DistillConfig(model=str(run), data="teacher", teacher_samples=part(1000), out=str(work / "distill"), train=distill_train))),
        ("translate", lambda: api.translate(TranslateConfig(model=str(run), input="emoji:noto:reference", n=part(500), out=str(work / "translated"), device=device))),
        ("evaluate", lambda: evaluate(EvaluateConfig(samples=str(samples), reference="emoji:openmoji:reference", shots="emoji:openmoji", device=device, out=str(work / "metrics.json")))),
    ]  # fmt: skip


def measured(name: str, call, on_cuda: bool) -> dict:
    """Run ``call``: its wall seconds and, on CUDA, its peak memory and the allocations it made (asserted > 0, so it
    ran on the device and not silently on the CPU)."""
    if on_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        allocations = torch.cuda.memory_stats().get("allocation.all.allocated", 0)
    started = time.perf_counter()
    call()
    if on_cuda:
        torch.cuda.synchronize()
    row = {"command": name, "seconds": round(time.perf_counter() - started, 1)}
    if on_cuda:
        row["cuda_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        row["cuda_allocations"] = torch.cuda.memory_stats().get("allocation.all.allocated", 0) - allocations
        assert row["cuda_allocations"] > 0, f"{name} made no CUDA allocation: it did not run on the device"
    print(row, flush=True)
    return row


def check(device: str, share: float, work: Path) -> list[dict]:
    on_cuda = device.startswith("cuda")
    if on_cuda and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --device cpu for a dry run")
    return [measured(name, call, on_cuda) for name, call in commands(work, device, share)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--share", type=float, default=1.0, help="This share of every budget (steps, images), at least 4.")
    parser.add_argument("--no-speed", action="store_true", help="Skip bench/speed.py.")
    parser.add_argument("--name", default="gpu-check")
    parser.add_argument("--work", type=Path, help="Keep the runs and samples here (default: a temporary folder, removed).")
    args = parser.parse_args()
    header = {"date": time.strftime("%Y-%m-%d"), "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
              "torch": torch.__version__, "command": "python bench/gpu_check.py " + " ".join(sys.argv[1:])}  # fmt: skip
    if args.work:
        rows = check(args.device, args.share, args.work)
    else:
        with tempfile.TemporaryDirectory(prefix="tenshot-gpu-") as tmp:
            rows = check(args.device, args.share, Path(tmp))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({**header, "commands": rows}, indent=2) + "\n")
    lines = [f"Every command on {header['device']} (torch {header['torch']}), {header['date']}, `{header['command']}`.", "",
             "| command | wall s | CUDA peak MiB | CUDA allocations |", "|---|---:|---:|---:|"]  # fmt: skip
    lines += [f"| {r['command']} | {r['seconds']} | {r.get('cuda_peak_mib', '')} | {r.get('cuda_allocations', '')} |" for r in rows]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    if not args.no_speed:
        subprocess.run([sys.executable, str(REPO / "bench" / "speed.py"), "--out", str(RESULTS / "speed-gpu.json")], check=True)


if __name__ == "__main__":
    main()
