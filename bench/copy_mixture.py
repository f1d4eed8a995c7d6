"""What copies of the shots do to the scores: a sample folder with a share of its images replaced by the shots.

For each share p, the first ``round(p n)`` of the folder's ``n`` images (sorted by name) are replaced by the
target's shots, cycled in their fixed order, and the mix is scored like a benchmark cell:

    tenshot evaluate MIX --reference TARGET's reference half --shots TARGET's shots

p = 1 is the shots repeated (the quality table's ``shots`` anchor, up to how many times each repeats). A metric
that improves as p grows ranks a model that copies its shots above the same model without the copies: this is
the measurement behind the README's reading of kid-el0 in the over-training regime (``curves.md``).

    .venv/bin/python bench/copy_mixture.py --samples CELL/samples --target emojione --name copy-mixture-emojione

Writes ``bench/results/NAME.json`` and ``NAME.md``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402  (bench/quality.py: target splits, evaluation, JSON)

from tenshot.data.domains import domain_files  # noqa: E402
from tenshot.data.images import list_images  # noqa: E402

COLUMNS = (("fid-el0", 1), ("kid-el0", 3), ("intra-lpips-el0", 2), ("near-copy-share", 3), ("swd", 1))
SIZE = 32  # the EmojiShift size the shots are rendered at


def mix(samples: list[Path], shots: list[Path], share: float, out: Path) -> int:
    """``out`` holds ``samples`` with the first round(share n) replaced by ``shots`` cycled; the number replaced."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    replaced = round(share * len(samples))
    for index, path in enumerate(samples):
        source = shots[index % len(shots)] if index < replaced else path
        shutil.copyfile(source, out / f"{index:05d}{source.suffix}")
    return replaced


def markdown(results: dict) -> str:
    lines = [f"Copies of the shots mixed into `{results['samples']}` ({results['n']} images), scored against "
             f"`{quality.target_split(results['target'], 'reference')}`, {results['date']}, `{results['command']}`.", "",
             "| shots' share | images replaced | " + " | ".join(name for name, _ in COLUMNS) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]  # fmt: skip
    for cell in results["cells"]:
        values = " | ".join(f"{cell[name]:.{digits}f}" for name, digits in COLUMNS)
        lines.append(f"| {cell['share']:g} | {cell['replaced']} | {values} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path, required=True, help="A sample folder (a benchmark cell's samples).")
    parser.add_argument("--target", required=True, help="The target the samples are scored against: an EmojiShift "
                        "style, or a folder laid out like one (bench/quality.target_split).")
    parser.add_argument("--shares", default="0,0.2,0.5,0.8,1", help="Comma list of the shares replaced by shots.")
    parser.add_argument("--work", type=Path, default=quality.WORK / "copy-mixture")
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    shares = [float(value) for value in args.shares.split(",")]
    if not all(0 <= share <= 1 for share in shares):
        parser.error(f"--shares must lie in [0, 1], got {args.shares}")
    samples = list_images(args.samples)
    shots = domain_files(quality.target_split(args.target, "shots"), SIZE)
    results = {"samples": str(args.samples), "target": args.target, "n": len(samples), "date": time.strftime("%Y-%m-%d"),
               "command": "python bench/copy_mixture.py " + " ".join(sys.argv[1:]), "cells": []}  # fmt: skip
    for share in shares:
        folder = args.work / args.name / f"share-{share:g}"
        replaced = mix(samples, shots, share, folder / "samples")
        metrics = quality.evaluate(folder / "samples", args.target, folder / "metrics.json")
        results["cells"].append({"share": share, "replaced": replaced, **metrics})
        print(f"share {share:g}: " + ", ".join(f"{name} {metrics[name]:.{digits}f}" for name, digits in COLUMNS), flush=True)
    quality.write_json(quality.RESULTS / f"{args.name}.json", results)
    (quality.RESULTS / f"{args.name}.md").write_text(markdown(results))


if __name__ == "__main__":
    main()
