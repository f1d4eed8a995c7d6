"""Scale: peak memory and time of ``tenshot pretrain`` and ``tenshot evaluate`` against the size of their data (issue:
faults and scale, item 4).

Synthetic folders of 32 px PNGs (smooth random colour fields, written once into the work folder), each command run
in a fresh process:

- ``--sizes``: ``pretrain`` for ``--steps`` steps of the ``tiny`` preset at batch 8 on folders of that many images.
  Above ``tenshot.api.STREAM_ABOVE_BYTES`` of decoded images a domain is read from disk batch by batch
  (:class:`tenshot.data.images.ImageFiles`, its headers checked first); below it the images are held decoded.
- ``--evaluate-sizes``: ``evaluate`` of folders of that many samples against one reference folder of 1,000 images
  (no shots), each with an empty feature cache. Folders are always read batch by batch; what grows is the
  features kept (1,280 floats an image) and the time.

The tables give the process's peak resident set (``ru_maxrss``, read by a wrapper process of its own) and its wall
and CPU seconds; pretrain's also the training seconds the run logged (``log.jsonl``).

    .venv/bin/python bench/scale.py --sizes 1000,10000,100000 --evaluate-sizes 1000,10000,50000

Writes ``bench/results/scale.json`` and ``scale.md``, keeping the rows of a part not run this time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import series  # noqa: E402  (merged commands)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
TENSHOT = str(Path(sys.executable).parent / "tenshot")


def synthetic_folder(root: Path, count: int, name: str = "images", seed: int = 0) -> Path:
    """``count`` 32 px PNGs (a 4x4 random colour field, bilinear-upsampled), written once."""
    folder = root / f"{name}-{count}"
    done = folder / ".complete"
    if not done.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(count + seed)
        for index in range(count):
            Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((32, 32), Image.BILINEAR).save(folder / f"{index:06d}.png")
        done.write_text("")
    return folder


def measured(argv: list[str], env: dict | None = None) -> tuple[float, float, float]:
    """Run ``argv`` to the end; its peak RSS in MiB, CPU seconds and wall seconds."""
    # a fresh wrapper process per cell: its RUSAGE_CHILDREN is this run's alone (the peak of the largest child)
    wrapper = ("import json, resource, subprocess, sys, time; t = time.perf_counter(); subprocess.run(sys.argv[1:], check=True, capture_output=True); "
               "u = resource.getrusage(resource.RUSAGE_CHILDREN); print(json.dumps([u.ru_maxrss, u.ru_utime + u.ru_stime, time.perf_counter() - t]))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", wrapper, *argv], check=True, capture_output=True, text=True, env=env)
    peak_kib, cpu, wall = json.loads(done.stdout)
    return round(peak_kib / 1024, 1), round(cpu, 1), round(wall, 1)


def pretrain_cell(folder: Path, out: Path, steps: int) -> dict:
    argv = [TENSHOT, "pretrain", "--data", str(folder), "--size", "32", "--preset", "tiny", "--steps", str(steps), "--batch-size", "8",
            "--checkpoint-every", str(steps), "--preview-count", "0", "--mixed-precision", "no", "--out", str(out)]  # fmt: skip
    peak, cpu, wall = measured(argv)
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return {"images": len(list(folder.glob("*.png"))), "peak_rss_mib": peak, "wall_s": wall, "cpu_s": cpu, "train_s": logged[-1]["seconds"]}


def evaluate_cell(samples: Path, reference: Path, out: Path) -> dict:
    argv = [TENSHOT, "evaluate", str(samples), "--reference", str(reference), "--out", str(out / "metrics.json")]
    peak, cpu, wall = measured(argv, {**os.environ, "TENSHOT_CACHE": str(out / "cache")})
    return {"images": len(list(samples.glob("*.png"))), "peak_rss_mib": peak, "wall_s": wall, "cpu_s": cpu}


def markdown(results: dict) -> str:
    from tenshot.api import STREAM_ABOVE_BYTES

    lines = ["Synthetic folders of 32 px images. Wall seconds are not speeds where other benchmarks shared the cores; CPU seconds are."]
    if results["rows"]:
        lines += ["", f"`tenshot pretrain`, tiny preset, {results['steps']} steps of batch 8 (`{results['command']}`, {results['date']}). Domains "
                  f"above {STREAM_ABOVE_BYTES // 2**20} MiB of decoded images are read from disk batch by batch.", "",
                  "| images | read from disk | peak RSS MiB | wall s | CPU s | training s (logged) |", "|---:|---|---:|---:|---:|---:|"]  # fmt: skip
        lines += [f"| {r['images']} | {'yes' if r['streamed'] else 'no'} | {r['peak_rss_mib']} | {r['wall_s']} | {r['cpu_s']} | {r['train_s']} |" for r in results["rows"]]
    if results.get("evaluate"):
        lines += ["", f"`tenshot evaluate` of N samples against 1,000 reference images (no shots), empty feature cache, folders read batch by "
                  f"batch (`{results['evaluate-command']}`, {results['evaluate-date']}).", "",
                  "| samples | peak RSS MiB | wall s | CPU s |", "|---:|---:|---:|---:|"]  # fmt: skip
        lines += [f"| {r['images']} | {r['peak_rss_mib']} | {r['wall_s']} | {r['cpu_s']} |" for r in results["evaluate"]]
    return "\n".join(lines) + "\n"


def redo_evaluate_sizes(results: dict, run: dict, sizes: list[int]) -> None:
    """Drop ``results``' evaluate rows of ``sizes``, about to be measured again by ``run``; rows of other sizes
    stay, and then the earlier date and command stay too, before ``run``'s."""
    kept = [row for row in results["evaluate"] if row["images"] not in sizes]
    for key, field in (("evaluate-date", "date"), ("evaluate-command", "command")):
        results[key] = series.merged_commands(results[key], run[field]) if kept and key in results else run[field]
    results["evaluate"] = kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="pretrain's folder sizes ('' to skip).")
    parser.add_argument("--evaluate-sizes", default="1000,10000,50000", help="evaluate's sample counts ('' to skip).")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--work", type=Path, default=Path("/tmp/tenshot-scale"))
    parser.add_argument("--name", default="scale")
    args = parser.parse_args()
    from tenshot.api import STREAM_ABOVE_BYTES

    path = RESULTS / f"{args.name}.json"
    earlier = json.loads(path.read_text()) if path.is_file() else {}
    results = {"steps": args.steps, "rows": [], "evaluate": [], **earlier}
    run = {"date": time.strftime("%Y-%m-%d"), "command": "python bench/scale.py " + " ".join(sys.argv[1:])}
    pretrain_sizes = [int(n) for n in args.sizes.split(",") if n]
    evaluate_sizes = [int(n) for n in args.evaluate_sizes.split(",") if n]
    if pretrain_sizes:
        results.update(run, steps=args.steps, rows=[])
    if evaluate_sizes:
        redo_evaluate_sizes(results, run, evaluate_sizes)

    def publish() -> None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")
        (RESULTS / f"{args.name}.md").write_text(markdown(results))

    for count in pretrain_sizes:
        folder = synthetic_folder(args.work, count)
        out = args.work / f"run-{count}-{time.time_ns()}"
        results["rows"].append(pretrain_cell(folder, out, args.steps) | {"streamed": count * 32 * 32 * 3 > STREAM_ABOVE_BYTES})
        print(results["rows"][-1], flush=True)
        publish()
    reference = synthetic_folder(args.work, 1000, "reference", seed=1)
    for count in evaluate_sizes:
        out = args.work / f"evaluate-{count}-{time.time_ns()}"
        out.mkdir(parents=True)
        results["evaluate"].append(evaluate_cell(synthetic_folder(args.work, count), reference, out))
        results["evaluate"].sort(key=lambda row: row["images"])
        print(results["evaluate"][-1], flush=True)
        publish()
    print(markdown(results))


if __name__ == "__main__":
    main()
