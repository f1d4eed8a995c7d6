"""Scale: peak memory and time of ``tenshot pretrain`` against the size of its data (issue: faults and scale, item 4).

Synthetic folders of 32 px PNGs (smooth random colour fields, ``--sizes`` images each, written once into the work
folder) are pretrained on for ``--steps`` steps of the ``tiny`` preset at batch 8, each run in a fresh process.
Above ``tenshot.api.STREAM_ABOVE_BYTES`` of decoded images a domain is read from disk batch by batch
(:class:`tenshot.data.images.ImageFiles`, its headers checked first); below it the images are held decoded. The
table gives the process's peak resident set (``ru_maxrss``, read by a wrapper process of its own), its wall and CPU seconds, and the
training seconds the run logged (``log.jsonl``), so start-up and the header check are what grow with the data.

    .venv/bin/python bench/scale.py --sizes 1000,10000,100000

Writes ``bench/results/scale.json`` and ``scale.md``. ``evaluate`` still loads its sample and reference sets whole;
its scaling is not measured here.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
TENSHOT = str(Path(sys.executable).parent / "tenshot")


def synthetic_folder(root: Path, count: int) -> Path:
    """``count`` 32 px PNGs (a 4x4 random colour field, bilinear-upsampled), written once."""
    folder = root / f"images-{count}"
    done = folder / ".complete"
    if not done.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(count)
        for index in range(count):
            Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((32, 32), Image.BILINEAR).save(folder / f"{index:06d}.png")
        done.write_text("")
    return folder


def pretrain_cell(folder: Path, out: Path, steps: int) -> dict:
    argv = [TENSHOT, "pretrain", "--data", str(folder), "--size", "32", "--preset", "tiny", "--steps", str(steps), "--batch-size", "8",
            "--checkpoint-every", str(steps), "--preview-count", "0", "--mixed-precision", "no", "--out", str(out)]  # fmt: skip
    # a fresh wrapper process per cell: its RUSAGE_CHILDREN is this run's alone (the peak of the largest child)
    wrapper = ("import json, resource, subprocess, sys, time; t = time.perf_counter(); subprocess.run(sys.argv[1:], check=True, capture_output=True); "
               "u = resource.getrusage(resource.RUSAGE_CHILDREN); print(json.dumps([u.ru_maxrss, u.ru_utime + u.ru_stime, time.perf_counter() - t]))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", wrapper, *argv], check=True, capture_output=True, text=True)
    peak_kib, cpu, wall = json.loads(done.stdout)
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return {
        "images": len(list(folder.glob("*.png"))), "peak_rss_mib": round(peak_kib / 1024, 1), "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1), "train_s": logged[-1]["seconds"],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--work", type=Path, default=Path("/tmp/tenshot-scale"))
    parser.add_argument("--name", default="scale")
    args = parser.parse_args()
    from tenshot.api import STREAM_ABOVE_BYTES

    rows = []
    for count in map(int, args.sizes.split(",")):
        folder = synthetic_folder(args.work, count)
        out = args.work / f"run-{count}-{time.time_ns()}"
        row = pretrain_cell(folder, out, args.steps) | {"streamed": count * 32 * 32 * 3 > STREAM_ABOVE_BYTES}
        rows.append(row)
        print(row, flush=True)
    command = "python bench/scale.py " + " ".join(sys.argv[1:])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "command": command, "rows": rows}, indent=2) + "\n")
    lines = [f"`tenshot pretrain`, tiny preset at 32 px, {args.steps} steps of batch 8, on synthetic folders; {time.strftime('%Y-%m-%d')}, `{command}`. "
             f"Domains above {STREAM_ABOVE_BYTES // 2**20} MiB of decoded images are read from disk batch by batch.", "",
             "| images | read from disk | peak RSS MiB | wall s | CPU s | training s (logged) |", "|---:|---|---:|---:|---:|---:|"]  # fmt: skip
    lines += [f"| {r['images']} | {'yes' if r['streamed'] else 'no'} | {r['peak_rss_mib']} | {r['wall_s']} | {r['cpu_s']} | {r['train_s']} |" for r in rows]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
