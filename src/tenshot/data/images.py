"""Image folders: find, validate, convert to RGB and crop to the model size.

Every bad input raises :class:`TenshotError` naming the file, before any long work starts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import TenshotError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def list_images(folder: str | Path) -> list[Path]:
    """Every image file under ``folder``, recursively, in sorted order (dotfiles ignored).

    A file with another suffix is an error, not silently skipped: a user who put a text file into
    their shots folder should hear about it.
    """
    root = Path(folder)
    if not root.exists():
        raise TenshotError(f"{root}: no such folder")
    if not root.is_dir():
        raise TenshotError(f"{root}: not a folder")
    files = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise TenshotError(f"{path}: not an image file (expected one of {', '.join(sorted(IMAGE_SUFFIXES))})")
        files.append(path)
    if not files:
        raise TenshotError(f"{root}: the folder holds no images")
    return files


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB; transparency is composited on white, 16-bit is scaled to 8-bit."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        # I;16 is 16-bit by definition (a dark one has every value <= 255 and must stay dark); 32-bit "I"
        # carries no depth, so values above 255 are taken as 16-bit and the rest as 8-bit.
        peak = 65535.0 if image.mode != "I" or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image) * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode == "P" or (image.mode in ("L", "RGB") and "transparency" in image.info):
        image = image.convert("RGBA")  # palette alpha and tRNS colour keys become a real alpha channel
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(path: str | Path, size: int | None = None) -> np.ndarray:
    """One image as uint8 RGB ``(H, W, 3)``; with ``size``, shorter side resized and centre-cropped to it.

    An image smaller than ``size`` on either side is an error: upsampling it would train the model on blur.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            rgb = to_rgb(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise TenshotError(f"{path}: not a readable image ({error})") from None
    if size is None:
        return np.asarray(rgb, dtype=np.uint8)
    width, height = rgb.size
    if min(width, height) < size:
        raise TenshotError(f"{path}: image is {width}x{height}, smaller than the model size {size}")
    return np.asarray(resize_and_crop(rgb, size), dtype=np.uint8)


def resize_and_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` (LANCZOS), then crop the centre square."""
    width, height = image.size
    if (width, height) != (size, size):
        scale = size / min(width, height)
        new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
        image = image.resize(new_size, Image.LANCZOS)
        left = (image.width - size) // 2
        top = (image.height - size) // 2
        image = image.crop((left, top, left + size, top + size))
    return image


def load_images(paths: list[Path], size: int) -> np.ndarray:
    """All images as one uint8 array ``(N, size, size, 3)``; fails on the first bad file."""
    return np.stack([load_image(path, size) for path in paths])


class ImageFiles:
    """A domain too large to hold decoded: its files, read and cropped when indexed. ``files[indices]`` (a slice or
    a sequence of indices) is the uint8 array ``(len(indices), size, size, 3)`` that ``load_images`` would give
    for those files, so a training stream or a metric's batches over it are the same as over the loaded array,
    with memory bounded by the batch."""

    def __init__(self, paths: list[Path], size: int):
        self.paths, self.size = list(paths), size

    @classmethod
    def checked(cls, paths: list[Path], size: int) -> ImageFiles:
        """``paths`` read at ``size`` when indexed, their headers checked now (:func:`check_image_headers`)."""
        check_image_headers(paths, size)
        return cls(paths, size)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """The shape of the array the files would load as."""
        return (len(self.paths), self.size, self.size, 3)

    def __getitem__(self, indices) -> np.ndarray:
        if isinstance(indices, slice):
            indices = range(*indices.indices(len(self.paths)))
        return np.stack([load_image(self.paths[i], self.size) for i in indices])


def check_image_headers(paths: list[Path], size: int) -> None:
    """Each file opens as an image at least ``size`` on both sides, from its header alone (no decoding): the
    check before training on :class:`ImageFiles`. A file damaged past its header fails when first read, as one
    line, with the last checkpoint kept."""
    for path in paths:
        try:
            with Image.open(path) as image:
                width, height = image.size
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            raise TenshotError(f"{path}: not a readable image ({error})") from None
        if min(width, height) < size:
            raise TenshotError(f"{path}: image is {width}x{height}, smaller than the model size {size}")


def save_png(array: np.ndarray, path: str | Path) -> None:
    """Write a uint8 ``(H, W, 3)`` array as PNG."""
    Image.fromarray(array).save(path, format="PNG")


def to_tensor(images: np.ndarray):
    """uint8 ``(N, H, W, 3)`` -> float32 ``(N, 3, H, W)`` in [-1, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(images) -> np.ndarray:
    """float ``(N, 3, H, W)`` in [-1, 1] -> uint8 ``(N, H, W, 3)``, rounded."""
    array = ((images.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().byte()
    return array.permute(0, 2, 3, 1).numpy()


def make_grid(images: np.ndarray, columns: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile uint8 ``(N, H, W, 3)`` images on a white grid, ``columns`` wide (square by default)."""
    count, height, width, _ = images.shape
    columns = columns or max(1, int(np.ceil(np.sqrt(count))))
    rows = int(np.ceil(count / columns))
    grid = np.full((rows * (height + padding) + padding, columns * (width + padding) + padding, 3), 255, np.uint8)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        top, left = padding + row * (height + padding), padding + column * (width + padding)
        grid[top : top + height, left : left + width] = image
    return grid


def split_grid(grid: np.ndarray, count: int, columns: int | None = None, padding: int = 2) -> np.ndarray:
    """The ``count`` images of a :func:`make_grid` grid (its inverse), uint8 ``(count, H, W, 3)``."""
    columns = columns or max(1, int(np.ceil(np.sqrt(count))))
    rows = int(np.ceil(count / columns))
    (pitch_y, rest_y), (pitch_x, rest_x) = divmod(grid.shape[0] - padding, rows), divmod(grid.shape[1] - padding, columns)
    height, width = pitch_y - padding, pitch_x - padding
    if rest_y or rest_x or height < 1 or width < 1:
        raise ValueError(f"a {grid.shape[1]}x{grid.shape[0]} grid is not {count} images in {columns} columns with padding {padding}")
    cells = []
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = padding + row * pitch_y, padding + column * pitch_x
        cells.append(grid[top : top + height, left : left + width])
    return np.stack(cells)
