"""bench/ddc_target.py: its distances on points whose answers are known."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import ddc_target  # noqa: E402


def test_squared_distance_to_rows_and_to_one_point():
    a = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert ddc_target.squared(a, torch.tensor([[0.0, 0.0], [0.0, 0.0]])) == pytest.approx(12.5)
    assert ddc_target.squared(a, torch.tensor([3.0, 4.0])) == pytest.approx(12.5)
