"""Frechet distance between Gaussians fitted to features (FID: Heusel et al., NeurIPS 2017, eq. 6).

d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)). For any factors S = R R^T, the eigenvalues of
S1 S2 = R1 R1^T R2 R2^T are those of (R1^T R2)(R1^T R2)^T, so Tr (S1 S2)^(1/2) is the nuclear norm
(sum of singular values) of R1^T R2 and Tr S = |R|_F^2. From features, R comes straight from the
centred data, without an eigendecomposition of a (for fewer samples than dimensions, singular)
covariance; this stays real and stable where ``sqrtm`` needs pytorch-fid's eps fallback.
"""

from __future__ import annotations

import numpy as np

CHUNK = 4096  # feature rows converted to float64 at once


def _distance(mu1: np.ndarray, r1: np.ndarray, mu2: np.ndarray, r2: np.ndarray) -> float:
    diff = mu1 - mu2
    trace_sqrt = np.linalg.svd(r1.T @ r2, compute_uv=False).sum()
    value = diff @ diff + np.sum(r1 * r1) + np.sum(r2 * r2) - 2.0 * trace_sqrt
    return float(max(value, 0.0))  # a squared distance; round-off below zero is clipped


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance of N(mu1, sigma1) and N(mu2, sigma2), from their statistics."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    return _distance(mu1, _psd_sqrt(np.asarray(sigma1, np.float64)), mu2, _psd_sqrt(np.asarray(sigma2, np.float64)))


def covariance_factor(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and a factor R (d x min(n, d)) with R R^T the unbiased covariance (ddof 1, as pytorch-fid).

    Read ``CHUNK`` rows at a time in float64: the mean first, then for more rows than dimensions the R of a QR
    of the centred rows, updated chunk by chunk (R of [R_prev; C_k]), so memory holds d x d plus one chunk
    whatever n is. Any such R gives the same distance: it enters through R^T R and the singular values of
    R1 R2^T, both unchanged by an orthogonal factor on the left."""
    features = np.asarray(features)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need at least 2 feature vectors (N, D), got shape {features.shape}")
    count, dim = features.shape
    chunks = range(0, count, CHUNK)
    mean = sum(features[start : start + CHUNK].sum(axis=0, dtype=np.float64) for start in chunks) / count
    scale = np.sqrt(count - 1)
    if count <= dim:
        return mean, ((features.astype(np.float64) - mean) / scale).T
    factor = np.zeros((0, dim))
    for start in chunks:
        centred = (features[start : start + CHUNK].astype(np.float64) - mean) / scale
        factor = np.linalg.qr(np.concatenate([factor, centred]), mode="r")  # centred^T centred = R^T R, summed over chunks
    return mean, factor.T


def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between the Gaussians fitted to two ``(N, D)`` feature sets."""
    return _distance(*covariance_factor(a), *covariance_factor(b))
