"""The EmojiShift quality table: every method on every target, adapted from ``noto-32``, sampled, evaluated.

Each cell is a real run of the command line, in its own process, so that its wall time and peak memory (the
child's maximum resident set) are those a user sees: ``tenshot adapt`` (or ``distill``), ``tenshot sample``,
``tenshot evaluate --reference emoji:T --shots emoji:T``. The method ``gdd`` is GDD distilled (``tenshot
distill RUN``, data ``teacher``) from the run of the same seed of the best method on that target, the lowest
mean fid-el0 among the adapted methods of the table; its row is named ``gdd (from METHOD)`` and its adapt
time is the distillation's alone. Three anchors sit on the same table:

- ``source``: ``noto-32`` itself, unadapted (what every method starts from);
- ``oracle``: fine-tuning on the whole ``train`` half of the target style (all the data, not 10 shots), run
  once per target and cached under the work folder by a hash of its command;
- ``shots``: the 10 shots themselves, repeated to the sample count (the memorising extreme).

Cells are cached: a cell whose ``cell.json`` exists is read back, so an interrupted benchmark continues
where it stopped. ``make bench`` runs the full table (3 seeds, 1,000 samples, every method at its default
budget: hours on 2 CPU cores). ``--quick`` is one target (openmoji), one seed and 200 samples per cell, a
100-step oracle (the full table's trains 3,000 steps at batch 32), and a quarter of each default budget
(``QUICK_FRACTION``: adaptation steps, phasic's stage-2 steps, GDD's steps and teacher samples): the
defaults alone add up to about 23 minutes of adaptation and 30 of distillation on 2 cores, which leaves no
room in 30 minutes for sampling and scoring. Quick figures check the pipeline; they do not rank methods.

    .venv/bin/python bench/quality.py --quick
    .venv/bin/python bench/quality.py --targets openmoji --methods finetune,domainstudio --seeds 0 --n 500

Writes ``bench/results/quality.json`` and ``bench/results/quality.md`` (mean and spread over seeds).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TENSHOT = str(Path(sys.executable).parent / "tenshot")
SOURCE = "noto-32"
TARGETS = ("openmoji", "emojione")
METHODS = ("finetune", "domainstudio", "phasic", "crdi", "gdd")
DISTILLED = "gdd"
ANCHORS = ("source", "oracle", "shots")
COLUMNS = ("fid-el0", "kid-el0", "intra-lpips-el0", "near-copy-share", "swd", "adapt-seconds", "adapt-cpu-seconds", "adapt-peak-gb", "sample-img-per-s")
ORACLE_FLAGS = ["--batch-size", "32", "--lr", "2e-4", "--checkpoint-every", "1000", "--preview-count", "0"]
ORACLE_STEPS, QUICK_ORACLE_STEPS = 3000, 100
QUICK_FRACTION = 1 / 4


def run(argv: list[str], log: Path) -> dict[str, float]:
    """Run ``argv`` to completion, its output to ``log``; its wall and CPU seconds (user + system: what a loaded
    machine changes least) and peak resident memory (GB)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed with status {process.returncode}; see {log}")
    return {"seconds": time.perf_counter() - started, "cpu-seconds": usage.ru_utime + usage.ru_stime, "peak-gb": usage.ru_maxrss / 1024**2}


def evaluate(samples: Path, target: str, out: Path) -> dict[str, float]:
    run([TENSHOT, "evaluate", str(samples), "--reference", f"emoji:{target}", "--shots", f"emoji:{target}", "--out", str(out)], out.with_suffix(".log"))
    return json.loads(out.read_text())


def sample(model: str, cell: Path, n: int, seed: int) -> float:
    """Sample ``n`` images into ``cell/samples``; images per second of the whole ``tenshot sample`` process."""
    shutil.rmtree(cell / "samples", ignore_errors=True)
    timing = run([TENSHOT, "sample", model, "--n", str(n), "--seed", str(seed), "--batch-size", "100", "--out", str(cell / "samples")], cell / "sample.log")
    return n / timing["seconds"]


def method_cell(work: Path, target: str, method: str, seed: int, n: int, extra: list[str]) -> dict:
    """Adapt ``noto-32`` to ``target`` with ``method``, then sample and score (cached)."""
    argv = [TENSHOT, "adapt", "--source", SOURCE, "--target", f"emoji:{target}", "--method", method, "--seed", str(seed), "--preview-count", "0"]
    return trained_cell(work / target / method / f"seed-{seed}", argv + extra, target, seed, n)


def distilled_cell(work: Path, target: str, teacher: str, seed: int, n: int, extra: list[str]) -> dict:
    """Distil the ``teacher`` method's run of this seed with GDD, then sample and score (cached)."""
    run_folder = work / target / teacher / f"seed-{seed}" / "run"
    argv = [TENSHOT, "distill", str(run_folder), "--seed", str(seed), "--preview-count", "0"]
    return trained_cell(work / target / f"{DISTILLED}-from-{teacher}" / f"seed-{seed}", argv + extra, target, seed, n)


def trained_cell(cell: Path, argv: list[str], target: str, seed: int, n: int) -> dict:
    """Run the training command ``argv`` into ``cell/run``, sample ``n`` images from it and evaluate them."""
    done = cell / "cell.json"
    if done.is_file():
        return json.loads(done.read_text())
    shutil.rmtree(cell / "run", ignore_errors=True)
    argv = [*argv, "--out", str(cell / "run")]
    trained = run(argv, cell / f"{argv[1]}.log")
    speed = sample(str(cell / "run"), cell, n, seed)
    metrics = evaluate(cell / "samples", target, cell / "metrics.json")
    result = {**metrics, "adapt-seconds": trained["seconds"], "adapt-cpu-seconds": trained["cpu-seconds"], "adapt-peak-gb": trained["peak-gb"], "sample-img-per-s": speed, "command": " ".join(argv[1:])}
    done.write_text(json.dumps(result, indent=2) + "\n")
    return result


def quick_flags(command: str, method: str) -> list[str]:
    """``--quick``'s budget: ``QUICK_FRACTION`` of the default steps (and of phasic's stage 2, GDD's teacher)."""
    from tenshot.config import DistillConfig, adapt_train_defaults
    from tenshot.methods.phasic import PhasicOptions

    def part(value: int) -> str:
        return str(max(1, round(value * QUICK_FRACTION)))

    if command == "distill":
        defaults = DistillConfig()
        return ["--steps", part(defaults.train.steps), "--teacher-samples", part(defaults.teacher_samples)]
    flags = ["--steps", part(adapt_train_defaults(method).steps)]
    if method == "phasic":
        flags += ["--fusion-steps", part(PhasicOptions().fusion_steps)]
    return flags


def best_method(rows: dict, methods: list[str]) -> str:
    """The adapted method with the lowest mean fid-el0 in ``rows``."""
    scored = [m for m in methods if m != DISTILLED and "fid-el0" in rows.get(m, {})]
    if not scored:
        raise SystemExit(f"{DISTILLED} is distilled from the best adapted method: list at least one other method")
    return min(scored, key=lambda m: rows[m]["fid-el0"]["mean"])


def anchor_cell(work: Path, target: str, anchor: str, n: int, oracle_steps: int) -> dict:
    cell = work / target / anchor
    done = cell / "cell.json"
    if done.is_file():
        return json.loads(done.read_text())
    extra: dict = {}
    if anchor == "source":
        extra["sample-img-per-s"] = sample(SOURCE, cell, n, 0)
    elif anchor == "oracle":
        argv = [TENSHOT, "adapt", "--source", SOURCE, "--target", f"emoji:{target}:train", "--method", "finetune", "--steps", str(oracle_steps), *ORACLE_FLAGS]
        key = hashlib.sha256(" ".join(argv).encode()).hexdigest()[:12]
        oracle = work / "oracles" / f"{target}-{key}"
        if not (oracle / "timing.json").is_file():  # written last: an oracle that did not finish is retrained
            shutil.rmtree(oracle, ignore_errors=True)
            timing = run([*argv, "--out", str(oracle)], oracle.with_suffix(".log"))
            (oracle / "timing.json").write_text(json.dumps(timing) + "\n")
        extra = {"adapt-seconds": json.loads((oracle / "timing.json").read_text())["seconds"], "command": " ".join(argv[1:])}
        extra["sample-img-per-s"] = sample(str(oracle), cell, n, 0)
    else:
        repeat_shots(target, cell / "samples", n)
    metrics = evaluate(cell / "samples", target, cell / "metrics.json")
    result = {**metrics, **extra}
    done.write_text(json.dumps(result, indent=2) + "\n")
    return result


def repeat_shots(target: str, out: Path, n: int) -> None:
    from tenshot.api import write_samples
    from tenshot.data import load_domain

    shots = load_domain(f"emoji:{target}", 32, default_split="shots", minimum=1)
    shutil.rmtree(out, ignore_errors=True)
    write_samples(np.concatenate([shots] * (n // len(shots) + 1))[:n], out)


def cpu_seconds_of_children() -> float:
    """User + system CPU seconds of every finished child process of this one."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def summarise(cells: list[dict]) -> dict:
    """Mean and (over several seeds) sample standard deviation of every column."""
    summary = {}
    for column in COLUMNS:
        values = [c[column] for c in cells if c.get(column) is not None]
        if values:
            summary[column] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None, "n": len(values)}
    return summary


def markdown(table: dict, settings: dict) -> str:
    lines = [
        f"EmojiShift at 32 px from `{SOURCE}`: {settings['n']} samples per cell, seeds {settings['seeds']}, "
        f"{settings['date']}, `{settings['command']}`. Mean ± standard deviation over seeds; EL0 metrics against the "
        "target's `reference` half, near-copy against its shots. Phasic trains against EL0 features (the metric "
        "network), and so does GDD's discriminator: their EL0 figures may be flattered; swd is network-free. "
        f"This invocation: {settings['wall-seconds'] / 60:.1f} min wall, {settings['cpu-seconds'] / 60:.1f} CPU-min "
        f"(cached cells cost nothing), 1-min load average {settings['load-average']:.1f} at the end.",
        "",
        "| target | method | " + " | ".join(COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 2) + "|",
    ]
    for target, rows in table.items():
        for method, summary in rows.items():
            cells = []
            for column in COLUMNS:
                entry = summary.get(column)
                if entry is None:
                    cells.append("")
                    continue
                digits = 4 if column.startswith("kid") or column == "near-copy-share" else 2
                text = f"{entry['mean']:.{digits}f}"
                if entry["std"] is not None:
                    text += f" ± {entry['std']:.{digits}f}"
                cells.append(text)
            lines.append(f"| {target} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="openmoji only, one seed, 200 samples per cell, a 100-step oracle, a quarter of each method's budget.")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--methods", default=",".join(METHODS), help="Comma list of methods to adapt with.")
    parser.add_argument("--anchors", default=",".join(ANCHORS), help="Comma list of anchors (empty: none).")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--n", type=int, default=1000, help="Samples per cell.")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "tenshot-bench"), help="Runs, samples and cached cells.")
    parser.add_argument("--adapt-flags", default="", help="Extra flags for every adapt, e.g. '--steps 300'.")
    parser.add_argument("--name", default="quality", help="Result files bench/results/NAME.{json,md}.")
    args = parser.parse_args()
    started = time.perf_counter()
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    n = 200 if args.quick else args.n
    targets = ["openmoji"] if args.quick else [t for t in args.targets.split(",") if t]
    oracle_steps = QUICK_ORACLE_STEPS if args.quick else ORACLE_STEPS
    work = Path(args.work) / f"n{n}"
    extra = args.adapt_flags.split()
    print(f"quality benchmark: {len(seeds)} seed(s), {n} samples per cell, work folder {work}; the full table takes hours on 2 CPU cores", flush=True)
    table: dict = {}
    raw: dict = {}
    for target in targets:
        table[target], raw[target] = {}, {}
        for anchor in [a for a in args.anchors.split(",") if a]:
            print(f"{target} / {anchor}", flush=True)
            cell = anchor_cell(work, target, anchor, n, oracle_steps)
            raw[target][anchor] = [cell]
            table[target][anchor] = summarise([cell])
        methods = [m for m in args.methods.split(",") if m]
        for method in [m for m in methods if m != DISTILLED]:
            cells = []
            for seed in seeds:
                print(f"{target} / {method} / seed {seed}", flush=True)
                flags = quick_flags("adapt", method) if args.quick else []
                cells.append(method_cell(work, target, method, seed, n, flags + extra))
            raw[target][method] = cells
            table[target][method] = summarise(cells)
        if DISTILLED in methods:
            teacher = best_method(table[target], methods)
            row = f"{DISTILLED} (from {teacher})"
            cells = []
            for seed in seeds:
                print(f"{target} / {row} / seed {seed}", flush=True)
                flags = quick_flags("distill", teacher) if args.quick else []
                cells.append(distilled_cell(work, target, teacher, seed, n, flags))
            raw[target][row] = cells
            table[target][row] = summarise(cells)
    settings = {"source": SOURCE, "n": n, "seeds": seeds, "date": time.strftime("%Y-%m-%d"), "command": shlex.join(["python", "bench/quality.py", *sys.argv[1:]]),
                "adapt-flags": extra, "cpu-threads": os.cpu_count(), "load-average": os.getloadavg()[0],
                # this invocation only: cached cells cost nothing here
                "wall-seconds": time.perf_counter() - started, "cpu-seconds": cpu_seconds_of_children()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"settings": settings, "table": table, "cells": raw}, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(markdown(table, settings))
    print(markdown(table, settings))


if __name__ == "__main__":
    main()
