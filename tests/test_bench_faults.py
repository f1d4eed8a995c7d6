"""``bench/faults.py``'s bookkeeping: where a kill landed, read from the run folder; the bit-for-bit comparison;
the table."""

from __future__ import annotations

import importlib.util
import sys

import torch
from safetensors.torch import save_file

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
spec = importlib.util.spec_from_file_location("faults", REPO / "bench" / "faults.py")
faults = importlib.util.module_from_spec(spec)
spec.loader.exec_module(faults)


def test_where_a_kill_landed_is_read_from_the_folder(tmp_path):
    run = tmp_path / "run"
    assert faults.landed(run) == "before the run started"
    run.mkdir()
    (run / "config.yaml").write_text("{}")
    assert faults.landed(run) == "before the first checkpoint"
    (run / "checkpoints" / ".step-3-abc").mkdir(parents=True)
    assert faults.landed(run) == "during a checkpoint write"
    (run / "checkpoints" / ".step-3-abc").rename(run / "checkpoints" / "step-3")
    assert faults.landed(run) == "between checkpoints"
    (run / ".model-xyz").mkdir()
    assert faults.landed(run) == "during the final export"
    (run / ".model-xyz").rename(run / "model")
    (run / faults.WEIGHTS).parent.mkdir(parents=True)
    (run / faults.WEIGHTS).write_bytes(b"")
    assert faults.landed(run) == "after the export"
    assert faults.staging_left(run) == []


def test_identical_compares_every_tensor_bit_for_bit(tmp_path):
    def write(root, value):
        for file in (faults.WEIGHTS, "checkpoints/step-12/ema.safetensors"):
            (root / file).parent.mkdir(parents=True, exist_ok=True)
            save_file({"w": torch.full((2,), value)}, root / file)

    write(tmp_path / "a", 1.0)
    write(tmp_path / "b", 1.0)
    assert faults.identical(tmp_path / "a", tmp_path / "b")
    save_file({"w": torch.tensor([1.0, 1.0 + 2**-20])}, tmp_path / "b" / "checkpoints/step-12/ema.safetensors")
    assert not faults.identical(tmp_path / "a", tmp_path / "b")


def test_the_table_counts_passes_and_lists_failures():
    ok = {"kill_after_s": 1.0, "landed": "between checkpoints", "resume_status": 0, "resume_error": "", "identical": True, "staging_left": []}
    bad = {**ok, "landed": "during the final export", "identical": False, "resume_status": 1, "resume_error": "Boom"}
    text = faults.markdown({"date": "2026-12-03", "command": "python bench/faults.py", "trials": {"adapt": [ok, ok, bad]}})
    assert "| adapt | 3 | 2 | 3 | between checkpoints 2, during the final export 1 |" in text
    assert "- adapt, killed after 1.0 s (during the final export): status 1 Boom" in text


def test_the_aimed_kills_see_a_staging_folder_of_a_checkpoint_or_of_the_model(tmp_path):
    run = tmp_path / "run"
    assert not faults.staging_appears(run, "checkpoint") and not faults.staging_appears(run, "export")
    (run / "checkpoints" / "step-4").mkdir(parents=True)
    assert not faults.staging_appears(run, "checkpoint")
    (run / "checkpoints" / ".step-8-k2j").mkdir()
    assert faults.staging_appears(run, "checkpoint") and not faults.staging_appears(run, "export")
    (run / ".model-9x").mkdir()
    assert faults.staging_appears(run, "export")
