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

Cells are cached: a cell whose ``cell.json`` exists and records the same recipe is read back, so an
interrupted benchmark continues where it stopped, and a subset (``--seeds 0``) run first is reused by the
whole table; within a cell, a finished training or sampling stage is kept too (``stage``), and a training
stopped after a checkpoint continues from it (``train_resuming``). The recipe is the training command with its
budget spelled out (``budget_flags``: a changed default redoes the cell), the sampling flags and, for GDD, the
teacher cell's recipe; a change of code or of a method option's default needs a fresh ``--work``. ``--jobs 2``
runs two cells at a time, one thread each while both run (``Cells``): more throughput on 2 cores than one cell
on two threads, at the price of contended wall seconds (CPU seconds, and the threads each process had, are
recorded beside them).

``make bench`` runs the full table (3 seeds, 1,000 samples of 25 DDIM steps, every method at its default
budget: hours on 2 CPU cores). ``--quick`` checks the whole pipeline in under 30 minutes on 2 cores (15 on
2026-12-03, when GDD's quick eighth was 62 steps; 94 now): one target (openmoji), one seed, 200 samples per
cell of ``QUICK_SAMPLE_STEPS`` DDIM steps (also GDD's teacher samples), a 50-step oracle (the full table's trains 1,500 steps at batch 32), a quarter of each method's
default budget (``QUICK_FRACTION``: adaptation steps, phasic's stage-2 steps), an eighth of GDD's (steps and
teacher samples) and two cells at a time. The defaults alone add up to about 23 minutes of adaptation and
25 of distillation on 2 cores, and 200 samples of 25 steps take 3 minutes per cell, which leaves no room in
30 minutes. Quick figures check the pipeline; they do not rank methods.

    .venv/bin/python bench/quality.py --quick
    .venv/bin/python bench/quality.py --targets openmoji --methods finetune,domainstudio --seeds 0 --n 500

A plain run covers the style targets (``TARGETS``); ``--targets noto-flags,noto-faces`` runs the sub-population
targets, whose small reference halves get their own headline table, led by kid-el0 and swd.

Writes ``bench/results/quality.json`` and ``bench/results/quality.md`` (mean and spread over seeds), or
``quality-quick.*`` with ``--quick``, so that a check never overwrites the full table. A table longer than the
machine's sittings (its work folder lost between them) runs in parts, each a seed or a target with its own
``--name`` and the same ``--teacher``, and ``--combine`` writes the table of their cells:

    .venv/bin/python bench/quality.py --targets openmoji --seeds 1 --anchors '' --teacher finetune --jobs 2 --name quality-openmoji-seed1
    .venv/bin/python bench/quality.py --combine quality-seed0,quality-openmoji-seed1
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
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
WORK = Path(tempfile.gettempdir()) / "tenshot-bench"  # the benchmarks' default work folder
TENSHOT = str(Path(sys.executable).parent / "tenshot")
SOURCE = "noto-32"
TARGETS = ("openmoji", "emojione")  # style shifts: a plain run's targets
SUBPOPULATION_TARGETS = ("noto-flags", "noto-faces")  # parts of noto in its own rendering, with small reference halves
METHODS = ("finetune", "lora", "domainstudio", "phasic", "crdi", "gdd")
DISTILLED = "gdd"
ANCHORS = ("source", "oracle", "shots")
COLUMNS = ("fid-el0", "kid-el0", "intra-lpips-el0", "small-clusters", "near-copy-share", "swd", "adapt-seconds", "adapt-loop-seconds", "adapt-cpu-seconds", "adapt-peak-gib",
           "sample-img-per-s")
ORACLE_FLAGS = ["--batch-size", "32", "--lr", "2e-4", "--checkpoint-every", "250", "--preview-count", "0"]
ORACLE_STEPS, QUICK_ORACLE_STEPS = 1500, 50  # 48,000 images: 24 epochs of openmoji train, 54 of emojione
SAMPLE_STEPS, QUICK_SAMPLE_STEPS = 25, 10
BENCH_SAMPLER = ["--sampler", "ddim"]  # the tables' protocol, older than sample's dpm++ default; left out of the cache keys, which predate that default
SAMPLE_BATCH = 16  # 200 images of noto-32 on 2 cores: 179 s at batch 8, 150 at 16, 164 at 32, 196 at 100 (same images)
HEADLINE = (("fid-el0", "fid-el0", 1, 1), ("kid-el0", "kid-el0", 3, 1), ("intra-lpips-el0", "intra-lpips-el0", 2, 1), ("near-copy-share", "near-copy %", 1, 100),
            ("swd", "swd", 1, 1), ("adapt-seconds", "adapt s", 0, 1), ("adapt-cpu-seconds", "adapt CPU s", 0, 1), ("adapt-peak-gib", "peak GiB", 2, 1),
            ("sample-img-per-s", "sample img/s", 2, 1))  # the first table of the markdown (and the README's): column, heading, digits, scale
LEADING = ("kid-el0", "swd")  # what a small reference half estimates best: KID is unbiased at any n, swd needs no network
SUBPOPULATION_HEADLINE = tuple(sorted(HEADLINE, key=lambda entry: entry[0] not in LEADING))
ROW_NAMES = {"source": f"{SOURCE}, unadapted", "oracle": "oracle: finetune on the whole train half", "shots": "the 10 shots, repeated",
             "phasic": "phasic: its adapted UNet, noise to image (a translation method)"}  # fmt: skip
QUICK_FRACTION = 1 / 4
QUICK_DISTILL_FRACTION = 1 / 8  # GDD distils the best method, so it runs alone after all of them
TRAINED, SAMPLED = "trained.json", "sampled.json"  # a cell's finished stages (``stage``)
SOURCE_LOCK = threading.Lock()
CHILD = threading.local()  # .cells: the Cells whose worker this thread is, which shares the cores among its processes


@dataclass(frozen=True)
class Plan:
    """What one invocation measures; ``quick`` scales the budgets down (see the module)."""

    n: int
    seeds: list[int]
    targets: list[str]
    methods: list[str]
    anchors: list[str]
    quick: bool
    adapt_flags: list[str]
    teacher: str | None = None

    @property
    def sample_steps(self) -> int:
        return QUICK_SAMPLE_STEPS if self.quick else SAMPLE_STEPS

    @property
    def oracle_steps(self) -> int:
        return QUICK_ORACLE_STEPS if self.quick else ORACLE_STEPS

    @property
    def seeds_run(self) -> list[int]:
        """The seeds some cell runs at: the anchors run once, at seed 0, so a plan of anchors alone runs only that."""
        return self.seeds if self.methods else [0] if self.anchors else []


def run(argv: list[str], log: Path) -> dict[str, float]:
    """Run ``argv`` to completion, its output to ``log``; its wall and CPU seconds (user + system: what a loaded
    machine changes least) and peak resident memory (GiB)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    threads = CHILD.cells.threads() if hasattr(CHILD, "cells") else None
    env = os.environ | {"OMP_NUM_THREADS": str(threads)} if threads else None
    with open(log, "w") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed with status {process.returncode}; see {log}")
    return {"seconds": time.perf_counter() - started, "cpu-seconds": usage.ru_utime + usage.ru_stime, "peak-gib": usage.ru_maxrss / 1024**2,
            "threads": threads or int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))}


def target_split(target: str, split: str) -> str:
    """The domain argument of one split of a benchmark target: ``emoji:T:SPLIT`` for an EmojiShift style, or
    ``DIR/SPLIT`` for a target outside EmojiShift given as a folder laid out like it (``shots/``, ``train/``,
    ``reference/``), which reaches the methods through ``--target DIR/shots``, the user's path."""
    return str(Path(target) / split) if os.sep in target else f"emoji:{target}:{split}"


def target_domain(target: str) -> str:
    """A target as ``adapt --target`` takes it: ``emoji:T`` (its shots by default), or ``DIR/shots``."""
    return target_split(target, "shots") if os.sep in target else f"emoji:{target}"


def target_name(target: str) -> str:
    """A target's name in tables, plots and work folders: the style, or the folder's name."""
    return Path(target).name if os.sep in target else target


def evaluate(samples: Path, target: str, out: Path) -> dict[str, float]:
    reference, shots = target_split(target, "reference"), target_split(target, "shots")
    run([TENSHOT, "evaluate", str(samples), "--reference", reference, "--shots", shots, "--out", str(out)], out.with_suffix(".log"))
    return json.loads(out.read_text())


def sample_flags(plan: Plan, seed: int) -> list[str]:
    return ["--n", str(plan.n), "--steps", str(plan.sample_steps), "--seed", str(seed), "--batch-size", str(SAMPLE_BATCH)]


def sample(model: str, cell: Path, plan: Plan, seed: int) -> dict:
    """Sample ``plan.n`` images into ``cell/samples``: images per second of the whole ``tenshot sample`` process,
    and its threads."""
    shutil.rmtree(cell / "samples", ignore_errors=True)
    timing = run([TENSHOT, "sample", model, *sample_flags(plan, seed), *BENCH_SAMPLER, "--out", str(cell / "samples")], cell / "sample.log")
    return {"sample-img-per-s": plan.n / timing["seconds"], "sample-threads": timing["threads"]}


def method_cell(work: Path, target: str, method: str, seed: int, plan: Plan) -> dict:
    """Adapt ``noto-32`` to ``target`` with ``method``, then sample and score (cached)."""
    argv = [TENSHOT, "adapt", "--source", SOURCE, "--target", target_domain(target), "--method", method, "--seed", str(seed), "--preview-count", "0"]
    return trained_cell(work / target_name(target) / method / f"seed-{seed}", [*argv, *budget_flags("adapt", method, plan.quick), *plan.adapt_flags], target, seed, plan)


def distilled_cell(work: Path, target: str, teacher: str, seed: int, plan: Plan) -> dict:
    """Distil the ``teacher`` method's run of this seed with GDD, then sample and score (cached; the recipe names the
    teacher cell's own, so a teacher made again is distilled again)."""
    teacher_cell = work / target_name(target) / teacher / f"seed-{seed}"
    argv = [TENSHOT, "distill", str(teacher_cell / "run"), "--seed", str(seed), "--preview-count", "0", *budget_flags("distill", teacher, plan.quick)]
    teacher_recipe = json.loads((teacher_cell / "cell.json").read_text())["command"]
    return trained_cell(work / target_name(target) / f"{DISTILLED}-from-{teacher}" / f"seed-{seed}", argv, target, seed, plan, f"; teacher {teacher_recipe}")


def trained_cell(cell: Path, argv: list[str], target: str, seed: int, plan: Plan, recipe: str = "") -> dict:
    """Run the training command ``argv`` into ``cell/run``, sample ``plan.n`` images from it and evaluate them;
    ``recipe`` adds what else made the cell to its cache key."""
    command = f"{' '.join([*argv[1:], '--out', str(cell / 'run')])}; sample {' '.join(sample_flags(plan, seed))}{recipe}"
    result = cached(cell, command)
    if result is not None:
        return result

    def train() -> dict:
        (cell / SAMPLED).unlink(missing_ok=True)
        return train_resuming(argv, cell / "run", cell / f"{argv[1]}.log", command)

    trained = stage(cell / TRAINED, command, train)
    sampled = stage(cell / SAMPLED, command, lambda: sample(str(cell / "run"), cell, plan, seed))
    metrics = evaluate(cell / "samples", target, cell / "metrics.json")
    return store(cell, {**metrics, **adapt_figures(trained), **sampled, "command": command})


def stage(done: Path, command: str, work) -> dict:
    """The figures of ``work()``, one stage of the cell that ``command`` makes, kept in ``done``: a cell stopped
    after its training (the session ended while it sampled) samples again from the finished run."""
    if done.is_file():
        record = json.loads(done.read_text())
        if record.pop("command", None) == command:
            return record
    figures = work()
    write_json(done, {**figures, "command": command})
    return figures


def adapt_figures(timing: dict) -> dict:
    """The adapt columns of a training process's ``run`` figures."""
    return {"adapt-seconds": timing["seconds"], "adapt-loop-seconds": timing.get("loop-seconds"), "adapt-cpu-seconds": timing["cpu-seconds"],
            "adapt-peak-gib": timing["peak-gib"], "adapt-threads": timing.get("threads")}


def loop_seconds(run_folder: Path) -> float:
    """The training loop's own seconds in ``run_folder`` (its ``log.jsonl``, whose clock goes on across a resume):
    the whole process's less start-up, export and the closing report."""
    return json.loads((run_folder / "log.jsonl").read_text().splitlines()[-1])["seconds"]


def cached(cell: Path, command: str) -> dict | None:
    """The result stored in ``cell/cell.json`` if ``command`` made it; None if there is none or another command
    made it (other flags, another budget), which is then redone."""
    done = cell / "cell.json"
    if not done.is_file():
        return None
    result = json.loads(done.read_text())
    if result.get("command") == command:
        return result
    print(f"{cell} was made by `{result.get('command')}`: redoing it", flush=True)
    done.unlink()
    return None


def store(cell: Path, result: dict) -> dict:
    """Write ``cell/cell.json``."""
    write_json(cell / "cell.json", result)
    return result


def write_json(path: Path, record: dict) -> None:
    """Write ``record`` to ``path`` whole or not at all (a killed benchmark leaves no half file to read back)."""
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(record, indent=2) + "\n")
    partial.replace(path)


def budget_flags(command: str, method: str, quick: bool) -> list[str]:
    """A cell's training budget, spelled out so that its recipe names it (a changed default redoes the cell): the
    method's default steps, batch and learning rate (and phasic's stage-2 steps), GDD's steps, batch and teacher
    samples; with ``quick``, ``QUICK_FRACTION`` of the steps, ``QUICK_DISTILL_FRACTION`` of GDD's steps and
    teacher samples, drawn with ``QUICK_SAMPLE_STEPS``."""
    from tenshot.config import DistillConfig, adapt_train_defaults
    from tenshot.methods.phasic import PhasicOptions

    def part(value: int, fraction: float) -> str:
        return str(max(1, round(value * fraction)) if quick else value)

    if command == "distill":
        defaults = DistillConfig()
        return ["--steps", part(defaults.train.steps, QUICK_DISTILL_FRACTION), "--batch-size", str(defaults.train.batch_size),
                "--lr", str(defaults.train.lr), "--teacher-samples", part(defaults.teacher_samples, QUICK_DISTILL_FRACTION),
                "--teacher-steps", str(QUICK_SAMPLE_STEPS if quick else defaults.teacher_steps)]
    train = adapt_train_defaults(method)
    flags = ["--steps", part(train.steps, QUICK_FRACTION), "--batch-size", str(train.batch_size), "--lr", str(train.lr)]
    if method == "phasic":
        flags += ["--fusion-steps", part(PhasicOptions().fusion_steps, QUICK_FRACTION)]
    return flags


def best_method(rows: dict, methods: list[str]) -> str:
    """The adapted method with the lowest mean fid-el0 in ``rows``."""
    scored = [m for m in methods if m != DISTILLED and "fid-el0" in rows.get(m, {})]
    if not scored:
        raise SystemExit(f"{DISTILLED} is distilled from the best adapted method: list at least one other method")
    return min(scored, key=lambda m: rows[m]["fid-el0"]["mean"])


def anchor_cell(work: Path, target: str, anchor: str, plan: Plan) -> dict:
    """Score an anchor against ``target``: the source's samples (drawn once for every target), the oracle's (its
    training cached by a hash of its command) or the shots repeated."""
    oracle_argv = [TENSHOT, "adapt", "--source", SOURCE, "--target", target_split(target, "train"), "--method", "finetune", "--steps", str(plan.oracle_steps), *ORACLE_FLAGS]
    oracle_command = " ".join(oracle_argv[1:])
    sampled = f"sample {' '.join(sample_flags(plan, 0))}"
    command = {"source": f"{SOURCE}; {sampled}", "oracle": f"{oracle_command}; {sampled}", "shots": f"shots of {target_domain(target)} repeated to {plan.n}"}[anchor]
    cell = work / target_name(target) / anchor
    result = cached(cell, command)
    if result is not None:
        return result
    samples, extra = cell / "samples", {}
    if anchor == "source":
        extra = source_samples(work, plan)
        samples = work / "source" / "samples"
    elif anchor == "oracle":
        oracle = work / "oracles" / f"{target_name(target)}-{hashlib.sha256(oracle_command.encode()).hexdigest()[:12]}"
        extra = {**adapt_figures(trained_oracle(oracle, oracle_argv)), **stage(cell / SAMPLED, command, lambda: sample(str(oracle), cell, plan, 0))}
    else:
        repeat_shots(target, samples, plan.n)
    metrics = evaluate(samples, target, cell / "metrics.json")
    return store(cell, {**metrics, **extra, "command": command})


def trained_oracle(oracle: Path, argv: list[str]) -> dict:
    """Train the oracle into ``oracle`` (a folder named by a hash of ``argv``) once: 1,500 steps of batch 32 take
    about 2 hours of 2 cores (4.6 s a step), longer beside other cells."""
    done = oracle / "timing.json"
    if not done.is_file():
        write_json(done, train_resuming(argv, oracle, oracle.with_suffix(".log"), " ".join(argv[1:])))
    return json.loads(done.read_text())


GROWING = ("--steps", "--keep-checkpoints")  # what a resumed training command may change


def continues(started: str, recipe: str) -> bool:
    """Whether a run begun by the training command ``started`` goes on as ``recipe``: the same command, or the same
    run made longer (a larger ``--steps``, and any ``--keep-checkpoints``: ``tenshot ... --resume`` allows both)."""
    def parts(command: str) -> tuple[list[str], int]:
        """The command without the values of --steps and --keep-checkpoints (nor the latter's flag), and its steps."""
        words = command.split()
        steps = [int(value) for flag, value in zip(words, words[1:]) if flag == "--steps"]
        rest = [word for index, word in enumerate(words) if word != "--keep-checkpoints" and (index == 0 or words[index - 1] not in GROWING)]
        return rest, steps[-1] if steps else 0

    (before, before_steps), (after, after_steps) = parts(started), parts(recipe)
    return before == after and after_steps >= before_steps


def train_resuming(argv: list[str], out: Path, log: Path, recipe: str) -> dict:
    """Run the training command ``argv`` into the run folder ``out`` and return its ``run`` figures and the loop's
    own ``loop-seconds``. A run that ``recipe`` :func:`continues` (interrupted after a checkpoint when the sitting
    ended, or made longer) goes on from its last checkpoint with ``--resume``; its ``seconds`` and ``cpu-seconds``
    are then None (the earlier parts took theirs with them: the loop's, whose clock goes on across a resume,
    remain), its peak memory the last part's."""
    started = out.with_name(out.name + ".recipe")  # beside the run: a new run needs an empty folder
    resume = started.is_file() and continues(started.read_text(), recipe) and any((out / "checkpoints").glob("step-*"))
    if not resume:
        shutil.rmtree(out, ignore_errors=True)
        out.parent.mkdir(parents=True, exist_ok=True)
    started.write_text(recipe)
    timing = run([*argv, "--out", str(out), *(["--resume"] if resume else [])], log)
    timing["loop-seconds"] = loop_seconds(out)
    if resume:
        timing |= {"seconds": None, "cpu-seconds": None}
    return timing


def source_samples(work: Path, plan: Plan) -> dict:
    """Draw the unadapted source's samples once into ``work/source/samples``; their images per second and threads."""
    drawn, flags = work / "source", " ".join(sample_flags(plan, 0))
    done = drawn / "timing.json"  # written last: samples that did not finish, or were drawn otherwise, are redrawn
    with SOURCE_LOCK:  # the source cells of several targets may run at once; the first draws, the others wait
        if not done.is_file() or json.loads(done.read_text()).get("flags") != flags:
            shutil.rmtree(drawn, ignore_errors=True)
            sampled = sample(SOURCE, drawn, plan, 0)
            write_json(done, {**sampled, "flags": flags})
    return {key: value for key, value in json.loads(done.read_text()).items() if key != "flags"}


class Cells:
    """Runs cells ``jobs`` at a time. With ``jobs`` > 1 each process a cell starts gets the cores shared among the
    cells running or waiting at that moment (``OMP_NUM_THREADS``): one thread each while the queue is full, every
    core for a cell left alone at the end. A batch of cells is queued at once (``submit``), so that none starts
    before its sharers are counted. Cached cells waiting in the queue count too, though they take no time: a
    resumed table may run a real cell on fewer cores than it could (``threads`` records what each cell had)."""

    def __init__(self, jobs: int):
        self.jobs, self.pending, self.lock = jobs, 0, threading.Lock()
        self.pool = ThreadPoolExecutor(jobs)

    def submit(self, batch: list[tuple]) -> list[Future]:
        """Queue ``(label, cell, *cell_args)`` for each entry of ``batch``; their futures."""
        with self.lock:
            self.pending += len(batch)
            return [self.pool.submit(self._run, *entry) for entry in batch]

    def threads(self) -> int | None:
        """``OMP_NUM_THREADS`` for a process starting now (None: one cell at a time, the process's default)."""
        if self.jobs == 1:
            return None
        with self.lock:
            return max(1, (os.cpu_count() or 1) // min(self.jobs, self.pending))

    def _run(self, label: str, cell, *cell_args) -> dict:
        CHILD.cells = self
        print(label, flush=True)
        try:
            return cell(*cell_args)
        finally:
            with self.lock:
                self.pending -= 1


def repeat_shots(target: str, out: Path, n: int) -> None:
    from tenshot.api import write_samples
    from tenshot.data import load_domain

    shots = load_domain(target_domain(target), 32, default_split="shots", minimum=1)
    shutil.rmtree(out, ignore_errors=True)
    write_samples(np.concatenate([shots] * (n // len(shots) + 1))[:n], out)


def cpu_seconds_of_children() -> float:
    """User + system CPU seconds of every finished child process of this one."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def summarise(cells: list[dict]) -> dict:
    """Mean and (over several seeds) sample standard deviation of every column, the runs averaged, and the threads
    the adapt and sample processes had (``1-2``: they differed between seeds; the wall figures depend on them)."""
    summary: dict = {"runs": len(cells)}
    for column in COLUMNS:
        values = [c[column] for c in cells if c.get(column) is not None]
        if values:
            summary[column] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None, "n": len(values)}
    summary["reference-images"] = sorted({c["settings"]["reference"] for c in cells if "reference" in c.get("settings", {})})
    summary["threads"] = {}
    for process in ("adapt", "sample"):
        counts = sorted({c[f"{process}-threads"] for c in cells if c.get(f"{process}-threads") is not None})
        if counts:
            summary["threads"][process] = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return summary


def provenance(settings: dict) -> str:
    """How the table's cells were made: this invocation's cost, or each part's of a ``--combine``d table."""
    def cost(part: dict) -> str:
        return (f"{part['wall-seconds'] / 60:.1f} min wall, {part['cpu-seconds'] / 60:.1f} CPU-min (cached cells cost nothing), "
                f"{part['jobs']} cell(s) at a time, 1-min load average {part['load-average']:.1f} at the "
                + ("last finished cell: stopped before its end" if part.get("unfinished") else "end"))

    if "parts" not in settings:
        return f"This invocation: {cost(settings)}."
    return "Combined from: " + "; ".join(f"`{part['command']}` ({part['date']}, seeds {part['seeds']}: {cost(part)})" for part in settings["parts"]) + "."


def markdown(table: dict, settings: dict) -> str:
    """The table in markdown: how it was made, the headline columns (what the README shows; the style targets first,
    then the sub-population targets leading with kid-el0 and swd beside their reference counts), then every column."""
    styles = {target: rows for target, rows in table.items() if target not in SUBPOPULATION_TARGETS}
    subpopulations = {target: rows for target, rows in table.items() if target in SUBPOPULATION_TARGETS}
    lines = [
        (f"EmojiShift at 32 px from `{SOURCE}`: {settings['n']} samples of {settings['sample-steps']} DDIM steps per cell, seeds {settings['seeds']}, "
         f"{settings['date']}, `{settings['command']}`. Mean ± standard deviation over the runs of each row (anchors run once, at seed "
         "0); EL0 metrics against the target's `reference` half, near-copy against its shots. GDD distils the runs of one adapted "
         "method (the row names it): the lowest mean fid-el0 of the table, unless `--teacher` named it. Phasic trains against EL0 "
         "features (the metric network), and so does GDD's discriminator: their EL0 figures may be flattered; swd is network-free. "
         "adapt-seconds are the whole training process's (start-up, export, the closing report), adapt-loop-seconds the training "
         "loop's alone (GDD: without drawing its teacher samples); '(of n)': a column that fewer runs recorded (a training resumed "
         "after its sitting ended has no process seconds). "
         f"{provenance(settings)}"),
    ]
    if styles:
        lines += ["", *headline(styles, HEADLINE)]
    if subpopulations:
        lines += ["", "Sub-population targets (a part of noto in its own rendering) have small reference halves: kid-el0 (unbiased at any "
                  "size) and swd lead, and each row gives the reference images it was scored against.", "",
                  *headline(subpopulations, SUBPOPULATION_HEADLINE, with_references=True)]
    lines += ["", "Every column:", "", "| target | method | runs | " + " | ".join(COLUMNS) + " | threads (adapt/sample) |", "|---" * (len(COLUMNS) + 4) + "|"]
    digits = {column: 4 if column.startswith("kid") or column == "near-copy-share" else 1 if column == "small-clusters" else 2 for column in COLUMNS}
    for target, rows in (styles | subpopulations).items():
        for row, summary in rows.items():
            cells = [figure(summary, column, digits[column]) for column in COLUMNS]
            threads = summary["threads"]
            cells.append("/".join(threads.get(process, "–") for process in ("adapt", "sample")) if threads else "")
            lines.append(f"| {target} | {row} | {summary['runs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def headline(table: dict, columns: tuple, with_references: bool = False) -> list[str]:
    """The headline rows of ``table`` in ``columns`` (column, heading, digits, scale), with each row's reference
    image counts after its target where ``with_references``."""
    references = ["reference images"] if with_references else []
    lines = ["| " + " | ".join(["target", *references, "method", "runs", *(heading for _, heading, *_ in columns)]) + " |",
             "|---" * (len(columns) + 3 + len(references)) + "|"]
    for target, rows in table.items():
        for row, summary in rows.items():
            counts = ["/".join(map(str, summary.get("reference-images", [])))] if with_references else []
            cells = [figure(summary, column, digits, scale) for column, _, digits, scale in columns]
            lines.append("| " + " | ".join([target, *counts, ROW_NAMES.get(row, row), str(summary["runs"]), *cells]) + " |")
    return lines


def figure(summary: dict, column: str, digits: int, scale: float = 1.0) -> str:
    """A summary's ``column`` as mean ± standard deviation (times ``scale``), '(of n)' where fewer runs than the
    row's recorded it; empty where none did."""
    entry = summary.get(column)
    if entry is None:
        return ""
    text = f"{entry['mean'] * scale:.{digits}f}"
    if entry["std"] is not None:
        text += f" ± {entry['std'] * scale:.{digits}f}"
    if entry["n"] < summary["runs"]:
        text += f" (of {entry['n']})"
    return text


def cell_seed(command: str) -> int | None:
    """The seed a cell's recipe names (its first ``--seed``); None for the repeated shots, which have none."""
    words = command.split()
    return int(words[words.index("--seed") + 1]) if "--seed" in words else None


def combine(names: list[str]) -> tuple[dict, list[dict]]:
    """The cells of the earlier results ``bench/results/NAME.json`` of ``names``, each target, row and seed once (a
    cell in several files is the same cell if the same recipe made it), and the settings of each file; files of
    other samples (count, DDIM steps, source model) than the first's are refused."""
    raw: dict = {}
    parts: list[dict] = []
    for name in names:
        path = RESULTS / f"{name}.json"
        if not path.is_file():
            raise SystemExit(f"--combine: {path} does not exist")
        result = json.loads(path.read_text())
        settings = result["settings"]
        for key in ("source", "n", "sample-steps"):
            if parts and settings[key] != parts[0][key]:
                raise SystemExit(f"--combine: {path} has {key} {settings[key]}, {names[0]} has {parts[0][key]}: not one table")
        parts += settings.get("parts", [settings])
        for target, rows in result["cells"].items():
            for row, cells in rows.items():
                kept = raw.setdefault(target, {}).setdefault(row, {})
                for cell in cells:
                    seed = cell_seed(cell["command"])
                    if seed in kept and kept[seed]["command"] != cell["command"]:
                        raise SystemExit(f"--combine: {target} / {row} at seed {seed} was made by two recipes, "
                                         f"`{kept[seed]['command']}` and `{cell['command']}`")
                    kept.setdefault(seed, cell)
    return {target: {row: list(cells.values()) for row, cells in rows.items()} for target, rows in raw.items()}, parts


def fill_table(cells: Cells, work: Path, plan: Plan, progress: Callable[[dict], None]) -> dict:
    """Run (or read back) every cell of ``plan`` on ``cells``: the anchors, the adapted methods seed by seed (an
    interrupted run has whole tables of its first seeds), then GDD from each target's best method, each seed's as
    soon as its teacher's cell is done when ``--teacher`` named the method. Each time a cell finishes,
    ``progress`` gets the results of those finished so far."""
    adapted = [m for m in plan.methods if m != DISTILLED]
    rows: dict = {target: {} for target in plan.targets}
    lock = threading.Lock()

    def finished() -> dict:
        with lock:
            done = {target: {row: [f.result() for f in futures if f.done() and not f.cancelled() and f.exception() is None]
                             for row, futures in target_rows.items()} for target, target_rows in rows.items()}
        return {target_name(target): {row: results for row, results in target_rows.items() if results} for target, target_rows in done.items()}

    def enter(target: str, row: str, future: Future) -> None:
        with lock:
            rows[target].setdefault(row, []).append(future)
        future.add_done_callback(lambda _: progress(finished()))

    def submit(batch: list[tuple]) -> None:
        """Queue ``(target, row, label, cell, *cell_args)`` entries together."""
        futures = cells.submit([(f"{target} / {label}", cell, *cell_args) for target, _, label, cell, *cell_args in batch])
        for (target, row, *_), future in zip(batch, futures, strict=True):
            enter(target, row, future)

    def submit_after(teacher: Future, entry: tuple) -> None:
        """Queue ``entry`` once ``teacher`` is done (GDD distils the run its cell leaves), standing in for it in
        its row meanwhile; a failed teacher fails it."""
        target, row, label, cell, *cell_args = entry
        stand_in: Future = Future()
        enter(target, row, stand_in)

        def start(done: Future) -> None:
            if done.exception() is not None:
                stand_in.set_exception(done.exception())
                return
            try:
                queued = cells.submit([(f"{target} / {label}", cell, *cell_args)])[0]
            except RuntimeError as error:  # the table stopped (another cell failed) while the teacher ran
                stand_in.set_exception(error)
                return
            queued.add_done_callback(lambda f: stand_in.set_exception(f.exception()) if f.exception() is not None else stand_in.set_result(f.result()))

        teacher.add_done_callback(start)

    submit([(target, anchor, anchor, anchor_cell, work, target, anchor, plan) for target in plan.targets for anchor in plan.anchors]
           + [(target, method, f"{method} / seed {seed}", method_cell, work, target, method, seed, plan)
              for seed in plan.seeds for target in plan.targets for method in adapted])
    if DISTILLED in plan.methods:
        for target in plan.targets:
            teacher = plan.teacher or best_method({m: summarise([f.result() for f in rows[target][m]]) for m in adapted}, plan.methods)
            row = f"{DISTILLED} (from {teacher})"
            entries = [(target, row, f"{DISTILLED} from {teacher} / seed {seed}", distilled_cell, work, target, teacher, seed, plan) for seed in plan.seeds]
            if plan.teacher:
                for entry, teacher_cell in zip(entries, rows[target][teacher], strict=True):
                    submit_after(teacher_cell, entry)
            else:  # every teacher is done: queued together, so that none starts before its sharers are counted
                submit(entries)
    return {target_name(target): {row: [f.result() for f in futures] for row, futures in target_rows.items()} for target, target_rows in rows.items()}


def parse_plan(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Plan:
    """The cells ``args`` ask for; ``--quick`` fixes the targets, seeds and sample count, so naming them beside it is
    an error rather than ignored."""
    if args.quick:
        named = [flag for flag in ("targets", "seeds", "n") if getattr(args, flag) is not None]
        if named:
            parser.error(f"--quick runs openmoji, seed 0 and 200 samples: drop --{', --'.join(named)}")
    plan = Plan(
        n=200 if args.quick else args.n or 1000,
        seeds=[0] if args.quick else [int(s) for s in (args.seeds or "0,1,2").split(",")],
        targets=["openmoji"] if args.quick else [t for t in (args.targets or ",".join(TARGETS)).split(",") if t],
        methods=[m for m in args.methods.split(",") if m],
        anchors=[a for a in args.anchors.split(",") if a],
        quick=args.quick,
        adapt_flags=args.adapt_flags.split(),
        teacher=args.teacher,
    )
    unknown = [target for target in plan.targets if target not in TARGETS + SUBPOPULATION_TARGETS and not (os.sep in target and Path(target, "shots").is_dir())]
    if unknown:
        parser.error(f"--targets {','.join(unknown)}: choose from {', '.join(TARGETS + SUBPOPULATION_TARGETS)}, or a folder with shots/, train/ and "
                     "reference/ (bench/split_target.py)")
    if plan.teacher and DISTILLED in plan.methods and plan.teacher not in plan.methods:
        parser.error(f"--teacher {plan.teacher}: list it in --methods too (GDD distils its runs)")
    return plan


def measure(plan: Plan, jobs: int, work: Path, publish: Callable[[dict, dict], dict]) -> tuple[dict, dict]:
    """Run (or read back) the cells of ``plan``; their results and the settings that made them. Every finished cell
    is published at once with the others finished so far (settings ``unfinished``), so that a machine that goes
    away mid-table leaves its finished cells in the result file for ``--combine``."""
    started, cpu_before = time.perf_counter(), cpu_seconds_of_children()  # a process a shell exec'd inherits its count
    print(f"quality benchmark: {len(plan.seeds_run)} seed(s), {plan.n} samples per cell, {jobs} cell(s) at a time, work folder {work}; "
          "the full table takes hours on 2 CPU cores", flush=True)

    def settings() -> dict:
        return {"source": SOURCE, "n": plan.n, "seeds": plan.seeds_run, "sample-steps": plan.sample_steps, "adapt-flags": plan.adapt_flags,
                "cpu-threads": os.cpu_count(), "jobs": jobs, "load-average": os.getloadavg()[0],
                # this invocation only: cached cells cost nothing here
                "wall-seconds": time.perf_counter() - started, "cpu-seconds": cpu_seconds_of_children() - cpu_before}

    publishing = threading.Lock()

    def progress(raw: dict) -> None:
        with publishing:
            publish(raw, settings() | {"unfinished": True})

    cells = Cells(jobs)
    with cells.pool:
        try:
            raw = fill_table(cells, work, plan, progress)
        except BaseException:  # a failed cell or Ctrl-C: the queued cells are dropped, not run
            cells.pool.shutdown(cancel_futures=True)
            raise
    return raw, settings()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="openmoji only, seed 0, 200 samples of 10 DDIM steps per cell, a 50-step oracle, a quarter of each method's budget (GDD: an eighth), 2 jobs.")
    parser.add_argument("--targets", help=f"Comma list of EmojiShift targets: {', '.join(TARGETS + SUBPOPULATION_TARGETS)} "
                        f"(default {','.join(TARGETS)}).")
    parser.add_argument("--methods", default=",".join(METHODS), help="Comma list of methods to adapt with.")
    parser.add_argument("--anchors", default=",".join(ANCHORS), help="Comma list of anchors (empty: none).")
    parser.add_argument("--seeds", help="Comma list of seeds (default 0,1,2).")
    parser.add_argument("--n", type=int, help="Samples per cell (default 1000).")
    parser.add_argument("--work", default=str(WORK), help="Runs, samples and cached cells.")
    parser.add_argument("--adapt-flags", default="", help="Extra flags for every adapt, e.g. '--steps 300'.")
    parser.add_argument("--jobs", type=int, help="Cells run at once (default 1, 2 with --quick), sharing the cores (OMP_NUM_THREADS): more "
                        "throughput on a few cores, but then wall seconds are contended (CPU seconds are not).")
    parser.add_argument("--teacher", choices=[m for m in METHODS if m != DISTILLED],
                        help="The method GDD distils on every target (default: each target's best adapted method of this invocation); "
                        "a table run in parts names the teacher its first part chose.")
    parser.add_argument("--combine", metavar="NAME,...",
                        help="Run nothing: write the table of the cells of bench/results/NAME.json, for each NAME (the parts of a table "
                        "run in several invocations, each with its own --name), each cell once.")
    parser.add_argument("--name", help="Result files bench/results/NAME.{json,md} (default quality, or quality-quick with --quick).")
    args = parser.parse_args()
    name = args.name or ("quality-quick" if args.quick else "quality")
    command = shlex.join(["python", "bench/quality.py", *sys.argv[1:]])

    def publish(raw: dict, settings: dict) -> dict:
        """Write ``bench/results/NAME.json`` (``settings``, to which it adds the date and command, the summary table
        and the cells); the table."""
        settings |= {"date": time.strftime("%Y-%m-%d"), "command": command}
        table = {target: {row: summarise(cells) for row, cells in target_rows.items()} for target, target_rows in raw.items()}
        RESULTS.mkdir(parents=True, exist_ok=True)
        write_json(RESULTS / f"{name}.json", {"settings": settings, "table": table, "cells": raw})
        return table

    if args.combine:
        if [arg for arg in sys.argv[1:] if arg.startswith("--") and arg.split("=")[0] not in ("--combine", "--name")]:
            parser.error("--combine takes only --name beside it: it runs nothing")
        raw, parts = combine([part for part in args.combine.split(",") if part])
        settings = {key: parts[0][key] for key in ("source", "n", "sample-steps")} | {"seeds": sorted({seed for part in parts for seed in part["seeds"]}), "parts": parts}
    else:
        plan = parse_plan(parser, args)
        raw, settings = measure(plan, args.jobs or (2 if args.quick else 1), Path(args.work) / f"n{plan.n}", publish)
    table = publish(raw, settings)
    (RESULTS / f"{name}.md").write_text(markdown(table, settings))
    print(markdown(table, settings))


if __name__ == "__main__":
    main()
