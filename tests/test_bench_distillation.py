"""``bench/distillation.py``'s bookkeeping: the table of teacher rows and generator points, merged across parts,
and its plot."""

from __future__ import annotations

import importlib.util
import json
import sys

from PIL import Image

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
spec = importlib.util.spec_from_file_location("distillation", REPO / "bench" / "distillation.py")
distillation = importlib.util.module_from_spec(spec)
spec.loader.exec_module(distillation)


def row(fid: float, **extra) -> dict:
    return {"fid-el0": fid, "kid-el0": 0.05, "swd": 40.0, "recall-el0": 0.2, **extra}


def test_rows_merge_across_parts_and_draw(tmp_path, monkeypatch):
    monkeypatch.setattr(distillation, "RESULTS", tmp_path)
    settings = {"teacher": "runs/t", "target": "openmoji", "n": 1000, "date": "2026-12-03", "command": "python bench/distillation.py"}
    first = {"settings": settings, "teacher": [row(150.0, steps=1), row(75.0, steps=25)], "generator": []}
    distillation.publish(first, "d")
    second = {"settings": {**settings, "command": "python bench/distillation.py --steps 500"}, "teacher": [row(70.0, steps=25)],
              "generator": [row(110.0, label="gdd-i", step=250, seconds=600.0)]}  # fmt: skip
    distillation.publish(second, "d")
    combined = json.loads((tmp_path / "d.json").read_text())
    assert sorted((r["steps"], r["fid-el0"]) for r in combined["teacher"]) == [(1, 150.0), (25, 70.0)]
    assert combined["settings"]["command"] == "python bench/distillation.py; python bench/distillation.py --steps 500"
    text = (tmp_path / "d.md").read_text()
    assert "| teacher, DDIM 1 | | 150.0 | 0.050 | 40.0 | 0.200 |" in text
    assert "| gdd-i, step 250 | 10.0 | 110.0 |" in text
    with Image.open(tmp_path / "d.png") as image:
        assert image.width > 600


def test_a_points_time_is_its_checkpoints_even_between_log_records(tmp_path):
    """The distill run logs every 10 steps; a checkpoint at step 125 has no log record, but its trainer.json has the
    loop's seconds (the benchmark stopped at the first such point before)."""
    run = tmp_path / "run"
    (run / "checkpoints" / "step-125").mkdir(parents=True)
    (run / "log.jsonl").write_text("".join(json.dumps({"step": step, "seconds": step * 4.0}) + "\n" for step in (120, 130)))
    (run / "checkpoints" / "step-125" / "trainer.json").write_text(json.dumps({"seconds": 501.5, "step": 125}))
    assert distillation.loop_seconds_at(run, 125) == 501.5


def test_a_folder_target_keeps_its_cells_in_the_work_folder(tmp_path, monkeypatch):
    """A target given as a folder (``DIR/emojify``) names its cells by the folder's name under WORK, is scored against
    its own reference half, and gets nothing written inside it."""
    target = tmp_path / "targets" / "emojify"
    (target / "reference").mkdir(parents=True)
    commands = []

    def fake_run(argv, log):
        commands.append(argv)
        log.parent.mkdir(parents=True, exist_ok=True)
        return {"seconds": 2.0, "cpu-seconds": 3.0, "peak-gib": 0.1, "threads": 1}

    def fake_evaluate(samples, target, out):
        commands.append(["evaluate", target])
        return row(90.0)

    monkeypatch.setattr(distillation.quality, "run", fake_run)
    monkeypatch.setattr(distillation.quality, "evaluate", fake_evaluate)
    cell = distillation.teacher_cell(tmp_path / "work", "runs/t", str(target), 4, 10)
    assert cell["fid-el0"] == 90.0 and commands[-1] == ["evaluate", str(target)]
    assert commands[0][commands[0].index("--out") + 1] == str(tmp_path / "work" / "distillation" / "emojify" / "teacher-ddim4" / "samples")
    assert sorted(path.name for path in target.iterdir()) == ["reference"]
    settings = {"teacher": "runs/t", "target": str(target), "n": 10, "date": "2026-12-05", "command": "python bench/distillation.py"}
    assert f"`{target / 'reference'}`" in distillation.markdown({"settings": settings, "teacher": [{"steps": 4, **cell}], "generator": []})


def test_a_seed_reaches_distill_and_its_recipe(tmp_path, monkeypatch):
    calls = []

    def fake_train(argv, out, log, recipe):  # like quality.train_resuming, which makes the run's parent folder
        out.parent.mkdir(parents=True, exist_ok=True)
        calls.append((argv, out, recipe))
        return {"loop-seconds": 1.0}

    monkeypatch.setattr(distillation.quality, "train_resuming", fake_train)
    distillation.distilled_run(tmp_path, "runs/t", "emojione", 750, 250, [], "gdd-i-seed-1", seed=1)
    distillation.distilled_run(tmp_path, "runs/t", "emojione", 750, 250, [], "gdd-i")
    (seeded, out, recipe), (plain, _, _) = calls
    assert seeded[seeded.index("--seed") + 1] == "1" and "--seed 1" in recipe and "--seed" not in plain
    assert out == tmp_path / "distillation" / "emojione" / "gdd-i-seed-1"


def test_a_seeded_distillation_is_labelled_by_its_seed(tmp_path, monkeypatch):
    runs, published = [], []
    monkeypatch.setattr(distillation, "distilled_run", lambda *args, **kwargs: runs.append((args, kwargs)) or (tmp_path, {"seconds": 1.0}))
    monkeypatch.setattr(distillation.curves, "budget_cell", lambda run, target, seed, step, n: row(100.0))
    monkeypatch.setattr(distillation, "loop_seconds_at", lambda run, step: 60.0)
    monkeypatch.setattr(distillation, "publish", lambda results, name: published.append(json.loads(json.dumps(results))))
    monkeypatch.setattr(sys, "argv", ["distillation.py", "--teacher", "runs/t", "--teacher-steps", "", "--steps", "250", "--seed", "1", "--label", "gdd-i 750"])
    distillation.main()
    (args, kwargs), = runs
    assert args[-1] == "gdd-i-750-seed-1" and kwargs["seed"] == 1
    assert [point["label"] for point in published[-1]["generator"]] == ["gdd-i 750 seed 1"]
