"""Feature throughput of EL0 (images/s) on this machine, the path ``tenshot evaluate`` takes.

Measures, after one warm-up batch, (1) pooled features only (FID/KID/precision/recall), (2) pooled
features plus the five stage outputs turned into LPIPS-style vectors (the shot-based metrics), each
including the PIL bicubic resize to 224 px. Prints a table and writes bench/results/features.json
with the machine's load average, since other processes on the cores lower the figure.

    .venv/bin/python bench/features.py [--images 200] [--batch-size 50]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from tenshot.metrics.evaluate import EL0Runner

RESULTS = Path(__file__).resolve().parent / "results" / "features.json"


def measure(run, images: np.ndarray, batch_size: int) -> float:
    run(images[:batch_size])  # warm-up
    started = time.perf_counter()
    run(images)
    return len(images) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--size", type=int, default=32, help="Input image size before the resize to 224 px.")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, args.size, args.size, 3), dtype=np.uint8)
    runner = EL0Runner(args.batch_size, progress=False)
    shots = runner.vectors(images[:10])
    pooled = measure(lambda x: runner.pooled_and_distances(x, None, ""), images, args.batch_size)
    with_stages = measure(lambda x: runner.pooled_and_distances(x, shots, ""), images, args.batch_size)
    result = {
        "network": "efficientnet-lite0",
        "input-size": args.size,
        "images": args.images,
        "batch-size": args.batch_size,
        "pooled-images-per-s": round(pooled, 2),
        "pooled-and-stages-images-per-s": round(with_stages, 2),
        "torch-threads": torch.get_num_threads(),
        "load-average-1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "cpu-count": os.cpu_count(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
    }
    print(f"EL0 pooled features:            {pooled:7.1f} images/s")
    print(f"EL0 pooled + LPIPS-style stages: {with_stages:7.1f} images/s")
    print(f"({args.images} images of {args.size} px, batch {args.batch_size}, {torch.get_num_threads()} torch threads;"
          f" 1-min load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after: other processes slow it down)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
