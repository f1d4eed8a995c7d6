"""The memorisation monitor of ``tenshot adapt`` (beyond the papers): over-fitting watched while training, with
no reference set.

At each preview the fixed-noise samples are scored against the shots with the LPIPS-style EL0 distance d of
the metrics (:mod:`tenshot.metrics.diversity`):

- ``monitor/nearest-shot-el0``: the mean over samples of min_i d(sample, shot_i);
- ``monitor/copy-share``: the share of samples nearer to a shot than the shots' own spacing
  s = min_{i != j} d(shot_i, shot_j), the distance of the two closest shots: a sample that near to a shot is
  nearer to it than any other shot is. A model that replicates its shots drives the share towards 1; one that
  draws new images of the domain keeps it low (``bench/results/curves*.md`` measure both, and the reference
  images' own share, on EmojiShift).

With one shot there is no spacing, and only the nearest-shot distance is logged.
"""

from __future__ import annotations

import numpy as np

NEAREST_KEY = "monitor/nearest-shot-el0"
SHARE_KEY = "monitor/copy-share"


class CopyMonitor:
    """Scores uint8 ``(N, H, W, 3)`` images against the shots given at construction (the same format)."""

    share_key = SHARE_KEY  # what --stop-on-copies reads (tenshot.train.loop)

    def __init__(self, shots: np.ndarray, batch_size: int = 64):
        from .diversity import squared_distances
        from .evaluate import EL0Runner

        self.runner = EL0Runner(batch_size=batch_size, progress=False)
        self.shot_vectors = self.runner.vectors(shots)
        between = squared_distances(self.shot_vectors, self.shot_vectors)
        np.fill_diagonal(between, np.inf)
        self.spacing = float(between.min()) if len(shots) > 1 else None

    def nearest(self, images: np.ndarray) -> np.ndarray:
        """Each image's distance to its nearest shot."""
        _, to_shots = self.runner.pooled_and_distances(images, self.shot_vectors, "")
        return to_shots.min(axis=1)

    def __call__(self, images: np.ndarray) -> dict[str, float]:
        nearest = self.nearest(images)
        scores = {NEAREST_KEY: float(nearest.mean())}
        if self.spacing is not None:
            scores[SHARE_KEY] = float(np.mean(nearest < self.spacing))
        return scores
