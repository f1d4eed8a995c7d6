"""Frozen networks: weights that never train and a mode that never changes. Their ``train()`` keeps them in eval
mode whatever the trainer asks, so dropout stays off and batch statistics never replace the stored ones."""

from __future__ import annotations

import torch


class AlwaysEval(torch.nn.Module):
    """A module that stays in eval mode: ``train(True)`` is ``train(False)``."""

    def train(self, mode: bool = True):
        return super().train(False)


def keep_in_eval(module: torch.nn.Module, names: tuple[str, ...]) -> None:
    """Put the submodules ``names`` of ``module`` back in eval mode (after ``module.train(mode)`` switched them);
    a name set to None (a submodule not built yet) is skipped."""
    for name in names:
        if getattr(module, name) is not None:
            getattr(module, name).eval()
