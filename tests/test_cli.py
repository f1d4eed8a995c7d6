"""The ``tenshot`` command line, run as a user runs it: a subprocess, its exit status, stdout and stderr."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import VENV_BIN, cli_env, run_cli, write_images
from tenshot import api
from tenshot.config import AdaptConfig, DistillConfig, PretrainConfig, TrainConfig
from tenshot.errors import TenshotError

SHOTS = Path(__file__).resolve().parents[1] / "src" / "tenshot" / "data" / "shots" / "openmoji.txt"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, image_folder) -> Path:
    """A 16 px `tiny` run trained for 2 steps: a model to sample from and adapt."""
    out = tmp_path_factory.mktemp("cli") / "source"
    train = TrainConfig(steps=2, batch_size=4, mixed_precision="no", preview_count=0, checkpoint_every=2)
    api.pretrain(PretrainConfig(data=str(image_folder), out=str(out), size=16, preset="tiny", train=train))
    return out


def test_help_lists_the_commands():
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    commands = result.stdout.split("Commands:")[1].split()
    for name in ("pretrain", "adapt", "sample", "data"):
        assert name in commands
    status, stdout, _ = invoke(["data", "--help"])
    assert status == 0 and "render" in stdout
    as_module = subprocess.run([sys.executable, "-m", "tenshot", "--help"], capture_output=True, text=True, env=cli_env())
    assert as_module.returncode == 0 and as_module.stdout.split("Commands:")[1].split() == commands


def test_pretrain_help_shows_defaults():
    result = run_cli("pretrain", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # click wraps long lines
    for flag, default in [("--steps", "20000"), ("--batch-size", "32"), ("--lr", "0.001"), ("--seed", "0"),
                          ("--mixed-precision", "auto"), ("--preset", "small"), ("--data", "emoji:noto"),
                          ("--warmup-steps", "200"), ("--ema-beta", "0.999")]:
        assert flag in text
        assert f"[default: {default}]" in text.split(flag, 1)[1].split(" --", 1)[0], flag
    adapt = " ".join(invoke(["adapt", "--help"])[1].split())
    assert "[default: 300]" in adapt.split("--steps", 1)[1].split(" --", 1)[0]


# --- bad input: exit status 2, one line on stderr, no traceback, nothing written -------------------


def bad_inputs(root: Path, image_folder: Path, run: Path) -> dict[str, tuple[list[str], str, Path | None]]:
    """name -> (argv, a piece of the expected message, a path that must not be created)."""
    empty = root / "empty"
    empty.mkdir()
    with_text = write_images(root / "with-text", 2, 16)
    (with_text / "notes.txt").write_text("hello")
    truncated = write_images(root / "truncated", 2, 16)
    noisy = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noisy).save(truncated / "broken.png")
    data = (truncated / "broken.png").read_bytes()
    (truncated / "broken.png").write_bytes(data[: len(data) // 2])
    small = write_images(root / "small", 2, 8)
    not_a_model = write_images(root / "pictures", 2, 16)
    wrong_shape = root / "wrong-shape"
    wrong_shape.mkdir()
    flat = [*(run / "model" / "unet").iterdir(), run / "model" / "scheduler" / "scheduler_config.json"]  # a flat diffusers folder
    for file in flat:
        text = file.read_bytes()
        if file.name == "config.json":
            text = text.replace(b'"layers_per_block": 1', b'"layers_per_block": 2')
        (wrong_shape / file.name).write_bytes(text)
    corrupt = root / "corrupt"
    corrupt.mkdir()
    for file in flat:
        (corrupt / file.name).write_bytes(file.read_bytes()[:200] if file.suffix == ".safetensors" else file.read_bytes())
    taken = write_images(root / "taken", 1, 16)
    a_file = root / "a-file.txt"
    a_file.write_text("in the way")
    pretrain = ["pretrain", "--size", "16", "--preset", "tiny", "--mixed-precision", "no"]
    (root / "bad.json").write_text("{bad")
    (root / "list.json").write_text("[1, 2]")
    (root / "notes.pt").write_text("not a checkpoint")
    baseless = root / "baseless-adapter"
    baseless.mkdir()
    (baseless / "adapter_config.json").write_text("{}")
    adapt = ["adapt", "--source", str(run), "--target", str(image_folder), "--steps", "2", "--mixed-precision", "no"]
    return {
        "missing data": ([*pretrain, "--data", str(root / "nope"), "--out", str(root / "o1")], f"{root / 'nope'}: no such folder", root / "o1"),
        "empty data": ([*pretrain, "--data", str(empty), "--out", str(root / "o2")], f"{empty}: the folder holds no images", root / "o2"),
        "text file": ([*pretrain, "--data", str(with_text), "--out", str(root / "o3")], f"{with_text / 'notes.txt'}: not an image file", root / "o3"),
        "truncated png": ([*pretrain, "--data", str(truncated), "--out", str(root / "o4")], f"{truncated / 'broken.png'}: not a readable image", root / "o4"),
        "image too small": ([*pretrain, "--data", str(small), "--out", str(root / "o5")], "smaller than the model size 16", root / "o5"),
        "steps 0": ([*pretrain, "--data", str(image_folder), "--steps", "0", "--out", str(root / "o6")], "steps must be at least 1, got 0", root / "o6"),
        "negative lr": ([*pretrain, "--data", str(image_folder), "--lr", "-1", "--out", str(root / "o7")], "lr must be positive", root / "o7"),
        "unknown emoji style": ([*pretrain, "--data", "emoji:nope", "--out", str(root / "o8")], "unknown emoji style", root / "o8"),
        "sample not a model": (["sample", str(not_a_model), "--n", "2", "--out", str(root / "s1")], f"{not_a_model}: not a model", root / "s1"),
        "sample no such model": (["sample", str(root / "nothing-here"), "--n", "2", "--out", str(root / "s2")], "no such model", root / "s2"),
        "sample wrong shape": (["sample", str(wrong_shape), "--n", "2", "--out", str(root / "s3")], f"{wrong_shape}: not a loadable UNet2DModel", root / "s3"),
        "sample corrupt weights": (["sample", str(corrupt), "--n", "2", "--out", str(root / "s4")], f"{corrupt}", root / "s4"),
        "sample steps 0": (["sample", str(run), "--n", "2", "--steps", "0", "--out", str(root / "s5")], "at least 1", root / "s5"),
        "adapt out not empty": (["adapt", "--source", str(run), "--target", str(image_folder), "--steps", "2", "--mixed-precision", "no", "--out", str(taken)],
                                f"{taken}: folder exists and is not empty", None),
        "adapt unknown option": (["adapt", "--source", str(run), "--target", str(image_folder), "--option", "no_such=1", "--out", str(root / "a2")],
                                 "has no option 'no_such'", root / "a2"),
        "sample out is a file": (["sample", str(run), "--n", "2", "--out", str(a_file)], f"{a_file}: exists and is not a folder", None),
        "pretrain out is a file": ([*pretrain, "--data", str(image_folder), "--out", str(a_file)], f"{a_file}: exists and is not a folder", None),
        "render bad split": (["data", "render", "emoji:openmoji:shots", "--out", str(root / "r1")], "give the split with --split", root / "r1"),
        "sample absent cuda": (["sample", str(run), "--n", "2", "--device", "cuda:3", "--out", str(root / "d1")], "--device cuda:3: torch sees", root / "d1"),
        "sample unknown device": (["sample", str(run), "--n", "2", "--device", "gpu", "--out", str(root / "d2")], "device must be auto, cpu, cuda or cuda:N", root / "d2"),
        "evaluate absent cuda": (["evaluate", str(run), "--reference", str(image_folder), "--n", "4", "--device", "cuda", "--out", str(root / "d3.json")],
                                 "--device cuda: torch sees", root / "d3.json"),
        "unknown command": (["nope"], "No such command 'nope'", None),
        "adapt unknown method": ([*adapt, "--method", "nope", "--out", str(root / "a3")], "Invalid value for '--method'", root / "a3"),
        "sample unknown sampler": (["sample", str(run), "--sampler", "euler", "--out", str(root / "s6")], "sample --help)", root / "s6"),
        "adapt lora rank 0": ([*adapt, "--method", "lora", "--option", "rank=0", "--out", str(root / "a4")], "lora rank must be an integer >= 1", root / "a4"),
        "adapt stop-on-copies 1.5": ([*adapt, "--stop-on-copies", "1.5", "--out", str(root / "a5")], "stop-on-copies is a share", root / "a5"),
        "adapt resume nothing": ([*adapt, "--resume", "--out", str(root / "a6")], "nothing to resume", root / "a6"),
        "adapt from an adapter without base": (["adapt", "--source", str(baseless), "--target", str(image_folder), "--out", str(root / "a7")],
                                               "names no base model", root / "a7"),
        "export missing step": (["export", str(run), "--step", "999", "--out", str(root / "e1")], "no checkpoint of step 999", root / "e1"),
        "translate missing input": (["translate", str(run), "--input", str(root / "nowhere"), "--out", str(root / "t1")], "no such folder", root / "t1"),
        "translate start 5000": (["translate", str(run), "--input", str(image_folder), "--start", "5000", "--out", str(root / "t2")],
                                 "start must be between 1 and 999", root / "t2"),
        "report bad metrics json": (["report", str(run), "--metrics", str(root / "bad.json")], "not a metrics.json", None),
        "report metrics not an object": (["report", str(run), "--metrics", str(root / "list.json")], "expected a JSON object", None),
        "report not a run": (["report", str(root / "pictures")], "not a run folder", None),
        "distill shots of a pretrain run": (["distill", str(run), "--data", "shots", "--out", str(root / "g1")], "is not an adapt run", root / "g1"),
        "evaluate n 2": (["evaluate", str(run), "--reference", str(image_folder), "--n", "2", "--out", str(root / "v1.json")], "n must be at least 4", root / "v1.json"),
        "evaluate no such model": (["evaluate", str(root / "nowhere"), "--reference", str(image_folder), "--out", str(root / "v2.json")], "no such model", root / "v2.json"),
        "convert not a checkpoint": (["convert", str(root / "notes.pt"), "--out", str(root / "c1")], "not a readable torch checkpoint", root / "c1"),
        "sample a torch checkpoint": (["sample", str(root / "notes.pt"), "--n", "2", "--out", str(root / "s7")], "not a readable torch checkpoint", root / "s7"),
    }


# A few run as real processes (interpreter start-up, logging set up by the libraries, the real exit
# status); all of them run in-process through click's test runner, which is much cheaper.
SUBPROCESS_CASES = ["missing data", "truncated png", "sample not a model", "steps 0", "adapt unknown method", "unknown command"]
BAD_CASES = [
    "missing data", "empty data", "text file", "truncated png", "image too small", "steps 0", "negative lr",
    "unknown emoji style", "sample not a model", "sample no such model", "sample wrong shape", "sample corrupt weights",
    "sample steps 0", "adapt out not empty", "adapt unknown option", "render bad split", "sample out is a file",
    "pretrain out is a file", "sample absent cuda", "sample unknown device", "evaluate absent cuda", "unknown command",
    "adapt unknown method", "sample unknown sampler", "adapt lora rank 0", "adapt stop-on-copies 1.5", "adapt resume nothing",
    "adapt from an adapter without base", "export missing step", "translate missing input", "translate start 5000",
    "report bad metrics json", "report metrics not an object", "report not a run", "distill shots of a pretrain run",
    "evaluate n 2", "evaluate no such model", "convert not a checkpoint", "sample a torch checkpoint",
]


@pytest.fixture(scope="module")
def bad_cases(tmp_path_factory, image_folder, tiny_run):
    return bad_inputs(tmp_path_factory.mktemp("bad"), image_folder, tiny_run)


@pytest.fixture(scope="module")
def subprocess_results(bad_cases):
    """The subprocess cases, started at once (each is mostly interpreter start-up)."""
    processes = {
        name: subprocess.Popen([str(VENV_BIN / "tenshot"), *bad_cases[name][0]], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
        for name in SUBPROCESS_CASES
    }
    results = {}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=300)
        results[name] = (process.returncode, stdout, stderr)
    return results


def invoke(argv: list[str]) -> tuple[int, str, str]:
    """``tenshot ARGV`` in this process: (exit status, stdout, stderr)."""
    from click.testing import CliRunner

    from tenshot.cli import main

    result = CliRunner().invoke(main, [str(a) for a in argv], catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def check_bad_result(expected: str, not_created: Path | None, status: int, stdout: str, stderr: str) -> None:
    assert status == 2, (stdout, stderr)
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in stderr + stdout
    if not_created is not None:
        assert not not_created.exists(), f"{not_created} was written"


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_one_line_and_status_2(bad_cases, case):
    argv, expected, not_created = bad_cases[case]
    check_bad_result(expected, not_created, *invoke(argv))


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_bad_input_in_a_real_process(bad_cases, subprocess_results, case):
    _, expected, not_created = bad_cases[case]
    check_bad_result(expected, not_created, *subprocess_results[case])


def test_bad_input_cases_are_all_checked(bad_cases):
    assert set(bad_cases) == set(BAD_CASES)


# --- what the commands write -----------------------------------------------------------------------


def test_sample_writes_numbered_pngs_and_a_grid(tiny_run, tmp_path):
    out = tmp_path / "samples" / "s"
    result = run_cli("sample", tiny_run, "--n", "5", "--steps", "2", "--batch-size", "2", "--seed", "3", "--out", out)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [f"{k:06d}.png" for k in range(5)]
    assert sorted(p.name for p in out.parent.iterdir()) == ["s", "s.png"]  # nothing else beside it either
    assert out.stat().st_mode & 0o777 == out.parent.stat().st_mode & 0o777  # as mkdir makes it, not private
    with Image.open(out / "000000.png") as image:
        assert image.size == (16, 16) and image.mode == "RGB"
    assert Image.open(out.parent / "s.png").size[0] > 16 * 2
    assert str(out) in result.stdout
    # the same seed gives the same images, whatever the batch size
    again = tmp_path / "again"
    status, stdout, stderr = invoke(["sample", tiny_run, "--n", "5", "--steps", "2", "--batch-size", "5", "--seed", "3", "--out", again])
    assert status == 0, stderr
    for k in range(5):
        assert np.array_equal(np.asarray(Image.open(out / f"{k:06d}.png")), np.asarray(Image.open(again / f"{k:06d}.png")))
    # an existing non-empty --out is refused, and left as it was
    status, _, stderr = invoke(["sample", tiny_run, "--n", "2", "--steps", "2", "--out", out])
    assert status == 2 and len(stderr.splitlines()) == 1 and "not empty" in stderr
    assert len(list(out.iterdir())) == 5


def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(tiny_run, tmp_path, monkeypatch):
    """The disk fills while the samples are written: one line, status 2, no output folder and no staging folder
    (a checkpoint write that fails keeps the previous checkpoints: test_train)."""
    import errno

    import tenshot.data.images as images

    real_save = images.save_png
    saved = []

    def save_until_full(image, path):
        if len(saved) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        saved.append(path)
        real_save(image, path)

    monkeypatch.setattr(images, "save_png", save_until_full)
    out = tmp_path / "samples"
    status, _, stderr = invoke(["sample", tiny_run, "--n", "4", "--steps", "2", "--out", out])
    assert status == 2 and stderr.count("error:") == 1 and "Traceback" not in stderr  # beside the progress bar
    assert stderr.strip().split("\n")[-1].startswith(f"error: {out}: could not write (No space left on device)")
    assert list(tmp_path.iterdir()) == []


def test_out_of_memory_is_one_line_suggesting_a_smaller_batch(tiny_run, tmp_path, monkeypatch):
    import tenshot.methods.base as base

    def exhausted(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(base.Method, "sample", exhausted)
    status, _, stderr = invoke(["sample", tiny_run, "--n", "4", "--steps", "2", "--out", tmp_path / "samples"])
    assert status == 2 and stderr.count("error:") == 1 and "smaller --batch-size" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "samples").exists()


def test_sample_with_dpm_solver(tiny_run, tmp_path):
    """--sampler dpm++ draws with DPM-Solver++(2M): other images than DDIM's from the same noise, and deterministic."""
    folders = {}
    for name, flags in (("dpm", ["--steps", "3", "--sampler", "dpm++"]), ("dpm-again", ["--steps", "3", "--sampler", "dpm++"]),
                        ("ddim", ["--steps", "3", "--sampler", "ddim"]), ("default", []), ("dpm-10", ["--steps", "10", "--sampler", "dpm++"])):
        folders[name] = tmp_path / name
        status, _, stderr = invoke(["sample", tiny_run, "--n", "3", *flags, "--out", folders[name]])
        assert status == 0, stderr
    images = {name: np.stack([np.asarray(Image.open(folder / f"{k:06d}.png")) for k in range(3)]) for name, folder in folders.items()}
    assert np.array_equal(images["dpm"], images["dpm-again"]) and not np.array_equal(images["dpm"], images["ddim"])
    assert np.array_equal(images["default"], images["dpm-10"])  # the default: DPM-Solver++(2M) at 10 steps


def test_sampler_choice_takes_what_is_given_else_the_methods_default():
    from tenshot.methods.crdi import CRDI
    from tenshot.methods.finetune import FineTune
    from tenshot.sampling import sampler_choice

    assert sampler_choice(FineTune, None, None) == ("dpm++", 10)
    assert sampler_choice(CRDI, None, None) == ("ddim", 25)  # its guidance is defined on DDIM steps
    assert sampler_choice(FineTune, "ddim", None) == ("ddim", 25)
    assert sampler_choice(FineTune, "ddpm", 7) == ("ddpm", 7)
    assert sampler_choice(FineTune, None, None, eta=1.0) == ("ddim", 25)  # eta is DDIM's: it asks for DDIM


def test_adapt_writes_a_run(tiny_run, image_folder, tmp_path):
    out = tmp_path / "adapted"
    flags = ["adapt", "--source", tiny_run, "--target", image_folder, "--steps", "2", "--batch-size", "4",
             "--mixed-precision", "no", "--checkpoint-every", "1", "--preview-every", "2", "--out", out]
    status, stdout, stderr = invoke(flags)
    assert status == 0, stderr
    assert str(out / "model") in stdout
    assert {p.name for p in out.iterdir()} >= {"config.yaml", "model", "checkpoints", "samples", "log.jsonl"}
    assert (out / "model" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    # model/ is a diffusers pipeline folder with a model card
    from diffusers import DDPMPipeline

    images = DDPMPipeline.from_pretrained(out / "model")(batch_size=2, num_inference_steps=2, output_type="np").images
    assert images.shape == (2, 16, 16, 3) and np.isfinite(images).all()
    card = (out / "model" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: diffusers\n") and "tags: [tenshot, few-shot, finetune]" in card and str(image_folder) in card
    assert (out / "samples" / "step-2.png").is_file()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-1", "step-2"]
    status, stdout, stderr = invoke([*flags[:5], "--steps", "3", *flags[7:], "--resume"])
    assert status == 0, stderr
    assert "(3 steps" in stdout
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2", "step-3"]


def test_a_bad_method_fails_before_any_work(tmp_path):
    """The method and its options are checked before the model is loaded (there is none here) or the run made."""
    missing, out = str(tmp_path / "no-model"), tmp_path / "run"
    with pytest.raises(TenshotError, match="unknown method 'nope'"):
        api.adapt(AdaptConfig(source=missing, method="nope", out=str(out)))
    with pytest.raises(TenshotError, match="has no option 'no_such'"):
        api.distill(DistillConfig(model=missing, options={"no_such": 1}, out=str(out)))
    assert not out.exists()


def test_data_render_writes_the_shots(tmp_path):
    out = tmp_path / "shots"
    result = run_cli("data", "render", "emoji:openmoji", "--split", "shots", "--out", out)
    assert result.returncode == 0, result.stderr
    committed = [line.strip() for line in SHOTS.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{name}.png" for name in committed)
    assert len(committed) == 10
    for path in out.iterdir():
        with Image.open(path) as image:
            assert image.size == (32, 32) and image.mode == "RGB"
