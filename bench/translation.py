"""Translation table: Noto renderings translated to a target style by each run, at each ``--start`` and seed,
scored against the true target rendering of the same emoji (DESIGN.md: ``translate`` keeps file names).

The rule for the inputs: the sorted names of the ``emoji:noto`` renderings that have a rendering in the target's
``reference`` half, shuffled by ``random.Random(0)``, the first ``--n`` (so 100 inputs are a subset of 500),
copied once to ``WORK/inputs-TARGET-N``. One cell per run, start and seed:

    tenshot translate RUN --input WORK/inputs-TARGET-N --start S --seed K --out CELL/translated
    tenshot evaluate CELL/translated --reference emoji:TARGET --shots emoji:TARGET

every other flag at translate's default (or ``--flags``), except ``--guidance-end S`` for a run not adapted with
phasic (no structure guidance: SDEdit, or with the default ``--encode source`` DDIB); at S <= 400 the default
``--guidance-end 400`` leaves phasic unguided too. The untranslated inputs are a row of their own (start 0, no
seed). A bare model given as a run (the source itself, ``source=src/tenshot/assets/noto-32``) is the null
translation: it brings each input to S and back without changing its domain (with ``--encode source`` its own
DDIM encoding decoded again, with ``--encode noise`` SDEdit's re-drawing), so its distances to the truth are what
the mechanics alone cost. Paired columns, means over the pairs: the EL0
distance to the truth and to the input (Phasic trains against EL0, which can flatter it), the EL0 margin
(:func:`own_margin`: how much nearer each output is to its own truth than to the other inputs' truths), and the
network-free ``pyramid_l1``, ``ssim`` and pixel RMSE to the truth. A cell is cached under its translate command
(``quality.cached``): a run trained again in the same folder needs a fresh ``--work``. A cached cell that lacks a
paired column (scored before the column existed) is scored again from its kept images, which takes seconds.

    .venv/bin/python bench/translation.py --target openmoji phasic=runs/p finetune=runs/f

A run folder with ``{seed}`` in it (``phasic=runs/p-seed{seed}``) names one run per seed: the spread over the seeds
is then the adaptation's too, not only the translation's.

Writes ``bench/results/NAME.json`` (every cell as it finishes, keeping an earlier NAME.json's cells that it does
not redo: the table runs in parts), ``NAME.md`` (mean ± sd over seeds) and ``NAME-TARGET.png``; ``--plot``
redraws the last two from the JSON alone.

``--target`` is an EmojiShift style or a folder laid out like one (``shots/``, ``train/``, ``reference/``) whose
files carry EmojiShift's names, the emoji's codepoints (``bench/split_target.py --emoji-aliases`` makes one from a
set named by shortcode): a style no default was chosen on, reached through ``--target DIR/shots`` like a user's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import shutil
import sys
import time
from functools import cached_property
from pathlib import Path

import numpy as np
import scipy.ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402  (bench/quality.py: running, evaluating and caching cells)
import series  # noqa: E402  (grouping, seed spread, merged parts)

RESULTS = quality.RESULTS
SOURCE_STYLE, SIZE = "noto", 32  # noto-32's domain and size
STARTS, SEEDS = (200, 400, 600, 800), (0, 1, 2)
INPUT = "input"  # the label of the untranslated inputs' row
PYRAMID_MIN = 8  # pyramid_l1's coarsest level: the last of at least this many px
SSIM_SIGMA, SSIM_RADIUS, SSIM_K1, SSIM_K2 = 1.5, 5, 0.01, 0.03  # Wang et al. 2004: 11x11 Gaussian window
GREY = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 luma
COLUMNS = (("lpips-el0-to-truth", "EL0 → truth ↓", 3, 1), ("lpips-el0-margin", "EL0 margin ↑", 3, 1),
           ("pyramid-l1-to-truth", "pyramid L1 → truth ↓", 2, 1), ("ssim-to-truth", "SSIM to truth ↑", 3, 1),
           ("rmse-to-truth", "RMSE → truth ↓", 1, 1),
           ("lpips-el0-to-input", "EL0 → input", 3, 1), ("fid-el0", "fid-el0 ↓", 1, 1), ("kid-el0", "kid-el0 ↓", 3, 1),
           ("swd", "swd ↓", 1, 1), ("translate-cpu-seconds", "translate CPU s", 0, 1))  # column, heading, digits, scale; fmt: skip
PAIRED = ("lpips-el0-to-truth", "lpips-el0-to-input", "lpips-el0-margin", "pyramid-l1-to-truth", "ssim-to-truth", "rmse-to-truth")
PLOTTED = ("lpips-el0-to-truth", "pyramid-l1-to-truth", "ssim-to-truth", "lpips-el0-to-input", "fid-el0", "swd")


def choose_inputs(source: list[str], target: list[str], n: int) -> list[str]:
    """The rule: the names in both lists, sorted, shuffled by ``random.Random(0)``, the first ``n`` (sorted)."""
    common = sorted(set(source) & set(target))
    if n > len(common):
        raise SystemExit(f"--n {n}: only {len(common)} {SOURCE_STYLE} renderings have a counterpart in the target's reference half")
    random.Random(0).shuffle(common)
    return sorted(common[:n])


def prepare_inputs(work: Path, target: str, n: int) -> tuple[Path, dict[str, Path]]:
    """``WORK/inputs-TARGET-N`` (copied once) and the true target rendering of each of its file names."""
    from tenshot.data.domains import domain_files
    from tenshot.data.emoji import split_files

    source = {path.name: path for path in split_files(SOURCE_STYLE, SIZE, "all")}
    truth = {path.name: path for path in domain_files(quality.target_split(target, "reference"), SIZE)}
    names = choose_inputs(list(source), list(truth), n)
    folder = work / f"inputs-{quality.target_name(target)}-{n}"
    if not (folder.is_dir() and sorted(path.name for path in folder.iterdir()) == names):
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for name in names:
            shutil.copyfile(source[name], partial / name)
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
    return folder, {name: truth[name] for name in names}


def pyramid_l1(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per pair of uint8 ``(N, H, W, 3)`` images: the mean absolute difference (0-255, over pixels and RGB) at each
    level of swd's Laplacian pyramid (``laplacian_pyramid``), from full size down to the last level of at least
    ``PYRAMID_MIN`` px (32 px: the 32 and 16 px bands and the 8 px Gaussian residual), averaged over the levels."""
    from tenshot.metrics.swd import laplacian_pyramid

    levels, size = 0, min(a.shape[1:3])
    while size >= PYRAMID_MIN:
        levels, size = levels + 1, (size + 1) // 2
    difference = (a.astype(np.float32) - b.astype(np.float32)).transpose(0, 3, 1, 2)  # the pyramid is linear
    return np.mean([np.abs(level).mean(axis=(1, 2, 3)) for level in laplacian_pyramid(difference, levels)], axis=0)


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per pair of uint8 ``(N, H, W, 3)`` images: mean SSIM (Wang et al. 2004, Eq. 13 with the paper's 11x11
    Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255) on BT.601 grey levels, over the window positions
    that fit inside the image (no padding), Gaussian-weighted moments without sample correction."""
    offsets = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1)
    window = np.exp(-(offsets**2) / (2 * SSIM_SIGMA**2))
    window /= window.sum()
    inner = slice(SSIM_RADIUS, -SSIM_RADIUS)

    def local_mean(z: np.ndarray) -> np.ndarray:
        for axis in (1, 2):
            z = scipy.ndimage.correlate1d(z, window, axis=axis, mode="reflect")
        return z[:, inner, inner]  # the positions whose window lies inside: padding never enters

    x, y = a.astype(np.float64) @ GREY, b.astype(np.float64) @ GREY
    mx, my = local_mean(x), local_mean(y)
    vx, vy, cov = local_mean(x * x) - mx**2, local_mean(y * y) - my**2, local_mean(x * y) - mx * my
    c1, c2 = (SSIM_K1 * 255) ** 2, (SSIM_K2 * 255) ** 2
    index = (2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return index.mean(axis=(1, 2))


def mean_squared_distance(a, b) -> float:
    """Mean over the rows of ``a`` of the squared Euclidean distance to ``b``: the paired row, or ``b`` itself when it
    is one point."""
    return float((a - b).pow(2).sum(1).mean())


def own_margin(outputs, truths) -> float:
    """Mean over pairs of (mean squared distance to the other truths) - (squared distance to its own truth), rows
    paired by index, at least two: how much nearer each output is to its own truth than to the others' truths.
    Outputs all at one point (the truths' mean, say) score 0, and can still sit nearer their truths than the
    inputs do."""
    import torch

    distances = torch.cdist(outputs.double(), truths.double()).pow(2)
    own = distances.diag()
    others = (distances.sum(1) - own) / (len(own) - 1)
    return float((others - own).mean())


def network_free_scores(images: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """The paired columns that need no feature network."""
    return {"pyramid-l1-to-truth": float(pyramid_l1(images, truth).mean()), "ssim-to-truth": float(ssim(images, truth).mean()),
            "rmse-to-truth": float(np.sqrt(((images.astype(float) - truth.astype(float)) ** 2).mean()))}  # fmt: skip


class Pairs:
    """One target's inputs and their true renderings, loaded once; the paired scores of a folder of the same names."""

    def __init__(self, inputs: Path, truth: dict[str, Path]):
        from tenshot.data.images import load_images

        self.names = sorted(truth)
        self.truth = load_images([truth[name] for name in self.names], SIZE)
        self.inputs = load_images([inputs / name for name in self.names], SIZE)

    @cached_property
    def runner(self):
        from tenshot.metrics.evaluate import EL0Runner

        return EL0Runner(64, False)

    @cached_property
    def truth_vectors(self):
        return self.runner.vectors(self.truth)

    @cached_property
    def input_vectors(self):
        return self.runner.vectors(self.inputs)

    def scores(self, folder: Path) -> dict[str, float]:
        from tenshot.data.images import load_images

        images = load_images([folder / name for name in self.names], SIZE)
        vectors = self.runner.vectors(images)
        return {"lpips-el0-to-truth": mean_squared_distance(vectors, self.truth_vectors),
                "lpips-el0-to-input": mean_squared_distance(vectors, self.input_vectors),
                "lpips-el0-margin": own_margin(vectors, self.truth_vectors),
                **network_free_scores(images, self.truth)}  # fmt: skip


def run_method(run: Path) -> str:
    """The method a run was adapted with (its ``config.yaml``; a bare model samples as fine-tuning)."""
    import yaml

    saved = run / "config.yaml"
    return (yaml.safe_load(saved.read_text()) or {}).get("method", "finetune") if saved.is_file() else "finetune"


def translate_argv(run: Path, method: str, inputs: Path, start: int, seed: int, out: Path, flags: list[str] = ()) -> list[str]:
    sdedit = [] if method == "phasic" else ["--guidance-end", str(start)]
    return [quality.TENSHOT, "translate", str(run), "--input", str(inputs), "--start", str(start), "--seed", str(seed), *sdedit, *flags, "--out", str(out)]


def evaluated(folder: Path, target: str, cell: Path) -> dict[str, float]:
    """``tenshot evaluate``'s numbers (its settings dropped)."""
    return {key: value for key, value in quality.evaluate(folder, target, cell / "metrics.json").items() if key != "settings"}


def with_paired_scores(cell: Path, result: dict, pairs: Pairs, images: Path) -> dict:
    """A cached ``result`` with every paired column, the missing ones scored now from ``images`` (and stored); the
    columns it has are kept."""
    if all(column in result for column in PAIRED):
        return result
    return quality.store(cell, {**pairs.scores(images), **result})


def input_cell(work: Path, target: str, inputs: Path, pairs: Pairs) -> dict:
    """The untranslated inputs scored like a translation (cached)."""
    cell = work / f"{quality.target_name(target)}-{len(pairs.names)}" / INPUT
    reference, shots = (quality.target_split(target, "reference"), quality.target_domain(target)) if os.sep in target else (f"emoji:{target}",) * 2
    command = f"evaluate {inputs} --reference {reference} --shots {shots}"
    result = quality.cached(cell, command)
    if result is None:
        return quality.store(cell, {**pairs.scores(inputs), **evaluated(inputs, target, cell), "command": command})
    return with_paired_scores(cell, result, pairs, inputs)


def translation_cell(work: Path, target: str, label: str, run: Path, start: int, seed: int, inputs: Path, pairs: Pairs, flags: list[str] = ()) -> dict:
    """Translate the inputs with ``run`` at ``start`` and ``seed`` (and translate's ``flags``), then score the
    translations (cached; a finished translation is kept if its scoring stopped)."""
    cell = work / f"{quality.target_name(target)}-{len(pairs.names)}" / label / f"start-{start}" / f"seed-{seed}"
    argv = translate_argv(run, run_method(run), inputs, start, seed, cell / "translated", flags)
    command = shlex.join(["tenshot", *argv[1:]])
    result = quality.cached(cell, command)
    if result is not None:
        return with_paired_scores(cell, result, pairs, cell / "translated")

    def translate() -> dict:
        shutil.rmtree(cell / "translated", ignore_errors=True)
        timing = quality.run(argv, cell / "translate.log")
        return {f"translate-{key}": value for key, value in timing.items()}

    timing = quality.stage(cell / "translated.json", command, translate)
    return quality.store(cell, {**pairs.scores(cell / "translated"), **evaluated(cell / "translated", target, cell), **timing, "command": command})


def grouped(results: dict, target: str) -> dict[str, dict[int, list[dict]]]:
    """``label -> start -> cells`` of one target, the inputs' row first, then the runs in the order they came."""
    return series.grouped(sorted(results["cells"], key=lambda cell: cell["label"] != INPUT), target, "label", "start")


def markdown(results: dict) -> str:
    settings = results["settings"]
    lines = [f"{settings['n']} `emoji:{SOURCE_STYLE}` renderings with a counterpart in the target's reference half (the first N of "
             "their sorted names shuffled by `random.Random(0)`), translated by `tenshot translate RUN --start S --seed K` at its other "
             "defaults (runs not adapted with phasic: `--guidance-end S`, i.e. SDEdit) and scored against the true rendering of the same "
             "file name; fid-el0, kid-el0 and swd by `tenshot evaluate --reference emoji:T --shots emoji:T` (a folder target: `DIR/reference`, `DIR/shots`). Mean ± sd over the seeds. "
             f"Pyramid L1: mean |difference| (0-255) per Laplacian level down to {PYRAMID_MIN} px, averaged over levels; SSIM: 11x11 "
             f"Gaussian (sigma 1.5) on grey levels. CPU seconds of the whole translate process. {settings['date']}, `{settings['command']}`."]  # fmt: skip
    for target in settings["targets"]:
        table = grouped(results, target)
        if not table:
            continue
        runs: dict[str, dict[str, str]] = {}  # label -> run folder -> method, in the order they came
        for cell in results["cells"]:
            if cell["target"] == target and cell["label"] != INPUT:
                runs.setdefault(cell["label"], {})[cell["run"]] = cell["method"]
        described = {label: ", ".join(f"`{run}`" for run in folders) + f" ({', '.join(sorted(set(folders.values())))})" for label, folders in runs.items()}
        lines += ["", f"### {SOURCE_STYLE} → {target}", "", "Runs: " + "; ".join(f"{label}: {run}" for label, run in described.items()), "",
                  "| run | start | seeds | " + " | ".join(heading for _, heading, *_ in COLUMNS) + " |", "|---" * (len(COLUMNS) + 3) + "|"]  # fmt: skip
        for label, starts in table.items():
            for start, cells in starts.items():
                figures = []
                for column, _, digits, scale in COLUMNS:
                    mean, std = series.mean_sd(cells, column)
                    figures.append("" if mean != mean else f"{mean * scale:.{digits}f}" + (f" ± {std * scale:.{digits}f}" if std is not None else ""))
                seeds = "" if label == INPUT else str(len(cells))
                lines.append(f"| {'untranslated input' if label == INPUT else label} | {start} | {seeds} | " + " | ".join(figures) + " |")
    return "\n".join(lines) + "\n"


def plot(results: dict, target: str, path: Path) -> None:
    """One PNG: each plotted column against start, a line per run with its seed spread, the inputs' value dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = grouped(results, target)
    headings = {column: heading for column, heading, *_ in COLUMNS}
    starts = sorted({start for label, rows in table.items() if label != INPUT for start in rows})
    figure, axes = plt.subplots(2, 3, figsize=(13, 7), constrained_layout=True)
    for axis, column in zip(axes.flat, PLOTTED):
        for index, (label, rows) in enumerate(item for item in table.items() if item[0] != INPUT):
            means, errors = zip(*(series.mean_sd(cells, column) for cells in rows.values()))
            axis.errorbar(list(rows), means, yerr=[error or 0.0 for error in errors], color=f"C{index}", marker="o", capsize=3, label=label)
        if INPUT in table:
            axis.axhline(series.mean_sd(table[INPUT][0], column)[0], color="grey", linestyle="--", label="untranslated input")
        axis.set_xticks(starts)
        axis.set_xlabel("--start (cosine time)")
        axis.set_title(headings[column])
        axis.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    figure.suptitle(f"{results['settings']['n']} {SOURCE_STYLE} renderings translated to {target} (bench/translation.py)")
    figure.savefig(path, dpi=90)
    plt.close(figure)


def merged(earlier: dict, results: dict) -> dict:
    """``results`` with the cells of an ``earlier`` publication that it does not redo (a table run in parts)."""
    if earlier["settings"]["n"] != results["settings"]["n"]:
        raise SystemExit(f"the earlier table has {earlier['settings']['n']} inputs, this one {results['settings']['n']}: give another --name")
    cells = series.merged_entries(earlier["cells"], results["cells"], ("target", "label", "start", "seed"))
    return {"settings": series.merged_settings(earlier["settings"], results["settings"]), "cells": cells}


def publish(results: dict, name: str) -> None:
    """Write NAME.json (merged with what it held), NAME.md and a PNG per target."""
    earlier = RESULTS / f"{name}.json"
    if earlier.is_file():
        results = merged(json.loads(earlier.read_text()), results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    quality.write_json(RESULTS / f"{name}.json", results)
    draw(results, name)


def draw(results: dict, name: str) -> None:
    (RESULTS / f"{name}.md").write_text(markdown(results))
    for target in results["settings"]["targets"]:
        if grouped(results, target):
            plot(results, target, RESULTS / f"{name}-{target}.png")


def parse_runs(parser: argparse.ArgumentParser, specs: list[str], seeds: list[int]) -> dict[str, dict[int, Path]]:
    """``LABEL=RUN_FOLDER`` arguments as ``label -> seed -> absolute folder``: a folder with ``{seed}`` in it names
    one run per seed (runs adapted with ``--seed K``, each translated with ``--seed K``)."""
    runs: dict[str, dict[int, Path]] = {}
    for spec in specs:
        label, _, folder = spec.partition("=")
        if not re.fullmatch(r"[A-Za-z0-9._-]+", label) or not folder or label == INPUT or label in runs:
            parser.error(f"{spec!r}: give runs as LABEL=RUN_FOLDER, each label once, of letters, digits, '.', '_' or '-', not {INPUT!r}")
        folders = {seed: Path(folder.replace("{seed}", str(seed))) for seed in seeds}
        for run in folders.values():
            if not run.is_dir():
                parser.error(f"{run}: no such run folder")
        runs[label] = {seed: run.resolve() for seed, run in folders.items()}
    return runs


def check_target(parser: argparse.ArgumentParser, target: str) -> None:
    if os.sep in target:
        if not all(Path(target, split).is_dir() for split in ("shots", "reference")):
            parser.error(f"--target {target}: a folder target needs shots/ and reference/ (bench/split_target.py)")
        return
    if target in quality.SUBPOPULATION_TARGETS:
        parser.error(f"--target {target}: a sub-population rendered by {SOURCE_STYLE} itself, so a translation from {SOURCE_STYLE} "
                     f"has no style to change; choose {' or '.join(quality.TARGETS)}")  # fmt: skip
    if target not in quality.TARGETS:
        parser.error(f"--target {target}: choose {' or '.join(quality.TARGETS)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", metavar="LABEL=RUN_FOLDER", help="Runs to translate with, e.g. phasic=runs/p finetune=runs/f; "
                        "'{seed}' in a folder names one run per --seeds value (runs/p-seed{seed}).")
    parser.add_argument("--target", default="openmoji", help=f"The target style: {' or '.join(quality.TARGETS)}, or a folder (module docstring).")
    parser.add_argument("--n", type=int, default=500, help="Inputs (the rule in the module docstring).")
    parser.add_argument("--starts", default=",".join(map(str, STARTS)), help="Comma list of translate --start values (cosine time).")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="Comma list of translate --seed values.")
    parser.add_argument("--flags", default="", help="More `tenshot translate` flags for every run of this call, e.g. '--encode noise --eta 1' "
                        "(the Phasic code's encoding); part of each cell's cached command, so give such rows labels of their own.")
    parser.add_argument("--work", type=Path, default=quality.WORK / "translation", help="Inputs and cached cells.")
    parser.add_argument("--name", default="translation-table", help="Result files bench/results/NAME.{json,md} and NAME-TARGET.png.")
    parser.add_argument("--plot", action="store_true", help="Run nothing: redraw NAME.md and the PNGs from NAME.json alone.")
    args = parser.parse_args()
    if args.plot:
        draw(json.loads((RESULTS / f"{args.name}.json").read_text()), args.name)
        return
    check_target(parser, args.target)
    starts, seeds = [int(s) for s in args.starts.split(",")], [int(s) for s in args.seeds.split(",")]
    runs = parse_runs(parser, args.runs, seeds)
    if not runs:
        parser.error("give at least one LABEL=RUN_FOLDER")
    print(f"translation table: {len(runs)} run(s) x {len(starts)} start(s) x {len(seeds)} seed(s) of {args.n} images to {args.target}; "
          "each translate takes minutes to tens of minutes on 2 CPU cores", flush=True)  # fmt: skip
    inputs, truth = prepare_inputs(args.work, args.target, args.n)
    pairs = Pairs(inputs, truth)
    name = quality.target_name(args.target)
    results = {"settings": {"targets": [name], "n": args.n, "date": time.strftime("%Y-%m-%d"),
                            "command": shlex.join(["python", "bench/translation.py", *sys.argv[1:]])}, "cells": []}  # fmt: skip

    def record(label: str, run: Path, start: int, seed: int | None, cell: dict) -> None:
        method = None if label == INPUT else run_method(run)
        results["cells"].append({"target": name, "label": label, "run": str(run), "method": method, "start": start, "seed": seed, **cell})
        publish(results, args.name)

    record(INPUT, inputs, 0, None, input_cell(args.work, args.target, inputs, pairs))
    for seed in seeds:  # seed by seed: a table stopped early still has whole curves
        for start in starts:
            for label, run in runs.items():
                record(label, run[seed], start, seed, translation_cell(args.work, args.target, label, run[seed], start, seed, inputs, pairs, shlex.split(args.flags)))
    print(markdown(json.loads((RESULTS / f"{args.name}.json").read_text())))


if __name__ == "__main__":
    main()
