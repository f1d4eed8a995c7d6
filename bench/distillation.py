"""GDD's quality against its budget (issue 23 item 4): the one-step generator of one long ``tenshot distill`` run,
scored at every checkpoint against the distillation's own training seconds, beside its teacher sampled with DDIM
at a few evaluations per image.

- Teacher rows: ``tenshot sample TEACHER --steps K`` for each K of ``--teacher-steps`` (``--n`` images, seed 0),
  scored by ``tenshot evaluate`` against the target's reference half.
- Generator points: one ``tenshot distill TEACHER --steps S --checkpoint-every E`` run (the command's defaults
  otherwise, ``--option`` passed on); every checkpoint's EMA exported (``tenshot export``), sampled with its one
  evaluation and scored the same way (``bench/curves.py``'s cells). A point's time is the training loop's seconds at
  that step (``log.jsonl``); drawing the teacher's samples first is the run's fixed cost, given in the table.

    .venv/bin/python bench/distillation.py --teacher RUN --target openmoji --steps 2000 --every 250 --name distillation

Writes ``bench/results/NAME.json`` (merged with an earlier one's cells it does not redo), ``NAME.md`` and
``NAME.png`` (fid-el0 and swd against distillation minutes, the teacher's DDIM rows as horizontal lines).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import curves  # noqa: E402  (its export-sample-evaluate cell)
import quality  # noqa: E402  (commands, caching, evaluation)
import series  # noqa: E402  (merged publications)

RESULTS = quality.RESULTS
COLUMNS = (("fid-el0", 1), ("kid-el0", 3), ("swd", 1), ("recall-el0", 3))


def teacher_cell(work: Path, teacher: str, target: str, steps: int, n: int) -> dict:
    """``n`` images of the teacher at ``steps`` DDIM steps, scored (cached)."""
    cell = work / "distillation" / quality.target_name(target) / f"teacher-ddim{steps}"
    flags = ["--n", str(n), "--steps", str(steps), "--seed", "0", "--batch-size", str(quality.SAMPLE_BATCH)]
    command = f"sample {teacher} {' '.join(flags)}"
    result = quality.cached(cell, command)
    if result is not None:
        return result
    timing = quality.run([quality.TENSHOT, "sample", teacher, *flags, *quality.BENCH_SAMPLER, "--out", str(cell / "samples")], cell / "sample.log")
    metrics = quality.evaluate(cell / "samples", target, cell / "metrics.json")
    return quality.store(cell, {**metrics, "sample-img-per-s": n / timing["seconds"], "command": command})


def distilled_run(work: Path, teacher: str, target: str, steps: int, every: int, options: list[str], label: str, batch_size: int | None = None,
                  teacher_samples: int | None = None, seed: int | None = None) -> tuple[Path, dict]:
    """The distillation run, trained (or resumed) to ``steps`` with a checkpoint every ``every`` steps, at ``distill``'s
    default batch, teacher data and seed unless ``batch_size``, ``teacher_samples`` or ``seed`` is given."""
    out = work / "distillation" / quality.target_name(target) / label
    argv = [quality.TENSHOT, "distill", teacher, "--steps", str(steps), "--checkpoint-every", str(every), "--keep-checkpoints", str(steps // every),
            "--preview-every", str(every), *(["--batch-size", str(batch_size)] if batch_size else []),
            *(["--teacher-samples", str(teacher_samples)] if teacher_samples else []), *(["--seed", str(seed)] if seed is not None else []),
            *[part for option in options for part in ("--option", option)]]  # fmt: skip
    recipe = " ".join(argv[1:])
    timing = quality.stage(out.with_name(out.name + ".trained.json"), recipe, lambda: quality.train_resuming(argv, out, out.with_name(out.name + ".log"), recipe))
    return out, timing


def loop_seconds_at(run: Path, step: int) -> float:
    """The training loop's seconds when ``run`` finished ``step``, as its checkpoint there recorded them (``log.jsonl``
    has a record only every ``log_every`` steps, which a checkpoint step need not be)."""
    return float(json.loads((run / "checkpoints" / f"step-{step}" / "trainer.json").read_text())["seconds"])


def markdown(results: dict) -> str:
    settings = results["settings"]
    lines = [f"GDD against its budget: `{settings['command']}`, {settings['date']}. {settings['n']} samples per row, scored against "
             f"`{quality.target_split(settings['target'], 'reference')}`. The generator's minutes are the distillation loop's; drawing its teacher "
             "samples comes first and is not in them. The discriminator trains on EL0 features, the metric network: compare swd too.", "",
             "| row | minutes | " + " | ".join(column for column, _ in COLUMNS) + " |", "|---" * (len(COLUMNS) + 2) + "|"]  # fmt: skip
    for row in sorted(results["teacher"], key=lambda row: row["steps"]):
        lines.append(f"| teacher, DDIM {row['steps']} | | " + " | ".join(f"{row[c]:.{d}f}" for c, d in COLUMNS) + " |")
    for row in sorted(results["generator"], key=lambda row: (row["label"], row["step"])):
        lines.append(f"| {row['label']}, step {row['step']} | {row['seconds'] / 60:.1f} | " + " | ".join(f"{row[c]:.{d}f}" for c, d in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for axis, column in zip(axes, ("fid-el0", "swd")):
        for index, label in enumerate(sorted({row["label"] for row in results["generator"]})):
            rows = sorted((row for row in results["generator"] if row["label"] == label), key=lambda row: row["step"])
            axis.plot([row["seconds"] / 60 for row in rows], [row[column] for row in rows], marker="o", color=f"C{index}", label=f"one step: {label}")
        for index, row in enumerate(sorted(results["teacher"], key=lambda row: row["steps"])):
            axis.axhline(row[column], color="grey", linestyle=(0, (1 + index, 2)), linewidth=1)
            axis.annotate(f"teacher DDIM {row['steps']}", (0, row[column]), xycoords=("axes fraction", "data"), fontsize=7, va="bottom")
        if column == "fid-el0" and results["teacher"]:  # issue 23's bar: within 20% of the teacher's best row
            best = max(results["teacher"], key=lambda row: row["steps"])
            axis.axhline(1.2 * best[column], color="C3", linewidth=1)
            axis.annotate(f"1.2 x teacher DDIM {best['steps']}", (0.3, 1.2 * best[column]), xycoords=("axes fraction", "data"), fontsize=7, va="top", color="C3")
        axis.set_yscale("log")  # the 1-step teacher row is far above the rest
        axis.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axis.yaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
        axis.set_xlabel("distillation minutes (training loop)")
        axis.set_title(column)
        axis.grid(alpha=0.3)
    if results["generator"]:
        axes[0].legend(fontsize=8)
    figure.suptitle(f"GDD distilled from its teacher on {quality.target_name(results['settings']['target'])} (bench/distillation.py)")
    figure.savefig(path, dpi=90)
    plt.close(figure)


def publish(results: dict, name: str) -> None:
    """NAME.json (merged with an earlier one's rows it does not redo, and its commands), NAME.md and NAME.png."""
    path = RESULTS / f"{name}.json"
    if path.is_file():
        earlier = json.loads(path.read_text())
        teacher = {row["steps"] for row in results["teacher"]}
        generator = {(row["label"], row["step"]) for row in results["generator"]}
        command = series.merged_commands(earlier["settings"]["command"], results["settings"]["command"])
        results = {**results, "settings": {**results["settings"], "command": command},
                   "teacher": [r for r in earlier["teacher"] if r["steps"] not in teacher] + results["teacher"],
                   "generator": [r for r in earlier["generator"] if (r["label"], r["step"]) not in generator] + results["generator"]}  # fmt: skip
    quality.write_json(path, results)
    (RESULTS / f"{name}.md").write_text(markdown(results))
    plot(results, RESULTS / f"{name}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True, help="The teacher: a model reference, usually an adapt run.")
    parser.add_argument("--target", default="openmoji", help="An EmojiShift style, or a folder laid out like one (shots/, reference/; bench/split_target.py).")
    parser.add_argument("--teacher-steps", default="1,2,4,8,25", help="DDIM steps of the teacher's rows ('' for none).")
    parser.add_argument("--steps", type=int, default=0, help="Generator steps of the distillation (0: no distillation).")
    parser.add_argument("--every", type=int, default=250, help="Steps between the checkpoints scored.")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="A GDD option for the distillation (repeatable).")
    parser.add_argument("--batch-size", type=int, help="The distillation's batch (default: distill's own).")
    parser.add_argument("--teacher-samples", type=int, help="Images drawn from the teacher for the discriminator (default: distill's own).")
    parser.add_argument("--seed", type=int, help="The distillation's seed (default: distill's own); its rows and run folder are labelled '--label seed K'.")
    parser.add_argument("--label", default="gdd-i defaults", help="The distillation's name in the table and the plot.")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=quality.WORK)
    parser.add_argument("--name", default="distillation")
    args = parser.parse_args()
    settings = {"teacher": args.teacher, "target": args.target, "n": args.n, "date": time.strftime("%Y-%m-%d"), "command": shlex.join(["python", "bench/distillation.py", *sys.argv[1:]])}
    results = {"settings": settings, "teacher": [], "generator": []}
    for steps in [int(k) for k in args.teacher_steps.split(",") if k]:
        results["teacher"].append({"steps": steps, **teacher_cell(args.work, args.teacher, args.target, steps, args.n)})
        publish(results, args.name)
    if args.steps:
        label = args.label if args.seed is None else f"{args.label} seed {args.seed}"
        run, timing = distilled_run(args.work, args.teacher, args.target, args.steps, args.every, args.option, label.replace(" ", "-"),
                                    batch_size=args.batch_size, teacher_samples=args.teacher_samples, seed=args.seed)
        for step in range(args.every, args.steps + 1, args.every):
            cell = curves.budget_cell(run, args.target, 0, step, args.n)
            results["generator"].append({"label": label, "step": step, "seconds": loop_seconds_at(run, step), **cell})
            publish(results, args.name)
        results["settings"]["distill-process-seconds"] = timing.get("seconds")
        publish(results, args.name)


if __name__ == "__main__":
    main()
