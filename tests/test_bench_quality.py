"""``bench/quality.py``'s bookkeeping: a table run in parts combines into one (each cell once, conflicting recipes
refused), its rows average over their runs, and the markdown says how many runs each row has."""

from __future__ import annotations

import importlib.util
import json
import sys
import time

import pytest

from conftest import REPO

spec = importlib.util.spec_from_file_location("quality", REPO / "bench" / "quality.py")
quality = sys.modules["quality"] = importlib.util.module_from_spec(spec)  # its dataclasses look their module up
spec.loader.exec_module(quality)


def cell(method: str, seed: int, fid: float, steps: int = 300) -> dict:
    return {"fid-el0": fid, "swd": 30.0 + seed, "adapt-seconds": 400.0, "adapt-threads": 1, "sample-threads": 1,
            "command": f"adapt --method {method} --seed {seed} --steps {steps}; sample --n 1000 --steps 25 --seed {seed}"}


def part(seeds: list[int], cells: dict, n: int = 1000) -> dict:
    settings = {"source": "noto-32", "n": n, "seeds": seeds, "sample-steps": 25, "date": "2026-12-02", "command": f"python bench/quality.py --seeds {seeds}",
                "jobs": 2, "wall-seconds": 60.0, "cpu-seconds": 120.0, "load-average": 2.0}
    return {"settings": settings, "cells": cells}


@pytest.fixture
def results(tmp_path, monkeypatch):
    """``bench/results`` in a temporary folder; ``write(name, result)`` stores a part there."""
    monkeypatch.setattr(quality, "RESULTS", tmp_path)

    def write(name: str, result: dict) -> None:
        (tmp_path / f"{name}.json").write_text(json.dumps(result))

    return write


def test_parts_combine_into_one_table_with_each_cell_once(results):
    shots = {"fid-el0": 160.0, "command": "shots of emoji:openmoji repeated to 1000"}
    results("seed0", part([0], {"openmoji": {"shots": [shots], "finetune": [cell("finetune", 0, 70.0)]}}))
    results("seed1", part([1], {"openmoji": {"finetune": [cell("finetune", 1, 80.0)]}, "emojione": {"finetune": [cell("finetune", 1, 90.0)]}}))
    results("again", part([0], {"openmoji": {"shots": [shots], "finetune": [cell("finetune", 0, 70.0)]}}))

    raw, parts = quality.combine(["seed0", "seed1", "again"])

    assert [c["fid-el0"] for c in raw["openmoji"]["finetune"]] == [70.0, 80.0]
    assert len(raw["openmoji"]["shots"]) == 1 and len(raw["emojione"]["finetune"]) == 1
    assert len(parts) == 3
    summary = quality.summarise(raw["openmoji"]["finetune"])
    assert summary["runs"] == 2
    assert summary["fid-el0"]["mean"] == pytest.approx(75.0) and summary["fid-el0"]["std"] == pytest.approx(50**0.5)


def test_combine_refuses_two_recipes_for_one_cell_and_other_sample_counts(results):
    results("seed0", part([0], {"openmoji": {"finetune": [cell("finetune", 0, 70.0)]}}))
    results("longer", part([0], {"openmoji": {"finetune": [cell("finetune", 0, 65.0, steps=600)]}}))
    results("n500", part([1], {"openmoji": {"finetune": [cell("finetune", 1, 80.0)]}}, n=500))

    with pytest.raises(SystemExit, match="two recipes"):
        quality.combine(["seed0", "longer"])
    with pytest.raises(SystemExit, match="has n 500"):
        quality.combine(["seed0", "n500"])
    with pytest.raises(SystemExit, match="does not exist"):
        quality.combine(["seed0", "missing"])


def test_markdown_gives_each_row_its_runs_and_spread_and_each_part_its_command():
    table = {"openmoji": {"finetune": quality.summarise([cell("finetune", 0, 70.0), cell("finetune", 1, 80.0) | {"adapt-loop-seconds": 123.0}]),
                          "phasic": quality.summarise([cell("phasic", 0, 90.0)]),
                          "shots": quality.summarise([{"fid-el0": 164.26, "near-copy-share": 1.0, "command": "shots of emoji:openmoji repeated to 1000"}])}}
    settings = part([0, 1], {})["settings"] | {"parts": [part([0], {})["settings"], part([1], {})["settings"]]}

    text = quality.markdown(table, settings)

    headline, every_column = text.split("Every column:")
    assert "| openmoji | finetune | 2 | 75.0 ± 7.1 |" in headline
    assert "| openmoji | the 10 shots, repeated | 1 | 164.3 |  |  | 100.0 |" in headline
    assert "| openmoji | finetune | 2 | 75.00 ± 7.07 |" in every_column
    assert "| openmoji | phasic | 1 | 90.00 |" in every_column
    assert "| 400.00 ± 0.00 | 123.00 (of 1) |" in text  # adapt seconds of both runs, loop seconds of one
    assert text.count("python bench/quality.py --seeds [") == 3  # the combined table's command and its two parts'


def test_a_cells_seed_is_read_from_its_recipe():
    assert quality.cell_seed(cell("gdd", 2, 0.0)["command"]) == 2
    assert quality.cell_seed("shots of emoji:openmoji repeated to 1000") is None


def test_a_target_outside_emojishift_is_a_folder_of_splits_named_by_the_folder(tmp_path):
    folder = str(tmp_path / "my-icons")
    assert quality.target_split(folder, "shots") == f"{folder}/shots" and quality.target_name(folder) == "my-icons"
    assert quality.target_domain(folder) == f"{folder}/shots" and quality.target_domain("openmoji") == "emoji:openmoji"
    assert quality.target_split("openmoji", "reference") == "emoji:openmoji:reference" and quality.target_name("openmoji") == "openmoji"


def load_split_target():
    spec = importlib.util.spec_from_file_location("split_target", REPO / "bench" / "split_target.py")
    split_target = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(split_target)
    return split_target


def test_a_folder_of_images_splits_into_shots_and_disjoint_halves_the_same_way_each_time(tmp_path):
    split_target = load_split_target()
    files = [tmp_path / f"{index:02d}.png" for index in range(25)]
    first, again = split_target.split(files, 0, 10), split_target.split(list(reversed(files)), 0, 10)
    assert first == again  # the input's order does not matter: the files are sorted by name first
    assert [len(first[name]) for name in ("shots", "train", "reference")] == [10, 8, 7]
    assert sorted(sum(first.values(), [])) == files
    assert split_target.split(files, 1, 10)["shots"] != first["shots"]


def test_shortcode_names_become_codepoints_the_first_alias_kept(tmp_path):
    split_target = load_split_target()
    files = [tmp_path / name for name in ("smile.png", "poop.png", "hankey.png", "shipit.png", "uk.PNG", "five.png")]
    named = split_target.by_codepoints(files)
    assert named == {"1f604.png": tmp_path / "smile.png", "1f4a9.png": tmp_path / "hankey.png", "1f1ec-1f1e7.png": tmp_path / "uk.PNG",
                     "35-20e3.png": tmp_path / "five.png"}  # fmt: skip


def test_a_folder_targets_rows_are_named_by_the_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(quality, "method_cell", lambda work, target, method, seed, plan: cell(method, seed, 70.0))
    plan = quality.Plan(n=10, seeds=[0], targets=[str(tmp_path / "my-icons")], methods=["finetune"], anchors=[], quick=False, adapt_flags=[])
    cells = quality.Cells(1)
    with cells.pool:
        table = quality.fill_table(cells, None, plan, lambda _: None)
    assert list(table) == ["my-icons"] and [c["fid-el0"] for c in table["my-icons"]["finetune"]] == [70.0]


def test_each_finished_cell_is_published_before_the_table_ends(monkeypatch):
    def fake_cell(work, target, method, seed, plan):
        if method == "crdi":
            raise SystemExit("crdi failed")
        return cell(method, seed, 70.0 + seed)

    monkeypatch.setattr(quality, "method_cell", fake_cell)
    plan = quality.Plan(n=10, seeds=[0, 1], targets=["openmoji"], methods=["finetune", "domainstudio", "crdi"], anchors=[], quick=False, adapt_flags=[])
    published = []
    cells = quality.Cells(1)
    with cells.pool, pytest.raises(SystemExit, match="crdi failed"):
        quality.fill_table(cells, None, plan, published.append)

    counts = [sum(len(results) for results in snapshot["openmoji"].values()) for snapshot in published]
    assert counts == [1, 2, 2, 3, 4, 4]  # seed 0: finetune, domainstudio, crdi failed; seed 1 the same
    assert sorted(published[-1]["openmoji"]) == ["domainstudio", "finetune"]
    assert [quality.cell_seed(c["command"]) for c in published[-1]["openmoji"]["finetune"]] == [0, 1]


def test_an_interrupted_training_resumes_from_its_checkpoint_and_another_recipe_starts_again(tmp_path):
    trainer = tmp_path / "trainer.py"  # a training command that checkpoints, then dies unless resumed
    trainer.write_text(
        "import json, pathlib, sys\n"
        "out = pathlib.Path(sys.argv[sys.argv.index('--out') + 1])\n"
        "(out / 'checkpoints' / 'step-1').mkdir(parents=True, exist_ok=True)\n"
        "with open(out / 'log.jsonl', 'a') as log:\n"
        "    log.write(json.dumps({'seconds': 5.0 if '--resume' in sys.argv else 2.0}) + '\\n')\n"
        "sys.exit(0 if '--resume' in sys.argv or '--no-fail' in sys.argv else 1)\n")
    argv, out, log = [sys.executable, str(trainer)], tmp_path / "cell" / "run", tmp_path / "cell" / "adapt.log"

    with pytest.raises(SystemExit, match="failed with status 1"):
        quality.train_resuming(argv, out, log, "recipe a")
    resumed = quality.train_resuming(argv, out, log, "recipe a")

    assert resumed["loop-seconds"] == 5.0 and resumed["seconds"] is None and resumed["cpu-seconds"] is None
    assert len((out / "log.jsonl").read_text().splitlines()) == 2

    assert quality.continues("adapt --steps 300 --keep-checkpoints 2 --seed 0", "adapt --steps 600 --keep-checkpoints 4 --seed 0")
    assert not quality.continues("adapt --steps 600 --seed 0", "adapt --steps 300 --seed 0")  # shorter: a new run
    assert not quality.continues("adapt --steps 300 --seed 0", "adapt --steps 300 --seed 1")
    fresh = quality.train_resuming([*argv, "--no-fail"], out, log, "recipe b")

    assert fresh["loop-seconds"] == 2.0 and fresh["seconds"] > 0 and fresh["cpu-seconds"] is not None
    assert len((out / "log.jsonl").read_text().splitlines()) == 1


def test_a_named_teachers_gdd_cells_start_only_once_their_teacher_is_done(monkeypatch):
    done = set()

    def fake_method_cell(work, target, method, seed, plan):
        time.sleep(0.3 if method == "finetune" else 0.05)  # the teacher finishes last
        done.add((method, seed))
        return cell(method, seed, 70.0)

    def fake_distilled_cell(work, target, teacher, seed, plan):
        assert (teacher, seed) in done, "GDD started before the run it distils was finished"
        return cell("gdd", seed, 110.0)

    monkeypatch.setattr(quality, "method_cell", fake_method_cell)
    monkeypatch.setattr(quality, "distilled_cell", fake_distilled_cell)
    plan = quality.Plan(n=10, seeds=[0, 1], targets=["openmoji"], methods=["domainstudio", "finetune", "gdd"], anchors=[], quick=False,
                        adapt_flags=[], teacher="finetune")
    cells = quality.Cells(2)
    with cells.pool:
        table = quality.fill_table(cells, None, plan, lambda finished: None)

    assert [quality.cell_seed(c["command"]) for c in table["openmoji"]["gdd (from finetune)"]] == [0, 1]


@pytest.mark.parametrize(("methods", "anchors", "seeds"), [(["finetune"], ["oracle"], [0, 1, 2]), ([], ["oracle"], [0]), ([], [], [])])
def test_the_seeds_recorded_are_those_a_cell_runs_at(methods, anchors, seeds):
    plan = quality.Plan(n=10, seeds=[0, 1, 2], targets=["openmoji"], methods=methods, anchors=anchors, quick=False, adapt_flags=[])

    assert plan.seeds_run == seeds
