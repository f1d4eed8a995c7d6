"""Improved precision and recall (Kynkaanniemi et al., NeurIPS 2019, eq. 1-3)."""

from __future__ import annotations

import numpy as np

CHUNK = 1024


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.clip(d, 0.0, None)


def knn_radii(features: np.ndarray, k: int) -> np.ndarray:
    """Squared distance from each vector to its k-th nearest neighbour in the same set (itself excluded)."""
    features = np.asarray(features, np.float64)
    if len(features) <= k:
        raise ValueError(f"k-NN radii with k={k} need more than {k} vectors, got {len(features)}")
    radii = [np.partition(_squared_distances(features[i : i + CHUNK], features), k, axis=1)[:, k] for i in range(0, len(features), CHUNK)]
    return np.concatenate(radii)


def manifold_coverage(support: np.ndarray, radii: np.ndarray, queries: np.ndarray) -> float:
    """Share of ``queries`` inside the union of balls ``|x - support_i| <= radius_i`` (eq. 1-2)."""
    support = np.asarray(support, np.float64)
    queries = np.asarray(queries, np.float64)
    inside = [(_squared_distances(queries[i : i + CHUNK], support) <= radii[None, :]).any(1) for i in range(0, len(queries), CHUNK)]
    return float(np.concatenate(inside).mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Precision: share of fake vectors inside the k-NN manifold of the real ones; recall: the converse (eq. 3)."""
    precision = manifold_coverage(real, knn_radii(real, k), fake)
    recall = manifold_coverage(fake, knn_radii(fake, k), real)
    return precision, recall
