"""Paired scores of translations: each translated image against the true rendering of the same emoji in the
target style and against its own input (DESIGN.md: ``translate`` keeps file names for exactly this).

For each folder given (the output of ``tenshot translate``, or the inputs themselves as a no-op baseline):

- ``lpips-el0-to-truth``: mean LPIPS-style EL0 distance (the metric of ``tenshot evaluate``) to the target
  style's rendering of the same file name: content and style together, lower is better;
- ``lpips-el0-to-input``: the same to the input image: how much of the source is kept;
- ``rmse-to-truth``: pixel RMSE (0-255) to the target rendering, a network-free paired figure;
- ``swd``: sliced Wasserstein distance to the target style's images (unpaired, network-free).

Phasic trains against EL0 features, so the EL0 columns can flatter it (DESIGN.md, Metrics); the network-free
columns stand beside them.

    .venv/bin/python bench/translation.py --inputs INPUT_DIR --target openmoji runs/a-translated runs/b-translated

Writes ``bench/results/translation.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "translation.json"


def main() -> None:
    from tenshot.data.emoji import split_files
    from tenshot.data.images import list_images, load_images
    from tenshot.metrics.evaluate import EL0Runner
    from tenshot.metrics.swd import swd

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="Translation folders (file names as the inputs').")
    parser.add_argument("--inputs", type=Path, required=True, help="The folder that was translated.")
    parser.add_argument("--target", default="openmoji", help="The target emoji style whose renderings are the truth.")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    truth_files = {path.name: path for path in split_files(args.target, args.size, "all")}
    inputs = [path for path in list_images(args.inputs) if path.name in truth_files]
    if not inputs:
        raise SystemExit(f"no file of {args.inputs} has a {args.target} rendering of the same name")
    names = [path.name for path in inputs]
    runner = EL0Runner(64, False)
    truth = load_images([truth_files[name] for name in names], args.size)
    truth_vectors, input_vectors = runner.vectors(truth), runner.vectors(load_images(inputs, args.size))
    reference = load_images(split_files(args.target, args.size, "reference"), args.size)
    rows = {}
    for folder in [args.inputs, *args.folders]:
        images = load_images([folder / name for name in names], args.size)
        vectors = runner.vectors(images)
        rows[str(folder)] = {
            "lpips-el0-to-truth": round(float((vectors - truth_vectors).pow(2).sum(1).mean()), 4),
            "lpips-el0-to-input": round(float((vectors - input_vectors).pow(2).sum(1).mean()), 4),
            "rmse-to-truth": round(float(np.sqrt(((images.astype(float) - truth.astype(float)) ** 2).mean())), 2),
            "swd": round(swd(images, reference), 3),
        }
        print(folder, rows[str(folder)])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"inputs": str(args.inputs), "target": args.target, "images": len(names), "folders": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
