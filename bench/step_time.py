"""Training time per optimiser step of each adaptation method, measured in-process (fp32, CPU by default).

One step is what the trainer does: ``method(batch, step)``, backward of ``total``, gradient clip 1.0, AdamW.
Methods are timed in interleaved rounds (one step of each per round) so that load from other processes falls
on all of them alike; the table gives the median, the minimum (the figure least disturbed by other load on a
shared machine) and their ratios to ``finetune``, and the median CPU seconds of this process per step (all
its threads), which other processes disturb less than wall time. Weights are a fresh UNet of
the preset (compute does not depend on the weights). The wall time of the whole process is reported beside.

    .venv/bin/python bench/step_time.py                 # small preset, 32 px, batch 8, 20 timed steps
    .venv/bin/python bench/step_time.py --steps 5 --preset tiny
    .venv/bin/python bench/step_time.py --threads 1      # compute ratio on a shared machine (CPU seconds)

Writes ``bench/results/step_time.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

PROCESS_START = time.perf_counter()

import torch  # noqa: E402

from tenshot.methods import build_method  # noqa: E402
from tenshot.methods.base import Batch  # noqa: E402
from tenshot.models.unet import new_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "step_time.json"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def one_step(method, optimizer, images: torch.Tensor, step: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one optimiser step."""
    started, cpu_started = time.perf_counter(), time.process_time()
    terms = method(Batch(images=images, generator=torch.Generator().manual_seed(step)), step)
    terms["total"].backward()
    torch.nn.utils.clip_grad_norm_(method.trainable_parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started, time.process_time() - cpu_started


def source_forward(method, images: torch.Tensor) -> float:
    """One no-grad forward of the frozen source copy at batch size: the main extra cost of DomainStudio."""
    t = torch.randint(0, 1000, (images.shape[0],), generator=torch.Generator().manual_seed(0))
    started = time.perf_counter()
    with torch.no_grad():
        method.source(images, t)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="finetune,domainstudio")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--prediction-type", default="v_prediction")
    parser.add_argument("--warmup", type=int, default=3, help="Untimed steps per method first.")
    parser.add_argument("--steps", type=int, default=20, help="Timed steps per method.")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default). With 1, CPU "
                        "seconds are the compute itself even on a loaded machine (no spinning OpenMP barriers).")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    names = [name.strip() for name in args.methods.split(",") if name.strip()]
    images = torch.rand(args.batch_size, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    runs = {}
    for name in names:
        torch.manual_seed(0)
        method = build_method(name, new_model(args.preset, args.size, args.prediction_type), {}).train()
        if method.needs_source_images:  # phasic: random stand-ins (compute does not depend on the images)
            method.source_images = torch.rand(64, 3, args.size, args.size, generator=torch.Generator().manual_seed(1)) * 2 - 1
        method.setup(images)
        runs[name] = (method, torch.optim.AdamW(method.trainable_parameters(), lr=1e-4))
    load_before = os.getloadavg()
    for step in range(args.warmup):
        for method, optimizer in runs.values():
            one_step(method, optimizer, images, step)
    times: dict[str, list[float]] = {name: [] for name in names}
    cpu_times: dict[str, list[float]] = {name: [] for name in names}
    source_times: list[float] = []
    for step in range(args.steps):
        for name, (method, optimizer) in runs.items():
            wall, cpu = one_step(method, optimizer, images, args.warmup + step)
            times[name].append(wall)
            cpu_times[name].append(cpu)
            if name == "domainstudio":
                source_times.append(source_forward(method, images))
    load_after = os.getloadavg()

    base, base_min = statistics.median(times[names[0]]), min(times[names[0]])
    base_cpu = statistics.median(cpu_times[names[0]])
    rows = {}
    for name in names:
        median = statistics.median(times[name])
        rows[name] = {
            "median_s": round(median, 4),
            "mean_s": round(statistics.fmean(times[name]), 4),
            "min_s": round(min(times[name]), 4),
            "ratio_to_" + names[0]: round(median / base, 3),
            "min_ratio_to_" + names[0]: round(min(times[name]) / base_min, 3),
            "cpu_median_s": round(statistics.median(cpu_times[name]), 4),
            "cpu_ratio_to_" + names[0]: round(statistics.median(cpu_times[name]) / base_cpu, 3),
        }
    if source_times:
        rows["domainstudio"]["source_forward_median_s"] = round(statistics.median(source_times), 4)
    result = {
        "what": "wall (and process CPU) seconds per optimiser step (forward, backward, clip, AdamW), fp32, interleaved rounds",
        "preset": args.preset,
        "size": args.size,
        "batch_size": args.batch_size,
        "prediction_type": args.prediction_type,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "processor": cpu_name(),
        "torch": torch.__version__,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "methods": rows,
        "process_seconds": round(time.perf_counter() - PROCESS_START, 1),
    }
    print(f"{args.preset} preset, {args.size} px, batch {args.batch_size}, fp32, {args.steps} timed steps "
          f"(load average {load_before[0]:.1f} -> {load_after[0]:.1f} on {os.cpu_count()} cores)")
    print(f"{'method':<14}{'median s':>10}{'mean s':>10}{'min s':>10}{'ratio':>8}{'min ratio':>11}{'CPU s':>8}{'CPU ratio':>11}")
    for name, row in rows.items():
        print(f"{name:<14}{row['median_s']:>10.3f}{row['mean_s']:>10.3f}{row['min_s']:>10.3f}{row['ratio_to_' + names[0]]:>8.2f}{row['min_ratio_to_' + names[0]]:>11.2f}"
              f"{row['cpu_median_s']:>8.2f}{row['cpu_ratio_to_' + names[0]]:>11.2f}")
    if source_times:
        print(f"(domainstudio's source forward alone: {rows['domainstudio']['source_forward_median_s']:.3f} s)")
    print(f"whole process: {result['process_seconds']:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
