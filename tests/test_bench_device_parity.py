"""bench/device_parity.py: the rendering hash sees one changed pixel, a report matches itself, and two CPU draws agree."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import device_parity  # noqa: E402


def fake_renderings(folder: Path, changed: bool = False) -> Path:
    folder.mkdir()
    for i, name in enumerate(("a", "b")):
        pixels = np.full((4, 4, 4), 255, np.uint8)
        pixels[0, 0, :3] = 10 * i + (1 if changed and name == "b" else 0)
        Image.fromarray(pixels, "RGBA").save(folder / f"{name}.png")
    return folder


def test_the_hash_sees_one_pixel_and_the_means_are_per_channel(tmp_path, monkeypatch):
    folders = {"same": fake_renderings(tmp_path / "same"), "changed": fake_renderings(tmp_path / "changed", changed=True)}
    monkeypatch.setattr("tenshot.data.emoji.rendered_folder", lambda style, size: folders[style])
    same, changed = device_parity.rendering("same"), device_parity.rendering("changed")
    assert same["files"] == changed["files"] == 2
    assert same["sha256"] != changed["sha256"]
    assert same["channel-means"][3] == 255.0 and same["channel-means"][0] < 255.0


def test_a_report_matches_itself_and_two_cpu_draws_agree(tmp_path, monkeypatch):
    folders = {style: fake_renderings(tmp_path / style) for style in device_parity.STYLES}
    monkeypatch.setattr("tenshot.data.emoji.rendered_folder", lambda style, size: folders[style])
    first = tmp_path / "first.json"
    monkeypatch.setattr(sys, "argv", ["device_parity.py", "--out", str(first)])
    device_parity.main()
    second = tmp_path / "second.json"
    monkeypatch.setattr(sys, "argv", ["device_parity.py", "--device", "cpu", "--n", "1", "--expect", str(first), "--out", str(second)])
    device_parity.main()
    report = json.loads(second.read_text())
    assert report["rendering-matches"] == {style: True for style in device_parity.STYLES}
    assert report["sampling"] == {"device": "cpu", "n": 1, "mean-abs-difference": 0.0, "max-abs-difference": 0, "images-differing-by-over-8": 0}
