"""The training loop: exact resume (API and SIGTERM), EMA warm-up, atomic checkpoints, DDP on CPU, learning."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from conftest import REPO, VENV_BIN, cli_env, interrupt_when
from tenshot import api
from tenshot.config import PretrainConfig, TrainConfig, load_yaml
from tenshot.errors import TenshotError
from tenshot.train.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint

WEIGHTS = "model/unet/diffusion_pytorch_model.safetensors"
CHECKPOINT_FILES = ("trainable.safetensors", "ema.safetensors", "optimizer.safetensors")


def pretrain_config(data: Path, out: Path, steps: int, **train) -> PretrainConfig:
    values = dict(
        steps=steps, batch_size=4, lr=1e-3, warmup_steps=3, checkpoint_every=4, keep_checkpoints=2,
        preview_every=5, preview_count=4, preview_steps=2, mixed_precision="no", log_every=1,
    )
    values.update(train)
    return PretrainConfig(data=str(data), out=str(out), size=16, preset="tiny", train=TrainConfig(**values))


def assert_same_tensors(a: Path, b: Path) -> int:
    first, second = load_file(str(a)), load_file(str(b))
    assert first.keys() == second.keys(), a.name
    for name in first:
        assert torch.equal(first[name], second[name]), f"{a.name}: {name} differs"
    return len(first)


def assert_same_run(a: Path, b: Path, step: int) -> None:
    """Exported weights and every tensor of the checkpoint at ``step`` are identical."""
    assert assert_same_tensors(a / WEIGHTS, b / WEIGHTS) > 10
    for name in CHECKPOINT_FILES:
        assert_same_tensors(a / "checkpoints" / f"step-{step}" / name, b / "checkpoints" / f"step-{step}" / name)


def test_resume_drops_log_lines_written_after_the_checkpoint(image_folder, tmp_path):
    """A hard kill after step 6's checkpoint but past it in the log must not leave duplicate steps; the resumed
    part's clock goes on from the checkpoint's training seconds, not from 0."""
    run = tmp_path / "run"
    api.pretrain(pretrain_config(image_folder, run, 6, checkpoint_every=3, keep_checkpoints=3))
    for step in (4, 5, 6):
        checkpoint = run / "checkpoints" / f"step-{step}"
        if checkpoint.exists():
            shutil.rmtree(checkpoint)
    api.pretrain(pretrain_config(image_folder, run, 8, checkpoint_every=3, keep_checkpoints=3), resume=True)
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records] == list(range(1, 9))
    resumed_from = load_checkpoint(run / "checkpoints" / "step-3")["trainer"]["seconds"]
    assert 0 < records[2]["seconds"] <= resumed_from <= records[3]["seconds"]
    assert [record["seconds"] for record in records] == sorted(record["seconds"] for record in records)


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_resume_through_the_api_matches_an_uninterrupted_run(image_folder, tmp_path, grad_accum):
    straight = tmp_path / "straight"
    api.pretrain(pretrain_config(image_folder, straight, 12, grad_accum=grad_accum))
    resumed = tmp_path / "resumed"
    first = api.pretrain(pretrain_config(image_folder, resumed, 6, grad_accum=grad_accum))
    assert first.steps == 6 and (resumed / WEIGHTS).is_file()
    assert [step for step, _ in list_checkpoints(resumed / "checkpoints")] == [4, 6]
    second = api.pretrain(pretrain_config(image_folder, resumed, 12, grad_accum=grad_accum, keep_checkpoints=3), resume=True)
    assert second.steps == 12
    assert [step for step, _ in list_checkpoints(straight / "checkpoints")] == [8, 12]
    assert [step for step, _ in list_checkpoints(resumed / "checkpoints")] == [6, 8, 12]  # a longer run may keep more
    assert_same_run(straight, resumed, 12)
    assert load_yaml(PretrainConfig, resumed / "config.yaml").train.steps == 12
    assert sorted(p.name for p in (resumed / "samples").iterdir()) == ["step-10.png", "step-12.png", "step-5.png", "step-6.png"]
    logged = [line for line in (resumed / "log.jsonl").read_text().splitlines() if line]
    assert len(logged) == 12


def test_resume_refuses_what_it_cannot_continue(image_folder, tmp_path):
    with pytest.raises(TenshotError, match="nothing to resume"):
        api.pretrain(pretrain_config(image_folder, tmp_path / "never", 2), resume=True)
    run = tmp_path / "run"
    api.pretrain(pretrain_config(image_folder, run, 2))
    with pytest.raises(TenshotError, match="not empty"):
        api.pretrain(pretrain_config(image_folder, run, 4))
    with pytest.raises(TenshotError, match=r"changed: train"):
        api.pretrain(pretrain_config(image_folder, run, 4, lr=5e-4), resume=True)
    # checkpoints of the wrong shape or format: one clear error naming the checkpoint, no traceback
    step, path = list_checkpoints(run / "checkpoints")[-1]
    state = load_checkpoint(path)
    first = next(iter(state["trainable"]))
    wrong_name = {"other.weight": torch.zeros(1)}
    wrong_shape = {**state["trainable"], first: torch.zeros(3)}
    wrong_ema = {**state["ema"], f"shadow.{first[len('unet.'):]}": torch.zeros(1)}
    for index, (trainable, ema) in enumerate([(wrong_name, state["ema"]), (wrong_shape, state["ema"]), (state["trainable"], wrong_ema)]):
        bad = save_checkpoint(run / "checkpoints", step + 1 + index, trainable, ema, state["optimizer"], {}, keep=5)
        with pytest.raises(TenshotError, match=re.escape(str(bad)) + ": checkpoint does not match"):
            api.pretrain(pretrain_config(image_folder, run, 10), resume=True)
    truncated = save_checkpoint(run / "checkpoints", step + 5, state["trainable"], state["ema"], state["optimizer"], {}, keep=5)
    data = (truncated / "trainable.safetensors").read_bytes()
    (truncated / "trainable.safetensors").write_bytes(data[:50])
    for _, other in list_checkpoints(run / "checkpoints")[:-1]:
        shutil.rmtree(other)
    with pytest.raises(TenshotError, match=re.escape(str(truncated)) + ": unreadable checkpoint"):  # none readable
        api.pretrain(pretrain_config(image_folder, run, 10), resume=True)


def test_resume_passes_over_a_damaged_newest_checkpoint_in_a_moved_folder(image_folder, tmp_path, capfd):
    """A truncated newest checkpoint: resume continues from the one before, with one warning line, and reaches
    the uninterrupted run's weights; the run folder was moved meanwhile, which is not a changed setting."""
    straight = tmp_path / "straight"
    api.pretrain(pretrain_config(image_folder, straight, 8, checkpoint_every=2, keep_checkpoints=3))
    first = tmp_path / "first"
    api.pretrain(pretrain_config(image_folder, first, 6, checkpoint_every=2, keep_checkpoints=3))
    damaged = first / "checkpoints" / "step-6" / "ema.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:100])
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    first.rename(moved)
    capfd.readouterr()
    api.pretrain(pretrain_config(image_folder, moved, 8, checkpoint_every=2, keep_checkpoints=3), resume=True)
    warnings = [line for line in capfd.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "step-6: unreadable checkpoint" in warnings[0]
    assert_same_run(straight, moved, 8)
    assert load_yaml(PretrainConfig, moved / "config.yaml").out == str(moved)


def test_sigterm_leaves_a_checkpoint_and_resume_reaches_the_same_weights(image_folder, tmp_path):
    out = tmp_path / "interrupted"
    flags = ["--data", image_folder, "--size", "16", "--preset", "tiny", "--batch-size", "4", "--lr", "1e-3",
             "--warmup-steps", "3", "--mixed-precision", "no", "--checkpoint-every", "2", "--preview-every", "1000"]
    process = subprocess.Popen(
        [str(VENV_BIN / "tenshot"), "pretrain", *map(str, flags), "--steps", "100000", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
    )
    # a checkpoint exists: the loop (and its signal handler) is running
    stderr = interrupt_when(process, lambda: bool(list_checkpoints(out / "checkpoints")), signal.SIGTERM)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted: checkpoint of step" in stderr and "--resume" in stderr
    checkpoints = list_checkpoints(out / "checkpoints")
    stopped = checkpoints[-1][0]
    assert 2 <= stopped < 100000
    assert load_checkpoint(checkpoints[-1][1])["trainer"]["step"] == stopped
    assert [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".")] == []
    assert not (out / "model").exists()  # nothing exported from an interrupted run

    target = stopped + 3
    finish = subprocess.run(
        [str(VENV_BIN / "tenshot"), "pretrain", *map(str, flags), "--steps", str(target), "--out", str(out), "--resume"],
        capture_output=True, text=True, env=cli_env(), timeout=300,
    )
    assert finish.returncode == 0, finish.stderr
    # the same settings from the start, uninterrupted, in this process
    config = load_yaml(PretrainConfig, out / "config.yaml")
    config.out, config.train.steps = str(tmp_path / "straight"), target
    api.pretrain(config)
    assert_same_run(out, tmp_path / "straight", target)


def test_ema_warm_up():
    from tenshot.models.ema import EMA, ema_decay

    assert [ema_decay(i, 0.999) for i in range(4)] == [0.1, 2 / 11, 3 / 12, 4 / 13]
    assert ema_decay(10000, 0.999) == 0.999 and ema_decay(1000, 0.9) == 0.9
    assert ema_decay(79, 0.9) == 80 / 89 and ema_decay(80, 0.9) == pytest.approx(0.9)  # the cap takes over at i = 80
    assert all(ema_decay(i, 0.999) == min(0.999, (1 + i) / (10 + i)) for i in range(20000))

    module = torch.nn.Linear(3, 2)
    ema = EMA(module, beta=0.9)
    expected = {k: v.detach().clone().double() for k, v in module.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    for i in range(100):
        with torch.no_grad():
            for p in module.parameters():
                p.copy_(torch.randn(p.shape, generator=generator))
        decay = min(0.9, (1 + i) / (10 + i))
        expected = {k: decay * expected[k] + (1 - decay) * v.double() for k, v in module.state_dict().items()}
        ema.update(module)
        assert ema.updates == i + 1
    for name, value in expected.items():
        torch.testing.assert_close(ema.shadow[name].double(), value, rtol=1e-5, atol=1e-6)
    target = torch.nn.Linear(3, 2)
    ema.copy_to(target)
    assert torch.equal(target.weight, ema.shadow["weight"])
    restored = EMA(torch.nn.Linear(3, 2), beta=0.9)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 100 and torch.equal(restored.shadow["bias"], ema.shadow["bias"])


def checkpoint_state(value: float):
    parameter = torch.nn.Parameter(torch.full((2, 2), float(value)))
    optimizer = torch.optim.AdamW([parameter], lr=1e-3)
    parameter.grad = torch.ones_like(parameter)
    optimizer.step()
    return {"w": parameter.detach()}, {"shadow.w": parameter.detach() * 2, "updates": torch.tensor(1)}, optimizer.state_dict()


def test_checkpoints_are_atomic_and_pruned(tmp_path, monkeypatch):
    folder = tmp_path / "checkpoints"
    for step in (1, 2, 3):
        trainable, ema, optimizer = checkpoint_state(step)
        save_checkpoint(folder, step, trainable, ema, optimizer, {"seed": 0}, keep=2)
    assert [s for s, _ in list_checkpoints(folder)] == [2, 3]
    state = load_checkpoint(folder / "step-3")
    assert torch.equal(state["trainable"]["w"], checkpoint_state(3)[0]["w"])
    assert state["trainer"] == {"seed": 0, "step": 3}
    reference = checkpoint_state(3)[2]
    assert state["optimizer"]["param_groups"][0]["lr"] == reference["param_groups"][0]["lr"]
    assert torch.equal(state["optimizer"]["state"][0]["exp_avg"], reference["state"][0]["exp_avg"])
    assert torch.equal(state["optimizer"]["state"][0]["step"], reference["state"][0]["step"])

    # a staging folder left by a killed writer, and a step folder without its trainer.json, are not checkpoints
    leftover = folder / ".step-9-abc123"
    leftover.mkdir()
    (leftover / "trainer.json").write_text('{"step": 9}')
    (folder / "step-8").mkdir()
    assert [s for s, _ in list_checkpoints(folder)] == [2, 3]

    # a write that fails half-way leaves the last good checkpoint and no staging folder behind
    import tenshot.train.checkpoint as checkpoint_module

    real_save = checkpoint_module.save_file
    written = []

    def failing_save(tensors, path, metadata=None):
        written.append(Path(path).name)
        if len(written) == 2:
            raise OSError("disk full")
        real_save(tensors, path, metadata=metadata)

    monkeypatch.setattr(checkpoint_module, "save_file", failing_save)
    trainable, ema, optimizer = checkpoint_state(4)
    with pytest.raises(TenshotError, match=r"step-4: could not write \(disk full\); nothing half-written"):
        save_checkpoint(folder, 4, trainable, ema, optimizer, {}, keep=2)
    assert [s for s, _ in list_checkpoints(folder)] == [2, 3]
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == [".step-9-abc123"]
    # and a failed rewrite of an existing step does not destroy it
    written.clear()
    with pytest.raises(TenshotError, match="could not write"):
        save_checkpoint(folder, 3, trainable, ema, optimizer, {}, keep=2)
    assert torch.equal(load_checkpoint(folder / "step-3")["trainable"]["w"], checkpoint_state(3)[0]["w"])


def test_a_replaced_folder_stays_until_its_replacement_is_in(tmp_path, monkeypatch):
    """The old folder is renamed aside, not deleted, before the new one moves in: if that move fails, the old one
    is back under its name and nothing else is left."""
    import os

    from tenshot import cache

    target = tmp_path / "model"
    target.mkdir()
    (target / "weights").write_text("old")
    real_replace = os.replace

    def failing_replace(source, destination):
        if Path(destination) == target and not Path(source).name.endswith(".old"):
            raise OSError(5, "Input/output error")
        real_replace(source, destination)

    monkeypatch.setattr(cache.os, "replace", failing_replace)
    with pytest.raises(TenshotError, match=r"model: could not write \(Input/output error\)"):
        cache.replace_folder(target, lambda staging: (staging / "weights").write_text("new"))
    assert (target / "weights").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["model"]
    monkeypatch.undo()
    cache.replace_folder(target, lambda staging: (staging / "weights").write_text("new"))
    assert (target / "weights").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["model"]


def test_two_process_cpu_run_ends_with_identical_weights(image_folder, tmp_path):
    """``torchrun --nproc_per_node 2`` the real CLI (gloo on CPU); each rank dumps what it trained."""
    dump = tmp_path / "ranks"
    out = tmp_path / "run"
    command = [
        str(VENV_BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", str(REPO / "tests" / "rank_weights.py"),
        "pretrain", "--data", str(image_folder), "--size", "16", "--preset", "tiny", "--steps", "4", "--batch-size", "4",
        "--lr", "1e-3", "--mixed-precision", "no", "--checkpoint-every", "2", "--preview-every", "1000", "--out", str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=cli_env(TENSHOT_TEST_DUMP_RANK_WEIGHTS=str(dump)))
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [dump / "rank-0.safetensors", dump / "rank-1.safetensors"]
    for index, path in enumerate(ranks):
        with safe_open(str(path), framework="pt") as handle:
            # truly distributed: two ranks of one world, not two independent single-process runs
            assert handle.metadata() == {"rank": str(index), "world": "2"}
    count = assert_same_tensors(*ranks)
    assert count > 100
    # rank 0's export is the EMA both ranks hold, and the run trained (weights moved from init)
    exported = load_file(str(out / WEIGHTS))
    ranked = load_file(str(ranks[0]))
    assert all(torch.equal(ranked[f"ema.{name}"], value) for name, value in exported.items())
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [2, 4]
    saved = load_file(str(out / "checkpoints" / "step-4" / "trainable.safetensors"))
    assert all(torch.equal(ranked[f"trainable.{name}"], value) for name, value in saved.items())


def test_finetune_lowers_the_loss_on_a_fixed_batch(image_folder):
    from tenshot.data import load_domain
    from tenshot.data.images import to_tensor
    from tenshot.methods.finetune import FineTune
    from tenshot.methods.losses import diffusion_loss
    from tenshot.models.unet import new_model
    from tenshot.train.loop import Trainer

    torch.manual_seed(0)
    model = new_model("tiny", 16)
    method = FineTune(model)
    images = load_domain(image_folder, 16)
    batch = to_tensor(images)

    def fixed_loss() -> float:
        with torch.no_grad():
            losses = [diffusion_loss(model.unet, model.schedule, batch, torch.Generator().manual_seed(k))["loss"] for k in range(8)]
        return float(torch.stack(losses).mean())

    before = fixed_loss()
    config = TrainConfig(steps=15, batch_size=8, lr=2e-3, mixed_precision="no", preview_count=0, checkpoint_every=1000, log_every=5)
    import tempfile

    with tempfile.TemporaryDirectory() as run:
        result = Trainer(method, images, config, Path(run)).train()
        assert result.steps == 15 and set(result.final_losses) == {"total"}
    after = fixed_loss()
    assert after < 0.7 * before, (before, after)


def test_one_process_trains_runs_at_different_precisions(image_folder, tmp_path):
    """The API in a notebook: Accelerate's process-wide state must not pin the first run's precision."""
    from tenshot.data import load_domain
    from tenshot.methods.finetune import FineTune
    from tenshot.models.unet import new_model
    from tenshot.train.loop import Trainer

    images = load_domain(image_folder, 16)
    for index, precision in enumerate(("no", "bf16", "no")):
        config = TrainConfig(steps=1, batch_size=2, mixed_precision=precision, preview_count=0)
        trainer = Trainer(FineTune(new_model("tiny", 16)), images, config, tmp_path / str(index))
        assert trainer.accelerator.mixed_precision == precision
        assert trainer.train().steps == 1


def test_report_to_tensorboard_logs_through_accelerate_and_resume_may_change_it(image_folder, tmp_path):
    run = tmp_path / "run"
    api.pretrain(pretrain_config(image_folder, run, 4, report_to="tensorboard"))
    events = b"".join(path.read_bytes() for path in (run / "tensorboard").rglob("events.out.tfevents.*"))
    assert b"total" in events  # the logged loss, by its log.jsonl name
    api.pretrain(pretrain_config(image_folder, run, 6), resume=True)  # the tracker is not a setting of the run
    with pytest.raises(TenshotError, match="report-to must be one of"):
        pretrain_config(image_folder, run, 4, report_to="wandb").train.validate()


def test_resuming_a_run_that_finished_its_steps_exports_the_same_weights(image_folder, tmp_path):
    # a kill after the last checkpoint (while exporting or writing the report) leaves a run whose loop is done
    run = tmp_path / "run"
    api.pretrain(pretrain_config(image_folder, run, 4))
    before = load_file(str(run / WEIGHTS))
    shutil.rmtree(run / "model")
    result = api.pretrain(pretrain_config(image_folder, run, 4), resume=True)
    assert result.steps == 4
    after = load_file(str(run / WEIGHTS))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_a_domain_read_from_disk_batch_by_batch_trains_to_the_same_weights(image_folder, tmp_path, monkeypatch):
    from tenshot.data.domains import load_domain
    from tenshot.data.images import ImageFiles

    in_memory = tmp_path / "in-memory"
    api.pretrain(pretrain_config(image_folder, in_memory, 4))
    monkeypatch.setattr(api, "STREAM_ABOVE_BYTES", 0)
    assert isinstance(load_domain(image_folder, 16, stream_above=0), ImageFiles)
    streamed = tmp_path / "streamed"
    api.pretrain(pretrain_config(image_folder, streamed, 4))
    assert_same_run(in_memory, streamed, 4)
    small = tmp_path / "with-a-small-image"
    shutil.copytree(image_folder, small)
    from PIL import Image

    Image.new("RGB", (8, 8)).save(small / "zz-small.png")
    with pytest.raises(TenshotError, match="zz-small.png: image is 8x8, smaller than the model size 16"):
        api.pretrain(pretrain_config(small, tmp_path / "never", 4))
    assert not (tmp_path / "never").exists()


def test_an_image_vanishing_mid_run_is_one_line_and_resume_goes_on(image_folder, tmp_path, monkeypatch):
    import tenshot.data.images as images

    data = tmp_path / "data"
    shutil.copytree(image_folder, data)
    monkeypatch.setattr(api, "STREAM_ABOVE_BYTES", 0)
    checked = images.check_image_headers

    def check_then_lose_one(paths, size):  # the file is there when checked, gone when the stream reaches it
        checked(paths, size)
        (data / "003.png").rename(tmp_path / "003.png")

    monkeypatch.setattr(images, "check_image_headers", check_then_lose_one)
    run = tmp_path / "run"
    with pytest.raises(TenshotError, match="003.png: not a readable image"):
        api.pretrain(pretrain_config(data, run, 8))
    assert (run / "config.yaml").is_file() and not (run / "model").exists()
    monkeypatch.setattr(images, "check_image_headers", checked)
    (tmp_path / "003.png").rename(data / "003.png")
    assert api.pretrain(pretrain_config(data, run, 8), resume=True).steps == 8  # from its last checkpoint, or step 0
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))


def test_resume_clears_the_writes_a_killed_process_left_half_made(image_folder, tmp_path):
    run = tmp_path / "run"
    api.pretrain(pretrain_config(image_folder, run, 4))
    shutil.copytree(run / "checkpoints" / "step-4", run / "checkpoints" / ".step-8-k1x2_9ab")  # killed mid-checkpoint
    shutil.copytree(run / "model", run / ".model-zz0q1w2e")  # killed mid-export
    (run / ".method.safetensors-ab12cd34.safetensors").write_bytes(b"half")
    (run / ".DS_Store").write_bytes(b"the user's")
    api.pretrain(pretrain_config(image_folder, run, 8), resume=True)
    left = sorted(path.name for folder in (run, run / "checkpoints") for path in folder.iterdir() if path.name.startswith("."))
    assert left == [".DS_Store"]
