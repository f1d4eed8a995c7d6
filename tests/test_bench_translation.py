"""``bench/translation.py``: the paired scores on known cases, the input rule, a cell with the commands faked, and
the table's bookkeeping (markdown, plot, merge)."""

from __future__ import annotations

import importlib.util
import json
import random
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
spec = importlib.util.spec_from_file_location("translation", REPO / "bench" / "translation.py")
translation = importlib.util.module_from_spec(spec)
spec.loader.exec_module(translation)


def smooth_images(count: int, size: int = 32, seed: int = 0, high: int = 200) -> np.ndarray:
    rng = np.random.default_rng(seed)
    low = rng.integers(0, high, (count, 4, 4, 3), dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR)) for image in low])


def test_identical_images_are_at_distance_zero_and_ssim_one():
    images = smooth_images(3)
    scores = translation.network_free_scores(images, images.copy())
    assert scores["pyramid-l1-to-truth"] == 0 and scores["rmse-to-truth"] == 0
    assert scores["ssim-to-truth"] == pytest.approx(1.0, abs=1e-12)


def test_a_brightness_shift_is_seen_by_the_coarsest_level_alone():
    images = smooth_images(2)
    shifted = images + np.uint8(30)
    # a constant passes the pyramid's kernels unchanged: the 32 and 16 px bands are 0, the 8 px residual is 30
    assert translation.pyramid_l1(shifted, images) == pytest.approx([10.0, 10.0], abs=1e-4)
    assert translation.pyramid_l1(shifted[:, :16, :16], images[:, :16, :16]) == pytest.approx([15.0, 15.0], abs=1e-4)  # 16, 8 px
    assert translation.network_free_scores(shifted, images)["rmse-to-truth"] == pytest.approx(30.0)


def grey(values: np.ndarray) -> np.ndarray:
    return np.repeat(values[..., None], 3, axis=-1).astype(np.uint8)  # R = G = B: the grey level is the value


def test_ssim_of_uniform_images_is_the_luminance_term():
    a, b = 100.0, 160.0
    c1 = (0.01 * 255) ** 2
    images = grey(np.stack([np.full((32, 32), a), np.full((32, 32), b)]))
    assert translation.ssim(images[:1], images[1:])[0] == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1))


def test_ssim_of_one_window_is_the_formula_on_gaussian_weighted_moments():
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 256, (11, 11)).astype(float), rng.integers(0, 256, (11, 11)).astype(float)
    offsets = np.arange(-5, 6)
    weights = np.outer(np.exp(-(offsets**2) / 4.5), np.exp(-(offsets**2) / 4.5))
    weights /= weights.sum()
    mx, my = (weights * x).sum(), (weights * y).sum()
    vx, vy, cov = (weights * (x - mx) ** 2).sum(), (weights * (y - my) ** 2).sum(), (weights * (x - mx) * (y - my)).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    expected = (2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    assert translation.ssim(grey(x[None]), grey(y[None]))[0] == pytest.approx(expected, rel=1e-9)


def test_the_inputs_are_a_seeded_draw_of_the_common_names():
    source = [f"{i:04x}.png" for i in range(40)]
    target = [f"{i:04x}.png" for i in range(10, 60)]
    chosen = translation.choose_inputs(source, target, 12)
    common = sorted(set(source) & set(target))
    random.Random(0).shuffle(common)
    assert chosen == sorted(common[:12])
    assert translation.choose_inputs(list(reversed(source)), target, 12) == chosen  # order of the listings does not matter
    assert set(translation.choose_inputs(source, target, 5)) <= set(chosen)  # a smaller N is a subset
    with pytest.raises(SystemExit, match="only 30"):
        translation.choose_inputs(source, target, 31)


def write(folder, names, seed):
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in zip(names, smooth_images(len(names), seed=seed)):
        Image.fromarray(image).save(folder / name)
    return [folder / name for name in names]


def fake_emoji(tmp_path, monkeypatch) -> None:
    """noto renders a..e, openmoji's reference half b..f: the common names are b..e."""
    files = {("noto", "all"): write(tmp_path / "noto", [f"{c}.png" for c in "abcde"], 0),
             ("openmoji", "reference"): write(tmp_path / "openmoji", [f"{c}.png" for c in "bcdef"], 1)}
    monkeypatch.setattr("tenshot.data.emoji.split_files", lambda style, size, split: files[style, split])


def test_the_inputs_are_copied_once(tmp_path, monkeypatch):
    fake_emoji(tmp_path, monkeypatch)
    inputs, truth = translation.prepare_inputs(tmp_path / "work", "openmoji", 3)
    names = translation.choose_inputs(list("abcde"), list("bcdef"), 3)
    assert sorted(path.name for path in inputs.iterdir()) == [f"{name}.png" for name in names]
    assert truth == {f"{name}.png": tmp_path / "openmoji" / f"{name}.png" for name in names}
    monkeypatch.setattr(translation.shutil, "copyfile", lambda *_: pytest.fail("copied again"))
    assert translation.prepare_inputs(tmp_path / "work", "openmoji", 3)[0] == inputs


def test_a_folder_target_pairs_its_reference_half_by_file_name(tmp_path, monkeypatch):
    fake_emoji(tmp_path, monkeypatch)
    target = tmp_path / "my-emoji"
    write(target / "shots", ["a.png"], 2)
    write(target / "reference", ["c.png", "d.png", "e.png", "z.png"], 3)
    inputs, truth = translation.prepare_inputs(tmp_path / "work", str(target), 3)
    assert inputs == tmp_path / "work" / "inputs-my-emoji-3" and sorted(truth) == ["c.png", "d.png", "e.png"]
    assert truth["c.png"] == target / "reference" / "c.png"
    pairs = translation.Pairs(inputs, truth)
    pairs.runner = PixelRunner()
    monkeypatch.setattr(translation.quality, "evaluate", lambda folder, target, out: out.parent.mkdir(parents=True, exist_ok=True) or {"fid-el0": 1.0})
    row = translation.input_cell(tmp_path / "work", str(target), inputs, pairs)
    assert row["command"] == f"evaluate {inputs} --reference {target}/reference --shots {target}/shots"
    assert (tmp_path / "work" / "my-emoji-3" / "input" / "cell.json").is_file()
    parser = translation.argparse.ArgumentParser()
    translation.check_target(parser, str(target))
    with pytest.raises(SystemExit):
        translation.check_target(parser, str(tmp_path / "noto"))  # no shots/ and reference/


class PixelRunner:
    """Stands in for EL0: an image's vector is its pixels."""

    def vectors(self, images: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(images.reshape(len(images), -1) / 255.0)


def test_a_cell_translates_scores_and_is_read_back(tmp_path, monkeypatch):
    fake_emoji(tmp_path, monkeypatch)
    inputs, truth = translation.prepare_inputs(tmp_path / "work", "openmoji", 4)
    pairs = translation.Pairs(inputs, truth)
    pairs.runner = PixelRunner()
    runs = {"phasic": tmp_path / "p", "finetune": tmp_path / "f"}
    for method, run in runs.items():
        run.mkdir()
        (run / "config.yaml").write_text(f"method: {method}\n")
    commands = []

    def fake_run(argv, log):  # "translates" into the truth itself
        commands.append(argv)
        out = translation.Path(argv[argv.index("--out") + 1])
        out.mkdir(parents=True)
        for name, path in truth.items():
            translation.shutil.copyfile(path, out / name)
        return {"seconds": 2.0, "cpu-seconds": 3.0, "peak-gib": 0.1, "threads": 1}

    monkeypatch.setattr(translation.quality, "run", fake_run)

    def fake_evaluate(folder, target, out):  # like quality.evaluate, whose run makes the cell's folder for its log
        out.parent.mkdir(parents=True, exist_ok=True)
        return {"fid-el0": 50.0, "swd": 20.0, "settings": {"network": "x"}}

    monkeypatch.setattr(translation.quality, "evaluate", fake_evaluate)
    cells = {label: translation.translation_cell(tmp_path / "work", "openmoji", label, run, 600, 1, inputs, pairs) for label, run in runs.items()}
    phasic, finetune = commands
    assert phasic[1:] == ["translate", str(runs["phasic"]), "--input", str(inputs), "--start", "600", "--seed", "1", "--out",
                          str(tmp_path / "work" / "openmoji-4" / "phasic" / "start-600" / "seed-1" / "translated")]  # fmt: skip
    assert finetune[finetune.index("--guidance-end") + 1] == "600"  # SDEdit: no structure guidance
    cell = cells["phasic"]
    assert cell["lpips-el0-to-truth"] == 0 and cell["pyramid-l1-to-truth"] == 0 and cell["ssim-to-truth"] == pytest.approx(1.0)
    assert cell["lpips-el0-to-input"] > 0 and cell["translate-cpu-seconds"] == 3.0 and "settings" not in cell
    assert cell["command"].startswith("tenshot translate ")
    again = translation.translation_cell(tmp_path / "work", "openmoji", "phasic", runs["phasic"], 600, 1, inputs, pairs)
    assert again == cell and len(commands) == 2  # read back, not translated again
    assert cell["lpips-el0-margin"] > 0 and set(translation.PAIRED) == set(pairs.scores(inputs))
    stored = tmp_path / "work" / "openmoji-4" / "phasic" / "start-600" / "seed-1" / "cell.json"
    older = {key: value for key, value in cell.items() if key != "lpips-el0-margin"}  # scored before the column existed
    stored.write_text(json.dumps(older))
    rescored = translation.translation_cell(tmp_path / "work", "openmoji", "phasic", runs["phasic"], 600, 1, inputs, pairs)
    assert rescored == cell and json.loads(stored.read_text()) == cell and len(commands) == 2  # scored, not translated
    flagged = translation.translation_cell(tmp_path / "work", "openmoji", "phasic-noise", runs["phasic"], 600, 1, inputs, pairs, ["--encode", "noise"])
    assert commands[-1][-4:-2] == ["--encode", "noise"] and "--encode noise" in flagged["command"] and len(commands) == 3
    row = translation.input_cell(tmp_path / "work", "openmoji", inputs, pairs)
    assert row["lpips-el0-to-input"] == 0 and row["lpips-el0-to-truth"] > 0


def test_a_seed_template_names_one_run_per_seed(tmp_path, capsys):
    tmp_path = tmp_path.resolve()  # parse_runs resolves the folders it returns
    for seed in (0, 2):
        (tmp_path / f"p-seed{seed}").mkdir()
    (tmp_path / "f").mkdir()
    parser = translation.argparse.ArgumentParser()
    runs = translation.parse_runs(parser, [f"phasic={tmp_path}/p-seed{{seed}}", f"finetune={tmp_path}/f"], [0, 2])
    assert runs == {"phasic": {0: tmp_path / "p-seed0", 2: tmp_path / "p-seed2"}, "finetune": {0: tmp_path / "f", 2: tmp_path / "f"}}
    with pytest.raises(SystemExit):
        translation.parse_runs(parser, [f"phasic={tmp_path}/p-seed{{seed}}"], [0, 1])
    assert "p-seed1: no such run folder" in capsys.readouterr().err
    table = results()
    table["cells"][2]["run"] = "/runs/phasic-seed1"
    assert "phasic: `/runs/phasic`, `/runs/phasic-seed1` (phasic); finetune" in translation.markdown(table)


def test_subpopulation_targets_are_refused(capsys):
    parser = translation.argparse.ArgumentParser()
    with pytest.raises(SystemExit):
        translation.check_target(parser, "noto-faces")
    assert "no style to change" in capsys.readouterr().err
    translation.check_target(parser, "emojione")


def results(command: str = "python bench/translation.py --target openmoji") -> dict:
    def cell(label, start, seed, el0, fid):
        return {"target": "openmoji", "label": label, "run": f"/runs/{label}", "method": label if label != "input" else None, "start": start,
                "seed": seed, "lpips-el0-to-truth": el0, "lpips-el0-to-input": 0.0 if label == "input" else 2.0, "pyramid-l1-to-truth": 20.0,
                "ssim-to-truth": 0.4, "rmse-to-truth": 90.0, "fid-el0": fid, "kid-el0": 0.05, "swd": 30.0, "translate-cpu-seconds": 500.0}  # fmt: skip

    cells = [cell("input", 0, None, 4.7, 114.0), cell("phasic", 400, 0, 4.5, 90.0), cell("phasic", 400, 1, 4.6, 94.0),
             cell("phasic", 600, 0, 4.8, 83.0), cell("finetune", 600, 0, 4.7, 92.0)]
    cells[0].pop("translate-cpu-seconds")
    return {"settings": {"targets": ["openmoji"], "n": 500, "date": "2026-12-04", "command": command}, "cells": cells}


def test_the_table_averages_the_seeds_and_the_plot_is_drawn(tmp_path, monkeypatch):
    text = translation.markdown(results())
    assert "| untranslated input | 0 |  | 4.700 |  | 20.00 | 0.400 | 90.0 | 0.000 | 114.0 | 0.050 | 30.0 |  |" in text
    assert "| phasic | 400 | 2 | 4.550 ± 0.071 |" in text and "| 92.0 ± 2.8 |" in text
    assert text.index("| phasic | 600 |") < text.index("| finetune | 600 |")
    assert "phasic: `/runs/phasic` (phasic); finetune: `/runs/finetune` (finetune)" in text
    monkeypatch.setattr(translation, "RESULTS", tmp_path)
    translation.publish(results(), "table")
    with Image.open(tmp_path / "table-openmoji.png") as image:
        assert image.width > 800 and image.height > 500
    assert (tmp_path / "table.md").read_text() == text
    (tmp_path / "table.md").unlink()
    translation.draw(json.loads((tmp_path / "table.json").read_text()), "table")  # what --plot does
    assert (tmp_path / "table.md").read_text() == text


def test_a_publication_keeps_the_earlier_cells_it_does_not_redo(tmp_path, monkeypatch):
    monkeypatch.setattr(translation, "RESULTS", tmp_path)
    translation.publish(results(), "parts")
    later = results("python bench/translation.py --target emojione")
    later["settings"]["targets"] = ["emojione"]
    redone = {**later["cells"][3], "fid-el0": 80.0}  # phasic, start 600, seed 0 again
    later["cells"] = [redone, {**later["cells"][0], "target": "emojione"}]
    translation.publish(later, "parts")
    combined = json.loads((tmp_path / "parts.json").read_text())
    assert len(combined["cells"]) == 6 and [c["fid-el0"] for c in combined["cells"] if c["label"] == "phasic" and c["start"] == 600] == [80.0]
    assert combined["settings"]["targets"] == ["openmoji", "emojione"]
    assert combined["settings"]["command"] == "python bench/translation.py --target openmoji; python bench/translation.py --target emojione"
    assert "### noto → emojione" in (tmp_path / "parts.md").read_text()
    other = results()
    other["settings"]["n"] = 100
    with pytest.raises(SystemExit, match="another --name"):
        translation.publish(other, "parts")


def test_the_margin_is_the_distance_to_the_others_when_each_input_is_its_truth():
    truths = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    # each point's squared distances to the other two: (1, 4), (1, 5), (4, 5) -> means 2.5, 3, 4.5
    assert translation.own_margin(truths, truths) == pytest.approx((2.5 + 3.0 + 4.5) / 3)


def test_an_input_that_forgot_its_pairing_has_no_margin():
    truths = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    centre = truths.mean(0, keepdim=True).expand(3, -1)
    assert translation.own_margin(centre, truths) == pytest.approx(0.0, abs=1e-9)


def test_squared_distance_to_rows_and_to_one_point():
    a = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert translation.mean_squared_distance(a, torch.tensor([[0.0, 0.0], [0.0, 0.0]])) == pytest.approx(12.5)
    assert translation.mean_squared_distance(a, torch.tensor([3.0, 4.0])) == pytest.approx(12.5)
