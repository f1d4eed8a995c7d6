"""``bench/curves.py``'s bookkeeping: the stop the monitor would make, the table of seeds per budget, the plots."""

from __future__ import annotations

import importlib.util
import json
import sys

from PIL import Image

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
spec = importlib.util.spec_from_file_location("curves", REPO / "bench" / "curves.py")
curves = importlib.util.module_from_spec(spec)
spec.loader.exec_module(curves)


def test_the_stop_keeps_the_last_checkpoint_before_the_share_crossed():
    points = [{"step": 150, "monitor/copy-share": 0.0}, {"step": 300, "monitor/copy-share": 0.5}, {"step": 450, "monitor/copy-share": 0.5625}]
    assert curves.stop_step(points, 0.5) == 300
    assert curves.stop_step(points, 0.0) == 150
    assert curves.stop_step(points[:2], 0.5) is None  # never crossed
    assert curves.stop_step([{"step": 150, "monitor/copy-share": 1.0}], 0.5) == 0  # the source model itself


def results() -> dict:
    def cell(method, seed, step, fid):
        return {"target": "openmoji", "method": method, "seed": seed, "step": step, "fid-el0": fid, "kid-el0": 0.05, "intra-lpips-el0": 5.0,
                "near-copy-share": 0.01 * step / 150, "swd": 30.0}

    cells = [cell("finetune", 0, 150, 80.0), cell("finetune", 0, 300, 70.0), cell("finetune", 1, 300, 74.0), cell("domainstudio", 0, 300, 85.0)]
    monitor = [{"target": "openmoji", "method": "finetune", "seed": 0, "step": s, "monitor/copy-share": s / 300} for s in (150, 300)]
    settings = {"targets": ["openmoji"], "n": 1000, "date": "2026-12-03", "command": "python bench/curves.py"}
    return {"settings": settings, "cells": cells, "monitor": monitor, "reference-share": {"openmoji": 0.01}}


def test_the_table_averages_the_seeds_of_each_budget_and_the_plot_is_drawn(tmp_path, monkeypatch):
    text = curves.markdown(results())
    assert "| finetune | 300 | 2 | 72.0 ± 2.8 |" in text
    assert "| finetune | 150 | 1 | 80.0 |" in text and "| domainstudio | 300 | 1 | 85.0 |" in text
    assert "Stop at 0.2: finetune seed 0: step 0" in text and "Stop at 0.5: finetune seed 0: step 150" in text
    monkeypatch.setattr(curves, "RESULTS", tmp_path)
    curves.publish(results(), "curves-test")
    with Image.open(tmp_path / "curves-test-openmoji.png") as image:
        assert image.width > 800 and image.height > 500
    assert (tmp_path / "curves-test.md").read_text() == text


def test_a_publication_keeps_the_earlier_cells_it_does_not_redo(tmp_path, monkeypatch):
    monkeypatch.setattr(curves, "RESULTS", tmp_path)
    curves.publish(results(), "parts")
    later = results()
    later["cells"] = [{**later["cells"][1], "fid-el0": 60.0}]  # finetune seed 0 at 300 again
    later["monitor"] = []
    later["settings"] = {**later["settings"], "command": "python bench/curves.py --sample-budgets 300"}
    curves.publish(later, "parts")
    combined = json.loads((tmp_path / "parts.json").read_text())
    assert sorted((c["method"], c["seed"], c["step"], c["fid-el0"]) for c in combined["cells"]) == [
        ("domainstudio", 0, 300, 85.0), ("finetune", 0, 150, 80.0), ("finetune", 0, 300, 60.0), ("finetune", 1, 300, 74.0)]
    assert len(combined["monitor"]) == 2
    assert combined["settings"]["command"] == "python bench/curves.py; python bench/curves.py --sample-budgets 300"
    merged_part = {**later, "settings": {**later["settings"], "command": "python bench/curves.py; python bench/curves.py --seeds 1"}}
    curves.publish(merged_part, "parts")  # a publication merged from parts lists each command once
    combined = json.loads((tmp_path / "parts.json").read_text())
    assert combined["settings"]["command"].split("; ") == ["python bench/curves.py", "python bench/curves.py --sample-budgets 300", "python bench/curves.py --seeds 1"]
