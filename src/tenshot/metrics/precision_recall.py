"""Improved precision and recall (Kynkaanniemi et al., NeurIPS 2019, eq. 1-3)."""

from __future__ import annotations

import numpy as np

CHUNK = 1024


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """In float64, converting only these two chunks (not copies of the whole sets)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.clip(d, 0.0, None)


def _column_chunks(queries: np.ndarray, support: np.ndarray):
    """For each chunk of ``CHUNK`` query rows: the row slice and an iterator over the chunks of ``CHUNK`` support
    columns, ``(column slice, squared distances)``, so memory holds ``CHUNK x CHUNK`` distances whatever the sets' sizes."""
    for i in range(0, len(queries), CHUNK):
        rows = queries[i : i + CHUNK]
        yield slice(i, i + CHUNK), ((slice(j, j + CHUNK), _squared_distances(rows, support[j : j + CHUNK])) for j in range(0, len(support), CHUNK))


def knn_radii(features: np.ndarray, k: int) -> np.ndarray:
    """Squared distance from each vector to its k-th nearest neighbour in the same set (itself excluded)."""
    features = np.asarray(features)
    if len(features) <= k:
        raise ValueError(f"k-NN radii with k={k} need more than {k} vectors, got {len(features)}")
    radii = []
    for _, chunks in _column_chunks(features, features):
        nearest = None  # the k + 1 smallest distances of each row so far (its own 0 among them)
        for _, distances in chunks:
            candidates = distances if nearest is None else np.concatenate([nearest, distances], axis=1)
            nearest = np.partition(candidates, k, axis=1)[:, : k + 1] if candidates.shape[1] > k + 1 else candidates
        radii.append(np.sort(nearest, axis=1)[:, k])
    return np.concatenate(radii)


def manifold_coverage(support: np.ndarray, radii: np.ndarray, queries: np.ndarray) -> float:
    """Share of ``queries`` inside the union of balls ``|x - support_i| <= radius_i`` (eq. 1-2)."""
    support, queries = np.asarray(support), np.asarray(queries)
    inside = np.zeros(len(queries), dtype=bool)
    for rows, chunks in _column_chunks(queries, support):
        for columns, distances in chunks:
            inside[rows] |= (distances <= radii[None, columns]).any(1)
    return float(inside.mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Precision: share of fake vectors inside the k-NN manifold of the real ones; recall: the converse (eq. 3)."""
    precision = manifold_coverage(real, knn_radii(real, k), fake)
    recall = manifold_coverage(fake, knn_radii(fake, k), real)
    return precision, recall
