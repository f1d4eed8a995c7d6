"""The memorisation monitor: its copy share on known cases, its log, and --stop-on-copies keeping the last
preview's EMA before the share crossed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import write_images
from tenshot import api
from tenshot.config import AdaptConfig, ExportConfig, PretrainConfig, TrainConfig
from tenshot.data.images import load_images
from tenshot.errors import TenshotError
from tenshot.metrics.diversity import squared_distances
from tenshot.metrics.evaluate import EL0Runner
from tenshot.metrics.memorisation import NEAREST_KEY, SHARE_KEY, CopyMonitor
from tenshot.train.checkpoint import load_checkpoint

TRAIN = {"batch_size": 4, "mixed_precision": "no", "log_every": 1, "preview_count": 4, "preview_steps": 2}


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> np.ndarray:
    folder = write_images(tmp_path_factory.mktemp("monitor") / "shots", 5, 32, seed=3)
    return load_images(sorted(folder.iterdir()), 32)


def test_the_shots_are_all_copies_and_other_images_are_not(shots):
    monitor = CopyMonitor(shots)
    vectors = EL0Runner(batch_size=8, progress=False).vectors(shots)
    between = squared_distances(vectors, vectors)
    assert monitor.spacing == pytest.approx(between[~np.eye(len(shots), dtype=bool)].min(), rel=1e-6)
    scores = monitor(shots)
    assert scores[SHARE_KEY] == 1.0 and scores[NEAREST_KEY] == pytest.approx(0.0, abs=1e-6)
    # flat grey images are far from every smooth colour field: none is a copy
    grey = np.full((4, 32, 32, 3), 128, dtype=np.uint8)
    far = monitor(grey)
    assert far[SHARE_KEY] == 0.0 and far[NEAREST_KEY] > monitor.spacing
    # a copy of one shot among three far images: a quarter
    assert monitor(np.concatenate([shots[:1], grey[:3]]))[SHARE_KEY] == 0.25
    assert SHARE_KEY not in CopyMonitor(shots[:1])(grey)  # one shot has no spacing


@pytest.fixture(scope="module")
def source(tmp_path_factory, image_folder):
    out = tmp_path_factory.mktemp("monitor-source") / "pretrain"
    api.pretrain(PretrainConfig(data=str(image_folder), out=str(out), size=16, preset="tiny", train=TrainConfig(steps=2, checkpoint_every=100, **TRAIN)))
    return out


def adapt_config(source, target, out, steps, method="finetune", **extra) -> AdaptConfig:
    train = TrainConfig(steps=steps, preview_every=2, checkpoint_every=2, keep_checkpoints=10, **TRAIN)
    return AdaptConfig(source=str(source), target=str(target), method=method, out=str(out), train=train, **extra)


def test_adapt_logs_the_monitor_at_every_preview(source, tmp_path):
    target = write_images(tmp_path / "shots", 3, 16, seed=7)
    result = api.adapt(adapt_config(source, target, tmp_path / "run", 4))
    records = [json.loads(line) for line in (result.run / "log.jsonl").read_text().splitlines()]
    monitored = [record for record in records if SHARE_KEY in record]
    assert [record["step"] for record in monitored] == [2, 4]
    assert all(0.0 <= record[SHARE_KEY] <= 1.0 and record[NEAREST_KEY] > 0 and "total" in record for record in monitored)
    assert [record["step"] for record in records] == [1, 2, 3, 4]  # one record a step, the monitor's in the preview's
    assert result.stopped is None
    assert "Memorisation monitor" in result.report.read_text()


def test_stop_on_copies_keeps_the_ema_of_the_last_preview_below_the_share(source, tmp_path, monkeypatch):
    """A monitor scripted to report copies from the third preview on: the run stops there (step 6) and exports
    the EMA of step 4, which is its checkpoint's; a resume is refused."""
    shares = iter([0.0, 0.25, 0.75, 1.0])
    monkeypatch.setattr(CopyMonitor, "__call__", lambda self, images: {NEAREST_KEY: 1.0, SHARE_KEY: next(shares)})
    target = write_images(tmp_path / "shots", 3, 16, seed=7)
    config = adapt_config(source, target, tmp_path / "run", 10, stop_on_copies=0.5)
    result = api.adapt(config)
    assert (result.stopped.step, result.stopped.share, result.stopped.kept_step) == (6, 0.75, 4)
    assert result.steps == 6
    exported = load_file(str(result.model / "unet" / "diffusion_pytorch_model.safetensors"))
    ema = load_checkpoint(result.run / "checkpoints" / "step-4")["ema"]
    assert all(torch.equal(exported[name], ema[f"shadow.{name}"]) for name in exported)
    stop = [json.loads(line) for line in (result.run / "log.jsonl").read_text().splitlines() if "stopped-on-copies" in line]
    assert [record["step"] for record in stop] == [6] and stop[0]["stopped-on-copies"]["kept-step"] == 4
    with pytest.raises(TenshotError, match="stopped on copies at step 6"):
        api.adapt(config, resume=True)


def test_stop_on_copies_is_checked_before_training(source, tmp_path):
    one = write_images(tmp_path / "one", 1, 16)
    with pytest.raises(TenshotError, match="at least 2 images"):
        api.adapt(adapt_config(source, one, tmp_path / "a", 2, stop_on_copies=0.5))
    with pytest.raises(TenshotError, match="stop-on-copies"):
        api.adapt(adapt_config(source, one, tmp_path / "b", 2, stop_on_copies=1.0))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_checkpoint_exported_equals_the_run_trained_that_many_steps(source, tmp_path):
    """The premise of the budget curves: adapt's EMA at step 4 of an 8-step run is the model of a 4-step run,
    and ``tenshot export`` of the last checkpoint is the run's own ``model/``."""
    target = write_images(tmp_path / "shots", 3, 16, seed=7)
    long = api.adapt(adapt_config(source, target, tmp_path / "long", 8, method="domainstudio"))
    short = api.adapt(adapt_config(source, target, tmp_path / "short", 4, method="domainstudio"))
    weights = "model/unet/diffusion_pytorch_model.safetensors"
    for step, reference in ((4, short.run), (8, long.run)):
        exported = api.export(ExportConfig(run=str(long.run), step=step, out=str(tmp_path / f"step-{step}")))
        first, second = load_file(str(exported / weights)), load_file(str(reference / weights))
        assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
        assert (exported / "config.yaml").read_text() == (long.run / "config.yaml").read_text()
    with pytest.raises(TenshotError, match=r"no checkpoint of step 3 \(checkpoints: 2, 4, 6, 8\)"):
        api.export(ExportConfig(run=str(long.run), step=3, out=str(tmp_path / "none")))
    with pytest.raises(TenshotError, match="not empty"):
        api.export(ExportConfig(run=str(long.run), step=4, out=str(tmp_path / "step-4")))
