"""Image folders (order, conversion, validation) and EmojiShift domains."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_images
from tenshot.data import domain_files, list_images, load_domain, load_image
from tenshot.data.images import load_images, resize_and_crop, to_rgb
from tenshot.errors import TenshotError

SHOTS_DIR = Path(__file__).resolve().parents[1] / "src" / "tenshot" / "data" / "shots"


# --- listing ---------------------------------------------------------------------------------------


def test_list_images_sorted_recursive_dotfiles_ignored(tmp_path):
    for name in ["b.png", "a.PNG", "sub/c.jpg", "sub/deeper/a.webp", "z/0.bmp"]:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(path, format={".jpg": "JPEG", ".webp": "WEBP", ".bmp": "BMP"}.get(path.suffix.lower(), "PNG"))
    # hidden files and folders are skipped, even when they are not images
    (tmp_path / ".DS_Store").write_bytes(b"\0\1")
    (tmp_path / ".hidden.png").write_bytes(b"not really")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (tmp_path / "sub" / ".thumbs").mkdir()
    (tmp_path / "sub" / ".thumbs" / "x.png").write_text("junk")
    (tmp_path / "empty-subfolder").mkdir()
    files = list_images(tmp_path)
    relative = [p.relative_to(tmp_path).as_posix() for p in files]
    assert relative == ["a.PNG", "b.png", "sub/c.jpg", "sub/deeper/a.webp", "z/0.bmp"]
    assert list_images(str(tmp_path)) == files  # str and Path alike, and stable


# --- conversion to RGB -----------------------------------------------------------------------------


def saved(tmp_path: Path, image: Image.Image, name: str, **kwargs) -> Path:
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


def test_grayscale_to_rgb(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    rgb = load_image(saved(tmp_path, Image.fromarray(gray, "L"), "g.png"))
    assert rgb.shape == (8, 8, 3) and rgb.dtype == np.uint8
    for channel in range(3):
        assert np.array_equal(rgb[..., channel], gray)
    bilevel = load_image(saved(tmp_path, Image.fromarray(gray > 100), "b.png"))
    assert set(np.unique(bilevel).tolist()) == {0, 255}


def test_palette_to_rgb(tmp_path):
    palette = Image.new("P", (4, 2))
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 - 3) * 3)
    palette.putdata([0, 1, 2, 0, 1, 2, 2, 1])
    rgb = load_image(saved(tmp_path, palette, "p.png"))
    assert rgb[0, :3].tolist() == [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    # a palette entry marked transparent is composited on white
    with_alpha = saved(tmp_path, palette, "pt.png", transparency=1)
    assert Image.open(with_alpha).mode == "P"
    rgb = load_image(with_alpha)
    assert rgb[0, :3].tolist() == [[255, 0, 0], [255, 255, 255], [0, 0, 255]]
    gif = load_image(saved(tmp_path, palette, "p.gif"))
    assert gif[0, 0].tolist() == [255, 0, 0]


def test_16_bit_to_rgb(tmp_path):
    ramp = (np.arange(256, dtype=np.uint32).reshape(16, 16) * 257).astype(np.uint16)  # 8-bit value k -> 257 k
    path = saved(tmp_path, Image.fromarray(ramp), "ramp16.png")
    assert Image.open(path).mode.startswith("I;16")
    rgb = load_image(path)
    assert np.array_equal(rgb[..., 0], np.arange(256, dtype=np.uint8).reshape(16, 16))
    assert np.array_equal(rgb[..., 0], rgb[..., 2])
    # a dark 16-bit image (every value <= 255) is still 16-bit: 200 / 65535 is nearly black, not grey 200
    dark = load_image(saved(tmp_path, Image.fromarray(np.full((8, 8), 200, np.uint16)), "dark16.png"))
    assert dark.max() <= 1
    bright = load_image(saved(tmp_path, Image.fromarray(np.full((8, 8), 65535, np.uint16)), "white16.png"))
    assert (bright == 255).all()


def test_rgba_composited_on_white(tmp_path):
    array = np.zeros((2, 3, 4), np.uint8)
    array[0, 0] = (255, 0, 0, 255)  # opaque red
    array[0, 1] = (0, 0, 255, 0)  # fully transparent blue -> white
    array[0, 2] = (0, 0, 0, 128)  # half-transparent black -> mid grey
    array[1, :] = (0, 255, 0, 255)
    rgb = load_image(saved(tmp_path, Image.fromarray(array, "RGBA"), "a.png"))
    assert rgb[0, 0].tolist() == [255, 0, 0]
    assert rgb[0, 1].tolist() == [255, 255, 255]
    assert all(abs(v - 127) <= 1 for v in rgb[0, 2].tolist())
    assert rgb[1, 1].tolist() == [0, 255, 0]
    la = np.stack([np.full((2, 2), 0, np.uint8), np.array([[0, 255], [255, 0]], np.uint8)], -1)
    rgb = load_image(saved(tmp_path, Image.fromarray(la, "LA"), "la.png"))
    assert rgb[:, :, 0].tolist() == [[255, 0], [0, 255]]
    # a tRNS colour key on an RGB or grayscale PNG is transparency too
    keyed = saved(tmp_path, Image.new("RGB", (2, 2), (10, 20, 30)), "key.png", transparency=(10, 20, 30))
    assert load_image(keyed)[0, 0].tolist() == [255, 255, 255]
    keyed_l = saved(tmp_path, Image.new("L", (2, 2), 40), "keyl.png", transparency=40)
    assert load_image(keyed_l)[0, 0].tolist() == [255, 255, 255]


def test_other_modes_to_rgb():
    assert to_rgb(Image.new("CMYK", (2, 2), (0, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("F", (2, 2), 1.0)).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("RGB", (2, 2), (1, 2, 3))).getpixel((0, 0)) == (1, 2, 3)


def test_resize_and_crop_takes_the_centre(tmp_path):
    # three 16 px squares side by side, red | green | blue: the centre crop at 16 is all green
    wide = np.zeros((16, 48, 3), np.uint8)
    wide[:, :16, 0] = 255
    wide[:, 16:32, 1] = 255
    wide[:, 32:, 2] = 255
    crop = np.asarray(resize_and_crop(Image.fromarray(wide), 16))
    assert crop.shape == (16, 16, 3)
    assert (crop == [0, 255, 0]).all()
    tall = np.ascontiguousarray(wide.transpose(1, 0, 2))
    assert (np.asarray(resize_and_crop(Image.fromarray(tall), 16)) == [0, 255, 0]).all()
    # downscaled 2x first (shorter side 32 -> 16), then the centre: red | green green | blue at 64x32
    big = np.zeros((32, 64, 3), np.uint8)
    big[:, :16] = (255, 0, 0)
    big[:, 16:48] = (0, 255, 0)
    big[:, 48:] = (0, 0, 255)
    path = saved(tmp_path, Image.fromarray(big), "big.png")
    crop = load_image(path, 16)
    assert crop.shape == (16, 16, 3)
    assert np.abs(crop[:, 4:12].astype(int) - [0, 255, 0]).max() <= 2  # away from LANCZOS ringing at the borders
    assert abs(int(crop[:, 0, 0].mean()) - int(crop[:, -1, 2].mean())) <= 1  # a centred crop bleeds symmetrically
    assert np.abs(crop.astype(int) - [0, 255, 0]).mean() < 8
    assert np.array_equal(load_image(saved(tmp_path, Image.fromarray(wide[:, 16:32]), "exact.png"), 16), wide[:, 16:32])


# --- bad input: one clear error naming the file ---------------------------------------------------


def test_missing_folder(tmp_path):
    with pytest.raises(TenshotError, match=re.escape(str(tmp_path / "nope"))):
        load_domain(tmp_path / "nope", 16)


def test_not_a_folder(tmp_path):
    file = tmp_path / "x.png"
    Image.new("RGB", (16, 16)).save(file)
    with pytest.raises(TenshotError, match="not a folder"):
        list_images(file)


def test_empty_folder(tmp_path):
    (tmp_path / ".hidden").write_text("dotfiles do not count")
    with pytest.raises(TenshotError, match=re.escape(str(tmp_path)) + ".*no images"):
        load_domain(tmp_path, 16)


def test_text_file_is_named(tmp_path):
    write_images(tmp_path, 2, 16)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "notes.txt").write_text("hello")
    with pytest.raises(TenshotError, match=re.escape(str(tmp_path / "sub" / "notes.txt"))):
        load_domain(tmp_path, 16)


def test_image_suffix_on_a_text_file(tmp_path):
    write_images(tmp_path, 1, 16)
    (tmp_path / "fake.png").write_text("not a png")
    with pytest.raises(TenshotError, match=re.escape(str(tmp_path / "fake.png")) + ": not a readable image"):
        load_domain(tmp_path, 16)


def test_truncated_png_is_named(tmp_path):
    write_images(tmp_path, 2, 16)
    path = tmp_path / "broken.png"
    noisy = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)  # incompressible
    Image.fromarray(noisy).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TenshotError, match=re.escape(str(path)) + ": not a readable image"):
        load_domain(tmp_path, 16)


def test_image_smaller_than_model_is_named(tmp_path):
    write_images(tmp_path, 2, 32)
    small = tmp_path / "small.png"
    Image.new("RGB", (40, 24)).save(small)
    with pytest.raises(TenshotError, match=re.escape(str(small)) + ": image is 40x24, smaller than the model size 32"):
        load_domain(tmp_path, 32)
    assert load_domain(tmp_path, 24).shape == (3, 24, 24, 3)


def test_fewer_images_than_needed(tmp_path):
    write_images(tmp_path, 3, 16)
    with pytest.raises(TenshotError, match="3 images, at least 5"):
        load_domain(tmp_path, 16, minimum=5)


def test_load_domain_shapes_and_order(tmp_path):
    write_images(tmp_path, 5, 20)
    images = load_domain(tmp_path, 16)
    assert images.shape == (5, 16, 16, 3) and images.dtype == np.uint8
    assert np.array_equal(images, load_images(list_images(tmp_path), 16))
    assert np.array_equal(images[0], load_image(tmp_path / "000.png", 16))


# --- EmojiShift domains ----------------------------------------------------------------------------


def committed(style: str) -> list[str]:
    lines = (SHOTS_DIR / f"{style}.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


TARGETS = ["openmoji", "emojione", "noto-flags", "noto-faces"]
SUBPOPULATIONS = ["noto-flags", "noto-faces"]


@pytest.fixture(scope="module", params=TARGETS)
def style_splits(request):
    """Every split of a target style at 32 px (rendered once into the default cache, then reused)."""
    from tenshot.data import emoji

    style = request.param
    splits = {split: domain_files(f"emoji:{style}:{split}", 32) for split in ("shots", "train", "reference", "all")}
    return style, splits, emoji


def test_emoji_splits(style_splits):
    style, splits, emoji = style_splits
    names = {split: [p.stem for p in files] for split, files in splits.items()}
    shots = committed(style)
    assert len(shots) == 10 and len(set(shots)) == 10
    assert names["shots"] == sorted(shots)
    assert all(p.is_file() and p.suffix == ".png" for p in splits["shots"])
    train, reference, everything = set(names["train"]), set(names["reference"]), set(names["all"])
    shot_keys = {emoji.variant_key(name) for name in shots}
    variants = {name for name in everything if emoji.variant_key(name) in shot_keys}
    assert not train & reference
    assert train | reference == everything - variants
    assert set(shots) <= variants and set(shots) <= everything
    assert not shot_keys & {emoji.variant_key(name) for name in train | reference}  # no variant of a shot in any split
    assert train and reference
    if style not in SUBPOPULATIONS:
        assert len(everything) > 1000 and abs(len(train) - len(reference)) < 0.1 * len(everything)
    for split in ("train", "reference", "all"):
        assert names[split] == sorted(names[split])
    assert all(re.fullmatch(r"[0-9a-f]+(-[0-9a-f]+)*", name) and "fe0f" not in name.split("-") for name in everything)
    with Image.open(splits["shots"][0]) as image:
        assert image.size == (32, 32) and image.mode == "RGB"
    # the default split fills in when the argument has none
    assert domain_files(f"emoji:{style}", 32, default_split="shots") == splits["shots"]
    assert domain_files(f"emoji:{style}", 32) == splits["all"]
    assert load_domain(f"emoji:{style}:shots", 32).shape == (10, 32, 32, 3)


@pytest.mark.parametrize(
    ("name", "same", "other"),
    [
        ("1f468-1f3ff-200d-1f52c", ["1f469-200d-1f52c", "1f9d1-1f3fb-200d-1f52c"], ["1f52c", "1f468-200d-1f373"]),  # scientists
        ("1f486-1f3fb-200d-2642", ["1f486", "1f486-200d-2640"], ["1f487"]),  # person getting massage
        ("1f600", [], ["1f603"]),
        ("1f9d1-1f3fc-200d-2764-200d-1f48b-200d-1f9d1-1f3fb", ["1f48f", "1f48f-1f3fd", "1f469-200d-2764-200d-1f48b-200d-1f468"], ["1f491"]),  # kiss
        ("1f46d", ["1f46b-1f3fb", "1f9d1-1f3fb-200d-1f91d-200d-1f9d1-1f3ff"], ["1f91d"]),  # holding hands
        ("1f474-1f3fc", ["1f475", "1f9d3-1f3ff"], ["1f468"]),  # old man, old woman, older person
        ("1f3fb", [], ["1f3fc"]),  # a skin-tone swatch alone is an emoji of its own
    ],
)
def test_variant_key(name, same, other):
    from tenshot.data import emoji

    key = emoji.variant_key(name)
    assert all(emoji.variant_key(variant) == key for variant in same)
    assert all(emoji.variant_key(different) != key for different in other)


@pytest.mark.parametrize("style", SUBPOPULATIONS)
def test_subpopulations_are_the_noto_emoji_their_rule_picks(style):
    import unicodedata

    import emoji as emoji_package

    from tenshot.data import emoji

    noto = emoji.rendered_folder("noto", 32)
    folder = emoji.rendered_folder(style, 32)
    names = sorted(p.stem for p in folder.glob("*.png"))
    if style == "noto-flags":
        picked = [p.stem for p in noto.glob("*.png") if len(p.stem.split("-")) == 2
                  and all(unicodedata.name(chr(int(part, 16)), "").startswith("REGIONAL INDICATOR") for part in p.stem.split("-"))]
        assert all(len(emoji.rgi_emoji()[name]) == 2 for name in names)
    else:
        picked = [p.stem for p in noto.glob("*.png")
                  if re.search(r"(^|[^a-z])face([^a-z]|$)", emoji_package.demojize("".join(map(chr, emoji.rgi_emoji()[p.stem])), delimiters=("", "")).lower())]
        assert "1f600" in names and "1f926" not in names  # grinning face; person facepalming is no face
    assert names == sorted(picked) and len(names) > 50
    assert (folder / ".complete").read_text() == f"{len(names)}\n"
    for name in committed(style)[:3]:  # Noto's own rendering, not another drawing
        assert np.array_equal(load_image(folder / f"{name}.png"), load_image(noto / f"{name}.png"))
    header = (SHOTS_DIR / f"{style}.txt").read_text().splitlines()[0]
    assert f"all {len(names)} {style} emoji" in header


def test_noto_is_a_source_with_plain_halves():
    """noto has no shots, so its train and reference halves are the hash halves of all of it."""
    from tenshot.data import emoji

    names = sorted(p.stem for p in emoji.rendered_folder("noto", 32).glob("*.png"))
    train, reference = emoji.split_names("noto", names, "train"), emoji.split_names("noto", names, "reference")
    assert train == [name for name in names if emoji.in_train_half(name)]
    assert sorted(train + reference) == names


@pytest.mark.parametrize("style", SUBPOPULATIONS)
def test_data_render_writes_a_subpopulations_shots(style, tmp_path):
    from conftest import run_cli

    out = tmp_path / "shots"
    result = run_cli("data", "render", f"emoji:{style}", "--size", "32", "--split", "shots", "--out", out)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [f"{name}.png" for name in sorted(committed(style))]


@pytest.mark.parametrize("style", TARGETS)
def test_committed_shots_follow_their_rule(style):
    """The committed list is what its header says: choose_shots(all names, seed 0)."""
    from tenshot.data import emoji

    names = sorted(p.stem for p in emoji.rendered_folder(style, 32).glob("*.png"))
    header = (SHOTS_DIR / f"{style}.txt").read_text().splitlines()[0]
    assert f"all {len(names)} {style} emoji, seed=0)" in header
    assert emoji.choose_shots(names) == committed(style)


@pytest.mark.parametrize(
    "argument",
    ["emoji:", "emoji:nope", "emoji:openmoji:bogus", "emoji:openmoji:shots:extra", "emoji:noto:shots", "emoji::shots"],
)
def test_bad_domain_strings(argument):
    with pytest.raises(TenshotError):
        domain_files(argument, 32)


def test_bad_emoji_size():
    from tenshot.data import emoji

    with pytest.raises(TenshotError, match="size"):
        emoji.rendered_folder("openmoji", 4)


def test_render_cache_keeps_a_folder_another_process_finished(tmp_path, monkeypatch):
    """Two processes rendering the same style at once (the ranks of one launch): the one that finishes
    second must not delete the folder the first finished, which may be being read."""
    from tenshot.data import emoji

    monkeypatch.setenv("TENSHOT_CACHE", str(tmp_path))
    calls = []

    def render(style, size):
        calls.append(style)
        if len(calls) == 1:  # while this "process" renders, another one completes the folder
            finished = emoji.rendered_folder(style, size)
            (finished / "being-read.txt").write_text("a reader holds this folder")
        return {"1f600": Image.new("RGB", (size, size), (1, 2, 3))}

    monkeypatch.setattr(emoji, "render_style", render)
    folder = emoji.rendered_folder("openmoji", 16)
    assert len(calls) == 2
    assert (folder / "being-read.txt").is_file()
    assert sorted(p.name for p in folder.iterdir()) == [".complete", "1f600.png", "being-read.txt"]
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no staging folder left behind
    assert emoji.rendered_folder("openmoji", 16) == folder and len(calls) == 2  # cached from now on


def test_source_style_has_no_shots_and_says_so_before_rendering(tmp_path, monkeypatch):
    from tenshot.data import emoji

    monkeypatch.setenv("TENSHOT_CACHE", str(tmp_path))
    monkeypatch.setattr(emoji, "render_style", lambda style, size: pytest.fail("rendered before failing"))
    with pytest.raises(TenshotError, match="no committed shots"):
        domain_files("emoji:noto:shots", 32)
