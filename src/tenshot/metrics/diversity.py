"""LPIPS-style EL0 distance, intra-cluster diversity (CDC protocol) and memorisation of the shots.

The distance is LPIPS (Zhang et al., CVPR 2018, eq. 1) with unit weights on EfficientNet-Lite0:
d(x, y) = sum_l 1/(H_l W_l) sum_hw |x^_lhw - y^_lhw|^2, x^ the stage-l output unit-normalised over
channels at each position, over the five resolution stages. Scaling each normalised stage by
1/sqrt(H_l W_l) and concatenating the stages turns d into a squared Euclidean distance between
vectors (:func:`lpips_vectors`), so distance matrices are matrix products.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

EPS = 1e-10  # LPIPS's normalize_tensor epsilon


def lpips_vectors(stages: list[torch.Tensor]) -> torch.Tensor:
    """``(N, D)`` vectors whose squared Euclidean distances are the LPIPS-style distances of the images."""
    parts = []
    for stage in stages:
        norm = stage.pow(2).sum(dim=1, keepdim=True).sqrt()
        parts.append((stage / (norm + EPS)).flatten(1) / np.sqrt(stage.shape[2] * stage.shape[3]))
    return torch.cat(parts, dim=1)


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """``|a_i - b_j|^2`` as float64 ``(len(a), len(b))``, accumulated in float64."""
    a64, b64 = a.double(), b.double()
    d = a64.pow(2).sum(1)[:, None] + b64.pow(2).sum(1)[None, :] - 2.0 * a64 @ b64.T
    return d.clamp_min_(0.0).numpy()


def intra_cluster_diversity(
    to_shots: np.ndarray, pairwise: Callable[[np.ndarray], np.ndarray], cap: int = 50, seed: int = 0
) -> tuple[float, int]:
    """Intra-cluster diversity (Ojha et al., CVPR 2021, sec. 5 "intra-cluster pairwise LPIPS").

    ``to_shots[i, s]`` is the distance of sample i to shot s; each sample joins the cluster of its nearest
    shot. Inside each cluster at most ``cap`` members (drawn by ``seed``, clusters in shot order) give the
    mean distance over their unordered pairs, ``pairwise(members)`` returning their distance matrix. A
    cluster with fewer than 2 members counts 0. Returns the mean over shots and the count of such clusters.
    """
    assignment = np.asarray(to_shots).argmin(axis=1)
    rng = np.random.default_rng(seed)
    per_shot, small = [], 0
    for shot in range(to_shots.shape[1]):
        members = np.flatnonzero(assignment == shot)
        if len(members) < 2:
            per_shot.append(0.0)
            small += 1
            continue
        if len(members) > cap:
            members = np.sort(rng.choice(members, cap, replace=False))
        upper = np.triu_indices(len(members), k=1)
        per_shot.append(float(pairwise(members)[upper].mean()))
    return float(np.mean(per_shot)), small


def near_copy_share(sample_nearest: np.ndarray, reference_nearest: np.ndarray, percentile: float = 1.0) -> tuple[float, float]:
    """Share of samples nearer to a shot than ``100 - percentile`` % of the reference images are to theirs.

    The threshold is the ``percentile``-th percentile of the reference images' nearest-shot distances.
    Returns (share, threshold).
    """
    threshold = float(np.percentile(reference_nearest, percentile))
    return float(np.mean(np.asarray(sample_nearest) < threshold)), threshold
