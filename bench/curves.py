"""Budget curves: what training longer does to fine-tuning and to DomainStudio (the over-training regime that
DDPM-PA / DomainStudio claim to fix), with the memorisation monitor beside them.

For each target, method and seed, one ``tenshot adapt`` run of the largest budget, checkpointed at every multiple
of the smallest; ``tenshot export`` gives the weights of each budget's step (a run's EMA at step N equals the
model of an N-step run: adapt's learning rate is constant and the EMA's warm-up depends on the step alone;
``tests/test_memorisation.py`` checks it bit for bit). Every budget of the first ``--every-budget-seeds`` seeds, and the
``--top`` largest budgets of the other seeds, are sampled (``--n`` images of 25 DDIM steps, the seed's) and scored
by ``tenshot evaluate`` against the target's ``reference`` half, near-copies against its shots, like the cells of
``bench/quality.py`` (whose helpers run the commands, time them and cache their stages).

The memorisation monitor (:mod:`tenshot.metrics.memorisation`) is scored at every checkpoint from the run's own
preview noise (``preview_count`` images of the run's seed, ``preview_steps`` DDIM steps, as the trainer draws them),
so runs made before the monitor existed get it too; the stop that ``--stop-on-copies SHARE`` would have made
(the last checkpoint before the copy share first exceeds SHARE) is marked on the plots.

    .venv/bin/python bench/curves.py --targets openmoji --methods finetune,domainstudio --seeds 0,1

A target is an EmojiShift style or a folder outside it laid out like one (``DIR/shots``, ``DIR/reference``;
``bench/quality.target_split``), which the runs take through ``--target DIR/shots``, as a user would.

Writes ``bench/results/NAME.json`` (every cell and every monitor point, published as each finishes),
``NAME.md`` (mean ± sd over the seeds of each budget) and ``NAME-TARGET.png`` (fid-el0, kid-el0,
intra-lpips-el0, near-copy share, swd and the monitor's copy share against steps, one line per method with its
seed spread). A publication keeps the cells of an earlier one that it does not redo, so the curves can run in
parts (``--sample-budgets``, one target or seed at a time); ``--plot`` redraws the markdown and the plots from
the JSON alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402  (bench/quality.py: its cells' helpers)
import series  # noqa: E402  (grouping, seed spread, merged parts)

RESULTS = quality.RESULTS
BUDGETS = (150, 300, 600, 1200, 2400)
METRICS = (("fid-el0", "fid-el0", 1, 1), ("kid-el0", "kid-el0", 3, 1), ("intra-lpips-el0", "intra-lpips-el0", 2, 1),
           ("near-copy-share", "near-copy %", 1, 100), ("swd", "swd", 1, 1))  # fmt: skip
# the --stop-on-copies marked: 0.2, about the share real images of the target score against its shots (0.19 and
# 0.20 on openmoji and emojione: the reference row of each table), and 0.5, half the previews
STOP_SHARES = (0.2, 0.5)


def run_folder(work: Path, target: str, method: str, seed: int) -> Path:
    return work / "curves" / quality.target_name(target) / f"{method}-seed{seed}"


def train(work: Path, target: str, method: str, seed: int, budgets: list[int]) -> Path:
    """The run of the largest budget with a checkpoint at every multiple of the smallest (resumed if stopped)."""
    out = run_folder(work, target, method, seed)
    argv = [quality.TENSHOT, "adapt", "--source", quality.SOURCE, "--target", quality.target_domain(target), "--method", method, "--seed", str(seed),
            "--steps", str(budgets[-1]), "--checkpoint-every", str(budgets[0]), "--keep-checkpoints", str(budgets[-1] // budgets[0]),
            "--preview-every", str(budgets[0])]  # fmt: skip
    recipe = " ".join(argv[1:])
    done = out.with_name(out.name + ".trained.json")
    quality.stage(done, recipe, lambda: quality.train_resuming(argv, out, out.with_name(out.name + ".log"), recipe))
    return out


def budget_cell(run: Path, target: str, seed: int, step: int, n: int) -> dict:
    """Export the run's step, sample ``n`` images and evaluate them (cached by the cell's recipe)."""
    cell = run.with_name(f"{run.name}-step{step}")
    plan = quality.Plan(n=n, seeds=[seed], targets=[target], methods=[], anchors=[], quick=False, adapt_flags=[])
    command = f"export {run} --step {step}; sample {' '.join(quality.sample_flags(plan, seed))}"
    result = quality.cached(cell, command)
    if result is not None:
        return result
    model = cell / "model"
    if not (model / "config.yaml").is_file():
        quality.run([quality.TENSHOT, "export", str(run), "--step", str(step), "--out", str(model)], cell / "export.log")
    sampled = quality.stage(cell / quality.SAMPLED, command, lambda: quality.sample(str(model), cell, plan, seed))
    metrics = quality.evaluate(cell / "samples", target, cell / "metrics.json")
    return quality.store(cell, {**metrics, **sampled, "command": command})


def monitor_points(run: Path, target: str) -> list[dict]:
    """The monitor's figures at every checkpoint of ``run`` (cached beside it), from the trainer's preview noise."""
    import tempfile

    import torch
    import yaml

    from tenshot import api
    from tenshot.config import ExportConfig
    from tenshot.data.domains import load_domain
    from tenshot.metrics.memorisation import CopyMonitor
    from tenshot.sampling import generate, load_for_sampling
    from tenshot.train.checkpoint import list_checkpoints

    done = run.with_name(run.name + ".monitor.json")
    steps = [step for step, _ in list_checkpoints(run / "checkpoints")]
    if done.is_file():
        points = json.loads(done.read_text())
        if [point["step"] for point in points] == steps:
            return points
    train = yaml.safe_load((run / "config.yaml").read_text())["train"]
    monitor = CopyMonitor(load_domain(quality.target_split(target, "shots"), 32))
    points = []
    with tempfile.TemporaryDirectory() as scratch:
        for step in steps:
            exported = api.export(ExportConfig(run=str(run), step=step, out=f"{scratch}/step-{step}"))
            with torch.no_grad():
                images = generate(load_for_sampling(exported), train["preview_count"], steps=train["preview_steps"], seed=train["seed"],
                                      batch_size=train["preview_count"])  # fmt: skip
            points.append({"step": step, **monitor(images), "spacing": monitor.spacing})
    quality.write_json(done, points)
    return points


def reference_copy_share(work: Path, target: str) -> float:
    """The monitor's copy share of the target's own reference images: what a generator of the domain scores
    (cached in the work folder)."""
    from tenshot.data.domains import load_domain
    from tenshot.metrics.memorisation import SHARE_KEY, CopyMonitor

    done = work / "curves" / f"{quality.target_name(target)}.reference-share.json"
    if not done.is_file():
        monitor = CopyMonitor(load_domain(quality.target_split(target, "shots"), 32))
        done.parent.mkdir(parents=True, exist_ok=True)
        quality.write_json(done, {"share": monitor(load_domain(quality.target_split(target, "reference"), 32))[SHARE_KEY]})
    return json.loads(done.read_text())["share"]


def stop_step(points: list[dict], share: float) -> int | None:
    """The step ``--stop-on-copies share`` would keep: the last checkpoint before the first above ``share``."""
    from tenshot.metrics.memorisation import SHARE_KEY

    kept = 0
    for point in points:
        if point[SHARE_KEY] > share:
            return kept
        kept = point["step"]
    return None


def stops(results: dict, target: str) -> dict[tuple[str, int], dict[float, int | None]]:
    """``(method, seed) -> {share: the step --stop-on-copies share keeps}`` from the monitor points of ``target``."""
    runs: dict[tuple[str, int], list[dict]] = {}
    for point in results["monitor"]:
        if point["target"] == target:
            runs.setdefault((point["method"], point["seed"]), []).append(point)
    return {run: {share: stop_step(sorted(points, key=lambda p: p["step"]), share) for share in STOP_SHARES} for run, points in sorted(runs.items())}


def grouped(results: dict, target: str) -> dict[str, dict[int, list[dict]]]:
    """``method -> step -> cells`` of one target."""
    return series.grouped(results["cells"], target, "method", "step")


def markdown(results: dict) -> str:
    settings = results["settings"]
    lines = [f"Budget curves on EmojiShift at 32 px from `{quality.SOURCE}`: one run per method and seed to the largest budget, each "
             f"budget's EMA exported from its checkpoint, {settings['n']} samples of 25 DDIM steps, scored against the target's reference "
             f"half (near-copies against its shots). Mean ± sd over the seeds of each budget. {settings['date']}, "
             f"`{settings['command']}`. The monitor's copy share is of the run's {settings.get('preview-count', 16)} preview samples; "
             "'stop at S' is the step `--stop-on-copies S` keeps (never: the share stayed at or below S)."]  # fmt: skip
    for target in settings["targets"]:
        table = grouped(results, target)
        if not table:
            continue
        lines += ["", f"### {target} (reference images' own copy share: {results['reference-share'].get(target, float('nan')):.3f})", "",
                  "| method | steps | runs | " + " | ".join(heading for _, heading, *_ in METRICS) + " | monitor copy share |",
                  "|---" * (len(METRICS) + 4) + "|"]  # fmt: skip
        for method, steps in table.items():
            for step, cells in steps.items():
                figures = []
                for column, _, digits, scale in METRICS:
                    mean, std = series.mean_sd(cells, column)
                    figures.append(f"{mean * scale:.{digits}f}" + (f" ± {std * scale:.{digits}f}" if std is not None else ""))
                shares = [p["monitor/copy-share"] for p in results["monitor"] if p["target"] == target and p["method"] == method and p["step"] == step]
                monitor = f"{statistics.fmean(shares):.2f}" if shares else ""
                lines.append(f"| {method} | {step} | {len(cells)} | " + " | ".join(figures) + f" | {monitor} |")
        for share in STOP_SHARES:
            kept = [f"{method} seed {seed}: {'step ' + str(at[share]) if at[share] is not None else 'never'}" for (method, seed), at in stops(results, target).items()]
            if kept:
                lines += ["", f"Stop at {share}: " + "; ".join(kept)]
    return "\n".join(lines) + "\n"


def plot(results: dict, target: str, path: Path) -> None:
    """One PNG: every metric and the monitor against steps (log scale), a line per method with its seed spread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = grouped(results, target)
    budgets = sorted({c["step"] for c in results["cells"] if c["target"] == target})
    panels = [*METRICS, ("monitor/copy-share", "monitor copy share (previews)", 2, 1)]
    figure, axes = plt.subplots(2, 3, figsize=(13, 7), constrained_layout=True)
    for axis, (column, heading, _, scale) in zip(axes.flat, panels):
        for index, method in enumerate(sorted({c["method"] for c in results["cells"] if c["target"] == target} | set(table))):
            colour = f"C{index}"
            if column.startswith("monitor/"):
                for seed in sorted({p["seed"] for p in results["monitor"] if p["target"] == target and p["method"] == method}):
                    points = [p for p in results["monitor"] if p["target"] == target and p["method"] == method and p["seed"] == seed]
                    axis.plot([p["step"] for p in points], [p[column] for p in points], color=colour, alpha=0.8, label=f"{method} seed {seed}")
                    for share, style in zip(STOP_SHARES, (":", "--")):
                        stop = stops(results, target)[(method, seed)][share]
                        if stop:
                            axis.axvline(stop, color=colour, linestyle=style, alpha=0.8)
                continue
            steps = table.get(method, {})
            means, errors = [], []
            for cells in steps.values():
                mean, std = series.mean_sd(cells, column)
                means.append(mean * scale)
                errors.append((std or 0.0) * scale)
            axis.errorbar(list(steps), means, yerr=errors, color=colour, marker="o", capsize=3, label=method)
        if column.startswith("monitor/"):
            axis.axhline(results["reference-share"].get(target, 0.0), color="grey", linestyle="--", label="reference images")
            for share, style in zip(STOP_SHARES, (":", "--")):
                axis.axhline(share, color="black", linewidth=0.6, linestyle=style, label=f"stop at {share} (dotted / dashed: its step)")
        axis.set_xscale("log", base=2)
        axis.set_xticks(budgets, [str(step) for step in budgets])
        axis.minorticks_off()
        axis.set_xlabel("optimiser steps (batch 8)")
        axis.set_title(heading)
        axis.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    axes.flat[-1].legend(fontsize=7)
    figure.suptitle(f"noto-32 adapted to 10 {target} shots: budget curves (bench/curves.py)")
    figure.savefig(path, dpi=90)
    plt.close(figure)


def merged(earlier: dict, results: dict) -> dict:
    """``results`` with the cells and monitor points of an ``earlier`` publication that it does not redo (a
    table run in parts, in sittings whose work folders are gone)."""
    keys = {"cells": ("target", "method", "seed", "step"), "monitor": ("target", "method", "seed", "step")}
    combined = {**results, **{part: series.merged_entries(earlier.get(part, []), results[part], key) for part, key in keys.items()}}
    combined["settings"] = series.merged_settings(earlier["settings"], results["settings"])
    combined["reference-share"] = {**earlier.get("reference-share", {}), **results["reference-share"]}
    return combined


def publish(results: dict, name: str) -> None:
    """Write NAME.json (merged with what it held), NAME.md and a PNG per target."""
    earlier = RESULTS / f"{name}.json"
    if earlier.is_file():
        results = merged(json.loads(earlier.read_text()), results)
    quality.write_json(RESULTS / f"{name}.json", results)
    (RESULTS / f"{name}.md").write_text(markdown(results))
    for target in results["settings"]["targets"]:
        if grouped(results, target):
            plot(results, target, RESULTS / f"{name}-{target}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default="openmoji,emojione")
    parser.add_argument("--methods", default="finetune,domainstudio")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--budgets", default=",".join(map(str, BUDGETS)), help="Doubling step budgets, each a multiple of the first.")
    parser.add_argument("--every-budget-seeds", type=int, default=1, help="How many of the seeds are sampled at every budget.")
    parser.add_argument("--top", type=int, default=2, help="The other seeds are sampled at this many of the largest budgets.")
    parser.add_argument("--sample-budgets", default=None, help="Sample only these of the budgets in this invocation (a table run in parts).")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=quality.WORK)
    parser.add_argument("--name", default="curves")
    parser.add_argument("--plot", action="store_true", help="Redraw NAME.md and the PNGs from NAME.json alone.")
    args = parser.parse_args()
    if args.plot:
        publish(json.loads((RESULTS / f"{args.name}.json").read_text()), args.name)
        return
    targets, methods = args.targets.split(","), args.methods.split(",")
    seeds, budgets = [int(s) for s in args.seeds.split(",")], sorted(int(b) for b in args.budgets.split(","))
    if any(budget % budgets[0] for budget in budgets):
        parser.error("every budget must be a multiple of the smallest (the runs checkpoint at its multiples)")
    parts = [int(b) for b in args.sample_budgets.split(",")] if args.sample_budgets else budgets
    results = {"settings": {"targets": [quality.target_name(target) for target in targets], "methods": methods, "seeds": seeds, "budgets": budgets, "n": args.n, "preview-count": 16,
                            "date": time.strftime("%Y-%m-%d"), "command": "python bench/curves.py " + " ".join(sys.argv[1:])},
               "cells": [], "monitor": [], "reference-share": {quality.target_name(target): reference_copy_share(args.work, target) for target in targets}}  # fmt: skip
    for target in targets:
        for method in methods:
            for rank, seed in enumerate(seeds):
                run = train(args.work, target, method, seed, budgets)
                points = monitor_points(run, target)
                results["monitor"] += [{"target": quality.target_name(target), "method": method, "seed": seed, **point} for point in points]
                sampled = budgets if rank < args.every_budget_seeds else budgets[-args.top :]
                for step in [step for step in sampled if step in parts]:
                    cell = budget_cell(run, target, seed, step, args.n)
                    results["cells"].append({"target": quality.target_name(target), "method": method, "seed": seed, "step": step, **cell})
                    publish(results, args.name)
    publish(results, args.name)


if __name__ == "__main__":
    main()
