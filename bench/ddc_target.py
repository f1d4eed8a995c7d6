"""Where Phasic's DDC target lies against each emoji's true target rendering (METHODS.md 1.4, Eqs. 3-4).

DDC trains the translation x^{A->B} of a source image x^A towards E(x^A) + w, with w = mean_i E(x^B_i) -
mean_j E(x^A_j) over the shots and the source images the phasic run uses (the 1,000 that ``load_source_images``
picks for ``noto-32``), E the pooled EL0 embedding at phasic's default feature size. The direction is right for
an emoji when its true target rendering sits near E(x^A) + w, that is when the target rendering of an emoji is its
source rendering moved by one shift common to all emoji.

For the translation table's inputs (``bench/translation.py``'s rule, ``--n`` of them) this scores, per target,
the mean squared distance from E(truth) to four points: the input E(x^A); the DDC target E(x^A) + w; the shots'
mean embedding; and the mean embedding of the truths themselves, where an output would land if it kept nothing
of its input and took the target's average look. Two spaces: the pooled EL0 embedding that DDC uses, and
the LPIPS-style EL0 vectors of the translation table's "EL0 → truth". It also scores the inputs' margin
(``translation.own_margin``: the mean distance to the other emoji's truths, minus the distance to its own; the
translation tables score the same for each translation). Nothing is trained, so the run takes about a minute:

    .venv/bin/python bench/ddc_target.py --n 500

Writes ``bench/results/NAME.{json,md}`` (``--name``, default ``ddc-target``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402  (bench/quality.py: result files)
import translation  # noqa: E402  (bench/translation.py: the inputs and their truths)

POINTS = (("input", "E(x^A): the input"), ("ddc-target", "E(x^A) + w: the DDC target"),
          ("shots-mean", "the shots' mean"), ("truths-mean", "the truths' mean"))  # fmt: skip
SPACES = (("pooled", "pooled EL0 (DDC's space)"), ("lpips", "LPIPS-EL0 (the table's EL0 → truth)"))


def embeddings(runner, encoder, images) -> dict[str, torch.Tensor]:
    """uint8 ``images``: the pooled EL0 embedding as phasic's DDC computes it (``encoder``, at its feature size) and
    the LPIPS-style EL0 vectors of the metrics (``runner``)."""
    from tenshot.data.images import to_tensor

    pooled = torch.cat([encoder(to_tensor(images[start : start + 64]), style=False)[0] for start in range(0, len(images), 64)])
    return {"pooled": pooled, "lpips": runner.vectors(images)}


def scores(target: str, n: int, work: Path, networks, source: dict[str, torch.Tensor]) -> dict:
    from tenshot.data.domains import load_domain
    from tenshot.data.images import load_images

    inputs_folder, truth = translation.prepare_inputs(work, target, n)
    names = sorted(truth)
    truths = embeddings(*networks, load_images([truth[name] for name in names], translation.SIZE))
    inputs = embeddings(*networks, load_images([inputs_folder / name for name in names], translation.SIZE))
    shots = embeddings(*networks, load_domain(quality.target_split(target, "shots"), translation.SIZE))
    cell = {"target": quality.target_name(target), "n": len(names)}
    for space, _ in SPACES:
        direction = shots[space].mean(0) - source[space].mean(0)
        points = {"input": inputs[space], "ddc-target": inputs[space] + direction,
                  "shots-mean": shots[space].mean(0), "truths-mean": truths[space].mean(0)}  # fmt: skip
        cell[space] = {key: translation.mean_squared_distance(truths[space], point) for key, point in points.items()}
        cell[space]["input-margin"] = translation.own_margin(inputs[space], truths[space])
    return cell


def markdown(results: dict) -> str:
    settings = results["settings"]
    lines = [f"Mean squared distance from each emoji's true target rendering to four points, over the translation table's "
             f"inputs (`bench/ddc_target.py` docstring). w from the shots and the 1,000 source images of a phasic run from "
             f"noto-32. Margin: the input's mean distance to the other emoji's truths minus to its own. {settings['date']}, "
             f"`{settings['command']}`.", ""]  # fmt: skip
    for space, title in SPACES:
        lines += [f"### {title}", "", "| target | inputs | " + " | ".join(label for _, label in POINTS) + " | margin |",
                  "|---|---|" + "---|" * (len(POINTS) + 1)]  # fmt: skip
        for cell in results["cells"]:
            values = cell[space]
            digits = 1 if space == "pooled" else 3
            lines.append(f"| {cell['target']} | {cell['n']} | " + " | ".join(f"{values[key]:.{digits}f}" for key, _ in POINTS)
                         + f" | {values['input-margin']:.{digits}f} |")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default=",".join(quality.TARGETS), help="Comma list of target styles or folders (bench/translation.py's --target).")
    parser.add_argument("--n", type=int, default=500, help="Inputs per target (bench/translation.py's rule).")
    parser.add_argument("--work", type=Path, default=quality.WORK / "translation", help="Where the inputs are copied (shared with bench/translation.py).")
    parser.add_argument("--name", default="ddc-target", help="Result files bench/results/NAME.{json,md}.")
    args = parser.parse_args()
    from tenshot.methods.phasic import FeatureEncoder, PhasicOptions
    from tenshot.metrics.evaluate import EL0Runner
    from tenshot.models.unet import load_model
    from tenshot.source_images import load_source_images

    options = PhasicOptions()
    networks = (EL0Runner(64, False), FeatureEncoder(options.ddc_network, options.style_network, options.feature_size))
    with torch.no_grad():
        source = embeddings(*networks, load_source_images(None, "noto-32", load_model("noto-32"), options.source_count))
        cells = [scores(target, args.n, args.work, networks, source) for target in args.targets.split(",")]
    results = {"settings": {"date": time.strftime("%Y-%m-%d"), "command": shlex.join(["python", "bench/ddc_target.py", *sys.argv[1:]])},
               "cells": cells}  # fmt: skip
    quality.write_json(quality.RESULTS / f"{args.name}.json", results)
    (quality.RESULTS / f"{args.name}.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
