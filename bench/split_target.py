"""Lay a folder of images out as a benchmark target, like EmojiShift's: 10 ``shots/`` (what a user would bring),
and the rest shuffled into ``train/`` and ``reference/`` halves (the reference half is what the samples are scored
against; nothing trains on it). ``curves.py --targets OUT`` and ``quality.py``'s helpers then reach it through
``--target OUT/shots``, the user's path.

The split: the image files sorted by name, shuffled by ``random.Random(seed)``; the first 10 are the shots, then
alternately train and reference. The files are copied unchanged.

``--emoji-aliases``: for an emoji set named by shortcode (``smile.png``, as gemoji and emojify.js name theirs), each
file is renamed to its emoji's codepoints, the file names of EmojiShift's renderings, before the split, so that
``bench/translation.py`` can pair a Noto rendering with the same emoji in this style. A file whose name the
``emoji`` package does not know as an alias is left out, and so is a second alias of the same emoji (the first
name in sorted order is kept).

    .venv/bin/python bench/split_target.py IMAGES OUT [--seed 0] [--shots 10] [--emoji-aliases]
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


def by_codepoints(files: list[Path]) -> dict[str, Path]:
    """``{EmojiShift file name: file}`` of the files named by a known emoji alias (``--emoji-aliases``)."""
    import emoji

    from tenshot.data.emoji import emoji_name

    named: dict[str, Path] = {}
    for path in sorted(files, key=lambda path: path.name):
        text = emoji.emojize(f":{path.stem}:", language="alias")
        if text != f":{path.stem}:":
            named.setdefault(emoji_name(tuple(map(ord, text))) + path.suffix.lower(), path)
    return named


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", type=Path, help="A folder of the target's images (not searched recursively).")
    parser.add_argument("out", type=Path, help="The target folder to make; it must not exist.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--emoji-aliases", action="store_true", help="Rename shortcode-named emoji to their codepoints (module docstring).")
    args = parser.parse_args()
    files = [path for path in args.images.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES] if args.images.is_dir() else []
    named = by_codepoints(files) if args.emoji_aliases else {path.name: path for path in files}
    files = [Path(name) for name in named]
    if len(files) < args.shots + 2:
        sys.exit(f"error: {args.images}: needs at least {args.shots + 2} images, found {len(files)}")
    if args.out.exists():
        sys.exit(f"error: {args.out} exists; choose a new folder")
    for name, chosen in split(files, args.seed, args.shots).items():
        (args.out / name).mkdir(parents=True)
        for path in chosen:
            shutil.copy2(named[path.name], args.out / name / path.name)
        print(f"{args.out / name}: {len(chosen)} images")


if __name__ == "__main__":
    main()
