"""bench/ddc_target.py: its distances and the paired margin on points whose answers are known."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import ddc_target  # noqa: E402
import translation  # noqa: E402


def test_squared_distance_to_rows_and_to_one_point():
    a = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert ddc_target.squared(a, torch.tensor([[0.0, 0.0], [0.0, 0.0]])) == pytest.approx(12.5)
    assert ddc_target.squared(a, torch.tensor([3.0, 4.0])) == pytest.approx(12.5)


def test_the_margin_is_the_distance_to_the_others_when_each_input_is_its_truth():
    truths = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    # each point's squared distances to the other two: (1, 4), (1, 5), (4, 5) -> means 2.5, 3, 4.5
    assert translation.own_margin(truths, truths) == pytest.approx((2.5 + 3.0 + 4.5) / 3)


def test_an_input_that_forgot_its_pairing_has_no_margin():
    truths = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    centre = truths.mean(0, keepdim=True).expand(3, -1)
    assert translation.own_margin(centre, truths) == pytest.approx(0.0, abs=1e-9)
