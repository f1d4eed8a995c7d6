"""bench/samplers.py: the rule that picks the default sampler, merged publications and the plot (synthetic cells)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import samplers  # noqa: E402


def cells(fids: dict[tuple[str, int], list[float]], model: str = "noto-32") -> list[dict]:
    return [{"model": model, "style": "noto", "sampler": sampler, "steps": steps, "seed": seed, "fid-el0": fid, "swd": 40.0, "kid-el0": 0.05}
            for (sampler, steps), values in fids.items() for seed, fid in enumerate(values)]  # fmt: skip


def test_the_cheapest_setting_within_ddim_25s_spread_on_every_model():
    noto = cells({("ddim", 25): [70.0, 72.0], ("ddim", 10): [80.0, 82.0], ("dpm++", 10): [71.0, 72.0], ("dpm++", 15): [70.0, 71.0],
                  ("dpm++", 5): [71.0, 90.0]})
    assert samplers.choose(noto) == ("dpm++", 10)  # dpm++ 5 has the cheapest cost but a mean of 80.5, above 71 + 1.41
    run = cells({("ddim", 25): [60.0, 60.0], ("dpm++", 10): [65.0, 65.0], ("dpm++", 15): [60.0, 60.0]}, model="runs/a")
    assert samplers.choose(noto + run) == ("dpm++", 15)  # every model must agree
    assert samplers.choose(cells({("ddim", 25): [70.0], ("dpm++", 10): [70.6]})) == ("dpm++", 10)  # one seed: within 1%
    assert samplers.choose(cells({("dpm++", 10): [70.0]})) is None


def test_publications_merge_and_draw(tmp_path, monkeypatch):
    monkeypatch.setattr(samplers, "RESULTS", tmp_path)
    settings = {"n": 1000, "date": "2026-12-03", "command": "python bench/samplers.py"}
    samplers.publish({"settings": settings, "cells": cells({("ddim", 25): [70.0], ("dpm++", 10): [75.0]})}, "s")
    later = {"settings": {**settings, "command": "python bench/samplers.py --seeds 1"}, "cells": cells({("dpm++", 10): [70.5]})}
    samplers.publish(later, "s")
    merged = json.loads((tmp_path / "s.json").read_text())
    assert sorted((c["sampler"], c["fid-el0"]) for c in merged["cells"]) == [("ddim", 70.0), ("dpm++", 70.5)]
    assert merged["settings"]["command"] == "python bench/samplers.py; python bench/samplers.py --seeds 1"
    text = (tmp_path / "s.md").read_text()
    assert "| noto-32 | dpm++ | 10 | 1 | 70.5 | 40.0 | 0.050 |" in text and "`--sampler dpm++ --steps 10`" in text
    with Image.open(tmp_path / "s.png") as image:
        assert image.width > 600
