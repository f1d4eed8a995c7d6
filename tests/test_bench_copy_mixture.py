"""bench/copy_mixture.py: which images a mix keeps and which shots replace them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import copy_mixture  # noqa: E402


def write(folder: Path, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True)
    paths = [folder / name for name in names]
    for path in paths:
        path.write_bytes(path.stem.encode())
    return paths


@pytest.mark.parametrize(("share", "replaced"), [(0.0, 0), (0.6, 3), (0.8, 4), (1.0, 5)])
def test_the_first_share_of_the_samples_becomes_the_shots_cycled(tmp_path, share, replaced):
    samples = write(tmp_path / "samples", [f"s{i}.png" for i in range(5)])
    shots = write(tmp_path / "shots", ["a.png", "b.png"])
    out = tmp_path / "mix"
    assert copy_mixture.mix(samples, shots, share, out) == replaced
    contents = [path.read_bytes().decode() for path in sorted(out.iterdir())]
    expected = [shots[i % 2].stem if i < replaced else samples[i].stem for i in range(5)]
    assert contents == expected


def test_a_second_mix_in_the_same_folder_keeps_nothing_of_the_first(tmp_path):
    samples = write(tmp_path / "samples", [f"s{i}.png" for i in range(4)])
    shots = write(tmp_path / "shots", ["a.png"])
    out = tmp_path / "mix"
    copy_mixture.mix(samples, shots, 1.0, out)
    copy_mixture.mix(samples[:2], shots, 0.0, out)
    assert [path.read_bytes().decode() for path in sorted(out.iterdir())] == ["s0", "s1"]


def test_the_table_names_the_reference_it_was_scored_against():
    results = {"samples": "S", "target": "/data/mine", "n": 4, "date": "2026-12-05", "command": "c",
               "cells": [{"share": 0.5, "replaced": 2, "fid-el0": 1.0, "kid-el0": 0.01, "intra-lpips-el0": 2.0, "near-copy-share": 0.5, "swd": 3.0}]}
    text = copy_mixture.markdown(results)
    assert "`/data/mine/reference`" in text and "| 0.5 | 2 | 1.0 | 0.010 | 2.00 | 0.500 | 3.0 |" in text
    assert "`emoji:openmoji:reference`" in copy_mixture.markdown({**results, "target": "openmoji"})
