"""Samplers against their cost (issue 25 item 4): fid-el0 and swd of DDIM and DPM-Solver++(2M) at 5, 10, 15 and
25 UNet evaluations per image, on a few models, each scored by ``tenshot evaluate`` against its domain's reference half,
``--seeds`` seeds of ``--n`` images each.

The rule that chooses the default: among the cells of every model, the sampler and step count with the fewest
evaluations whose mean fid-el0 is at most DDIM-25's mean plus its seed standard deviation on every model (with one
seed, its mean plus 1%). The table prints the choice; ``config.SampleConfig``'s default changes only by a commit that
cites it.

    .venv/bin/python bench/samplers.py --models noto-32=noto,RUN=openmoji --seeds 0,1

``--models`` pairs a model reference (a run, a diffusers folder, an asset) with the EmojiShift style it is scored
against. Writes ``bench/results/NAME.json`` (merged with an earlier publication's cells it does not redo),
``NAME.md`` and ``NAME.png`` (fid-el0 and swd against evaluations per image, one line per sampler, one panel row
per model).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402  (commands, caching, evaluation)
import series  # noqa: E402  (seed spread, merged parts)

RESULTS = quality.RESULTS
SAMPLERS = ("ddim", "dpm++")
STEPS = (5, 10, 15, 25)
REFERENCE = ("ddim", 25)
ONE_SEED_MARGIN = 0.01


def cell(work: Path, model: str, style: str, sampler: str, steps: int, seed: int, n: int) -> dict:
    """``n`` images of ``model`` by ``sampler`` at ``steps`` evaluations, scored against ``style`` (cached)."""
    folder = work / "samplers" / Path(model).name / f"{sampler}-{steps}-seed{seed}"
    flags = ["--n", str(n), "--steps", str(steps), "--sampler", sampler, "--seed", str(seed), "--batch-size", str(quality.SAMPLE_BATCH)]
    command = f"sample {model} {' '.join(flags)}; evaluate against emoji:{style}"
    result = quality.cached(folder, command)
    if result is not None:
        return result
    shutil.rmtree(folder / "samples", ignore_errors=True)  # a cell stopped while it sampled or evaluated starts again
    timing = quality.run([quality.TENSHOT, "sample", model, *flags, "--out", str(folder / "samples")], folder / "sample.log")
    out = folder / "metrics.json"  # no shots: a source domain such as noto has none, and copies are not the question here
    quality.run([quality.TENSHOT, "evaluate", str(folder / "samples"), "--reference", f"emoji:{style}", "--out", str(out)], out.with_suffix(".log"))
    metrics = json.loads(out.read_text())
    return quality.store(folder, {**metrics, "sample-cpu-seconds": timing["cpu-seconds"], "command": command})


def summary(cells: list[dict]) -> dict[tuple[str, str, int], dict[str, tuple[float, float | None]]]:
    """(model, sampler, steps) -> column -> (mean, sd) over the seeds."""
    keys = sorted({(c["model"], c["sampler"], c["steps"]) for c in cells})
    return {key: {column: series.mean_sd([c for c in cells if (c["model"], c["sampler"], c["steps"]) == key], column)
                  for column in ("fid-el0", "swd", "kid-el0")} for key in keys}  # fmt: skip


def choose(cells: list[dict]) -> tuple[str, int] | None:
    """The rule of the module docstring: the cheapest (sampler, steps) within DDIM-25's spread on every model, or
    None when a model has no DDIM-25 cell."""
    table = summary(cells)
    models = sorted({c["model"] for c in cells})
    bounds = {}
    for model in models:
        if (model, *REFERENCE) not in table:
            return None
        mean, sd = table[(model, *REFERENCE)]["fid-el0"]
        bounds[model] = mean + sd if sd is not None else mean * (1 + ONE_SEED_MARGIN)
    candidates = sorted({(steps, sampler) for _, sampler, steps in table})  # DDIM-25 itself is always within bounds
    return next((sampler, steps) for steps, sampler in candidates
                if all((model, sampler, steps) in table and table[(model, sampler, steps)]["fid-el0"][0] <= bounds[model] for model in models))


def markdown(results: dict) -> str:
    settings = results["settings"]
    lines = [f"Samplers against their evaluations per image: `{settings['command']}`, {settings['date']}. {settings['n']} images per cell, "
             "scored against the reference half of the style each model is paired with; mean ± sd over the seeds.", "",
             "| model | sampler | evaluations | seeds | fid-el0 | swd | kid-el0 |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for (model, sampler, steps), columns in summary(results["cells"]).items():
        seeds = sum(1 for c in results["cells"] if (c["model"], c["sampler"], c["steps"]) == (model, sampler, steps))
        shown = [f"{m:.{d}f}" + (f" ± {s:.{d}f}" if s is not None else "") for (m, s), d in ((columns["fid-el0"], 1), (columns["swd"], 1), (columns["kid-el0"], 3))]
        lines.append(f"| {model} | {sampler} | {steps} | {seeds} | " + " | ".join(shown) + " |")
    chosen = choose(results["cells"])
    if chosen is not None:
        lines += ["", f"The cheapest setting within DDIM-25's fid-el0 spread on every model: `--sampler {chosen[0]} --steps {chosen[1]}`."]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = summary(results["cells"])
    models = sorted({model for model, _, _ in table})
    figure, axes = plt.subplots(len(models), 2, figsize=(10, 3.6 * len(models)), squeeze=False, constrained_layout=True)
    for row, model in zip(axes, models):
        for axis, column in zip(row, ("fid-el0", "swd")):
            for index, sampler in enumerate(SAMPLERS):
                points = sorted((steps, table[(m, s, steps)][column]) for m, s, steps in table if m == model and s == sampler)
                if points:
                    means = [mean for _, (mean, _) in points]
                    spreads = [sd or 0.0 for _, (_, sd) in points]
                    axis.errorbar([steps for steps, _ in points], means, yerr=spreads, marker="o", capsize=3, color=f"C{index}", label=sampler)
            axis.set_title(f"{model}: {column}")
            axis.set_xlabel("UNet evaluations per image")
            axis.grid(alpha=0.3)
            axis.legend(fontsize=8)
    figure.savefig(path, dpi=90)
    plt.close(figure)


def publish(results: dict, name: str) -> None:
    """NAME.json (merged with an earlier one's cells it does not redo, and its commands), NAME.md and NAME.png."""
    path = RESULTS / f"{name}.json"
    if path.is_file():
        earlier = json.loads(path.read_text())
        cells = series.merged_entries(earlier["cells"], results["cells"], ("model", "sampler", "steps", "seed"))
        command = series.merged_commands(earlier["settings"]["command"], results["settings"]["command"])
        results = {**results, "cells": cells, "settings": {**results["settings"], "command": command}}
    quality.write_json(path, results)
    (RESULTS / f"{name}.md").write_text(markdown(results))
    plot(results, RESULTS / f"{name}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="noto-32=noto", help="MODEL=STYLE pairs, comma-separated.")
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--steps", default=",".join(map(str, STEPS)), help="UNet evaluations per image (DDIM and DPM-Solver++ take one a step).")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=quality.WORK)
    parser.add_argument("--name", default="samplers")
    args = parser.parse_args()
    pairs = [pair.rsplit("=", 1) for pair in args.models.split(",")]
    if any(len(pair) != 2 for pair in pairs):
        parser.error("--models takes MODEL=STYLE pairs")
    results = {"settings": {"n": args.n, "date": time.strftime("%Y-%m-%d"), "command": "python bench/samplers.py " + " ".join(sys.argv[1:])}, "cells": []}
    for model, style in pairs:
        for seed in [int(s) for s in args.seeds.split(",")]:
            for sampler in args.samplers.split(","):
                for steps in [int(s) for s in args.steps.split(",")]:
                    figures = cell(args.work, model, style, sampler, steps, seed, args.n)
                    results["cells"].append({"model": model, "style": style, "sampler": sampler, "steps": steps, "seed": seed, **figures})
                    publish(results, args.name)


if __name__ == "__main__":
    main()
