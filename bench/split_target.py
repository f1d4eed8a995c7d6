"""Lay a folder of images out as a benchmark target, like EmojiShift's: 10 ``shots/`` (what a user would bring),
and the rest shuffled into ``train/`` and ``reference/`` halves (the reference half is what the samples are scored
against; nothing trains on it). ``curves.py --targets OUT`` and ``quality.py``'s helpers then reach it through
``--target OUT/shots``, the user's path.

The split: the image files sorted by name, shuffled by ``random.Random(seed)``; the first 10 are the shots, then
alternately train and reference. The files are copied unchanged.

    .venv/bin/python bench/split_target.py IMAGES OUT [--seed 0] [--shots 10]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tenshot.data.images import IMAGE_SUFFIXES  # noqa: E402


def split(files: list[Path], seed: int, shots: int) -> dict[str, list[Path]]:
    """``shots``, ``train`` and ``reference`` of ``files``, by the rule in the module docstring."""
    order = sorted(files, key=lambda path: path.name)
    random.Random(seed).shuffle(order)
    rest = order[shots:]
    return {"shots": order[:shots], "train": rest[0::2], "reference": rest[1::2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", type=Path, help="A folder of the target's images (not searched recursively).")
    parser.add_argument("out", type=Path, help="The target folder to make; it must not exist.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shots", type=int, default=10)
    args = parser.parse_args()
    files = [path for path in args.images.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES] if args.images.is_dir() else []
    if len(files) < args.shots + 2:
        sys.exit(f"error: {args.images}: needs at least {args.shots + 2} images, found {len(files)}")
    if args.out.exists():
        sys.exit(f"error: {args.out} exists; choose a new folder")
    for name, chosen in split(files, args.seed, args.shots).items():
        (args.out / name).mkdir(parents=True)
        for path in chosen:
            shutil.copy2(path, args.out / name / path.name)
        print(f"{args.out / name}: {len(chosen)} images")


if __name__ == "__main__":
    main()
