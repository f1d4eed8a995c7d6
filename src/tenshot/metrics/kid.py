"""Kernel Inception Distance (Binkowski et al., ICLR 2018, "Demystifying MMD GANs", eq. 3 and sec. 4)."""

from __future__ import annotations

import numpy as np


def polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """k(x, y) = (x . y / d + 1)^3, d the feature dimension."""
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def mmd2_unbiased(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 of two samples of size m: mean k over pairs i != j inside each, minus twice the cross mean."""
    m, n = len(a), len(b)
    kaa, kbb, kab = polynomial_kernel(a, a), polynomial_kernel(b, b), polynomial_kernel(a, b)
    within = (kaa.sum() - np.trace(kaa)) / (m * (m - 1)) + (kbb.sum() - np.trace(kbb)) / (n * (n - 1))
    return float(within - 2.0 * kab.sum() / (m * n))


def kernel_distance(a: np.ndarray, b: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID: mean and standard deviation of the unbiased MMD^2 over ``subsets`` random subsets of
    ``min(subset_size, len(a), len(b))`` vectors of each set, drawn without replacement by ``seed``."""
    a, b = np.asarray(a), np.asarray(b)
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError("KID needs at least 2 feature vectors on each side")
    rng = np.random.default_rng(seed)

    def subset(features: np.ndarray) -> np.ndarray:  # float64 for the subset only, not a copy of the whole set
        return np.asarray(features[rng.choice(len(features), m, replace=False)], np.float64)

    values = [mmd2_unbiased(subset(a), subset(b)) for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))
