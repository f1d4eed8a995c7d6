"""Sliced Wasserstein distance on Laplacian-pyramid patches (Karras et al., ICLR 2018, Progressive GAN, sec. 5).

Follows the official ``metrics/sliced_wasserstein.py``: a Laplacian pyramid from the full size down to
16 px; at each level 128 random 7x7 patches per image, each patch channel normalised by the mean and std of
its set; SWD with 4 x 128 random unit directions; x 1e3 per level; the mean over levels is reported.
Network-free, so it cannot be flattered by methods that train against a feature network.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage

PATCH = 7
PATCHES_PER_IMAGE = 128
REPEATS = 4
DIRECTIONS = 128
DIRECTION_CHUNK = 16  # directions projected and sorted at once
MIN_LEVEL = 16
MAX_IMAGES = 2048  # images per set, drawn by the seed when more: bounds the descriptors at 300 MB a set
GAUSSIAN = np.float32([[1, 4, 6, 4, 1], [4, 16, 24, 16, 4], [6, 24, 36, 24, 6], [4, 16, 24, 16, 4], [1, 4, 6, 4, 1]]) / 256.0


def pyramid_sizes(size: int) -> list[int]:
    """Level sizes from ``size`` down to the last one of at least 16 px."""
    sizes = []
    while size >= MIN_LEVEL:
        sizes.append(size)
        size = (size + 1) // 2
    return sizes


def _pyr_down(x: np.ndarray) -> np.ndarray:
    return scipy.ndimage.convolve(x, GAUSSIAN[None, None], mode="mirror")[:, :, ::2, ::2]


def _pyr_up(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    up = np.zeros(x.shape[:2] + (x.shape[2] * 2, x.shape[3] * 2), x.dtype)
    up[:, :, ::2, ::2] = x
    return scipy.ndimage.convolve(up, GAUSSIAN[None, None] * 4.0, mode="mirror")[:, :, : shape[2], : shape[3]]


def laplacian_pyramid(images: np.ndarray, levels: int) -> list[np.ndarray]:
    """Laplacian pyramid of float32 NCHW images (cv2.pyrDown/pyrUp kernels); the last level is the Gaussian residual."""
    pyramid = [images.astype(np.float32)]
    for _ in range(1, levels):
        pyramid.append(_pyr_down(pyramid[-1]))
        pyramid[-2] = pyramid[-2] - _pyr_up(pyramid[-1], pyramid[-2].shape)
    return pyramid


def patch_descriptors(level: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """128 random 7x7 patches per image, each channel normalised over the set, flattened ``(N*128, 147)``."""
    count, channels, height, width = level.shape
    half = PATCH // 2
    total = count * PATCHES_PER_IMAGE
    image = np.repeat(np.arange(count), PATCHES_PER_IMAGE)
    ys = rng.integers(half, height - half, size=total)
    xs = rng.integers(half, width - half, size=total)
    offsets = np.arange(-half, half + 1)
    rows = (ys[:, None] + offsets[None, :])[:, None, :, None]
    cols = (xs[:, None] + offsets[None, :])[:, None, None, :]
    patches = level[image[:, None, None, None], np.arange(channels)[None, :, None, None], rows, cols].astype(np.float64)
    patches -= patches.mean(axis=(0, 2, 3), keepdims=True)
    patches /= patches.std(axis=(0, 2, 3), keepdims=True) + 1e-12
    return patches.reshape(total, -1)


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> float:
    """Mean over 4 x 128 random unit directions of the 1-D Wasserstein-1 distance of the projections (equal row
    counts). The projections are sorted ``DIRECTION_CHUNK`` directions at a time, so they take about a fifth of
    the descriptors' memory rather than nearly twice it; the directions are drawn whole, as before chunking."""
    total = 0.0
    for _ in range(REPEATS):
        directions = rng.standard_normal((a.shape[1], DIRECTIONS))
        directions /= np.linalg.norm(directions, axis=0, keepdims=True)
        for start in range(0, DIRECTIONS, DIRECTION_CHUNK):
            chunk = directions[:, start : start + DIRECTION_CHUNK]
            total += np.abs(np.sort(a @ chunk, axis=0) - np.sort(b @ chunk, axis=0)).sum()
    return float(total / (REPEATS * DIRECTIONS * len(a)))


def swd(a: np.ndarray, b: np.ndarray, seed: int = 0) -> float:
    """SWD x 1e3 between two sets of uint8 ``(N, H, W, 3)`` images of one size, averaged over the levels.

    The larger set is cut to a random subset (``seed``) of the smaller one's size, as the metric needs
    equal descriptor counts, and both to at most ``MAX_IMAGES`` (each image's float64 descriptors take
    150 KB, so memory stays bounded whatever the sets' sizes). Either set may be read from disk when
    indexed (:class:`tenshot.data.images.ImageFiles`); only the subset is loaded.
    """
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"SWD needs images of one size, got {a.shape[1:]} and {b.shape[1:]}")
    size = min(a.shape[1], a.shape[2])
    levels = len(pyramid_sizes(size))
    if levels == 0:
        raise ValueError(f"SWD needs images of at least {MIN_LEVEL} px, got {size}")
    rng = np.random.default_rng(seed)
    count = min(len(a), len(b), MAX_IMAGES)
    a = a[np.sort(rng.choice(len(a), count, replace=False))] if len(a) > count else a[:]
    b = b[np.sort(rng.choice(len(b), count, replace=False))] if len(b) > count else b[:]
    pyramid_a = laplacian_pyramid(a.transpose(0, 3, 1, 2), levels)
    pyramid_b = laplacian_pyramid(b.transpose(0, 3, 1, 2), levels)
    per_level = [
        1e3 * sliced_wasserstein(patch_descriptors(la, rng), patch_descriptors(lb, rng), rng) for la, lb in zip(pyramid_a, pyramid_b)
    ]
    return float(np.mean(per_level))
