"""Converting denoising-diffusion-pytorch checkpoints (releases 0.28.0 and 2.3.4, the package itself as the
reference): outputs equal to its Unet's, the objective and schedule carried over, the command, the pipeline,
``--source model.pt`` on the fly, and one line for what does not convert."""

from __future__ import annotations

import copy
import importlib

import pytest
import torch
from click.testing import CliRunner

from lucidrains_reference import package
from tenshot.cli import main
from tenshot.errors import TenshotError
from tenshot.models.convert_lucidrains import LucidrainsSettings, convert_lucidrains
from tenshot.models.unet import load_model

CONFIGS = {
    # 0.28: linear attention at every level, weight-standardised convs, 4x4 strided downsampling
    "0.28": ("0.28.0", dict(dim=16, dim_mults=(1, 2, 4))),
    # 0.28 with a learned variance (LearnedGaussianDiffusion's Unet: twice the output channels)
    "0.28 learned variance": ("0.28.0", dict(dim=8, dim_mults=(1, 2), learned_variance=True)),
    # 2.x: full attention at two levels, heads and head widths per level, RMSNorm, memory key/values
    "2.3.4 attention": ("2.3.4", dict(dim=16, dim_mults=(1, 2, 4), attn_heads=(2, 2, 4), attn_dim_head=(8, 8, 16), full_attn=(False, True, True))),
    # 2.x small: its defaults on two levels, and a wider stem
    "2.3.4 small": ("2.3.4", dict(dim=8, init_dim=12, dim_mults=(1, 2))),
}


def _unet(version: str, config: dict, seed: int = 0):
    torch.manual_seed(seed)
    unet = package(version).Unet(**config).eval()
    with torch.no_grad():  # no zero-initialised layer: every weight must be mapped for the outputs to agree
        for parameter in unet.parameters():
            parameter.add_(torch.randn_like(parameter), alpha=0.15)
    return unet


def _trainer_save(version: str, unet, online_offset: float = 0.0, **diffusion) -> dict:
    """What the package's ``Trainer.save`` writes: the diffusion's state, its EMA's (ema_pytorch) and the rest."""
    from ema_pytorch import EMA

    module = package(version)
    model = module.GaussianDiffusion(unet, image_size=16, **{"timesteps": 100, **diffusion})
    ema = EMA(model, beta=0.99)
    with torch.no_grad():  # the online weights drift from the EMA's, as in training
        for parameter in model.parameters():
            parameter.add_(online_offset)
    return {"step": 7, "model": model.state_dict(), "opt": torch.optim.Adam(model.parameters()).state_dict(), "ema": ema.state_dict(), "scaler": None}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_the_converted_unet_computes_what_the_package_computes(name):
    version, config = CONFIGS[name]
    reference = _unet(version, config)
    kind = package(version).GaussianDiffusion if not config.get("learned_variance") else None
    diffusion = kind(reference, image_size=16, timesteps=100) if kind else None
    state = diffusion.state_dict() if diffusion else {**{f"model.{k}": v for k, v in reference.state_dict().items()}, "betas": torch.linspace(1e-4, 0.02, 100)}
    unet, _, summary = convert_lucidrains(state, LucidrainsSettings(image_size=16))
    assert unet.config.layout == ("0.28" if version == "0.28.0" else "2")
    assert ("learned variance" in summary) == bool(config.get("learned_variance"))
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 41, 99])
    with torch.no_grad():
        expected = reference(x, t)[:, :3]  # the mean half of a learned-variance output
        got = unet(x, t).sample
        assert got.abs().max() > 0.1
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        exact = unet.double()(x.double(), t).sample
        torch.testing.assert_close(exact, reference.double()(x.double(), t.double())[:, :3], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("objective, min_snr, schedule, steps", [
    ("pred_noise", False, "sigmoid", 100), ("pred_x0", False, "sigmoid", 100), ("pred_v", False, "sigmoid", 100), ("pred_v", True, "sigmoid", 100),
    ("pred_noise", True, "linear", 100),
    # long schedules, where 1 - abar in float32 loses the small betas: the snr comes from the float64-made square roots
    ("pred_x0", False, "cosine", 4000), ("pred_noise", True, "cosine", 4000), ("pred_v", True, "linear", 4000),
])  # fmt: skip
def test_the_objective_and_schedule_are_the_package_s(objective, min_snr, schedule, steps):
    from tenshot.diffusion.schedule import NoiseSchedule

    version, config = CONFIGS["2.3.4 small"]
    saved = _trainer_save(version, _unet(version, config), objective=objective, beta_schedule=schedule, min_snr_loss_weight=min_snr, timesteps=steps)
    _, scheduler, summary = convert_lucidrains(saved, LucidrainsSettings(image_size=16))
    assert f"objective {objective} (read from loss_weight)" in summary
    schedule = NoiseSchedule(scheduler)
    torch.testing.assert_close(schedule.alphas_cumprod.float(), saved["model"]["alphas_cumprod"], rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("name, objective", [("0.28", "pred_x0"), ("2.3.4 attention", "pred_v")])
def test_tenshot_reads_the_output_as_the_package_does(name, objective):
    """x0 from tenshot's schedule and prediction type equals the package's ``model_predictions`` (unclipped)."""
    version, config = CONFIGS[name]
    reference = _unet(version, config)
    model = package(version).GaussianDiffusion(reference, image_size=16, timesteps=100, objective=objective)
    unet, scheduler, _ = convert_lucidrains({"model": model.state_dict()}, LucidrainsSettings(image_size=16, objective=objective if version == "0.28.0" else None, weights="model"))
    from tenshot.diffusion.schedule import NoiseSchedule

    schedule = NoiseSchedule(scheduler)
    x, t = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3)), torch.tensor([10, 90])
    with torch.no_grad():
        expected = model.model_predictions(x, t).pred_x_start
        got = schedule.predict(unet(x, t).sample, x, t).x0
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_a_learned_variance_unet_predicts_the_noise_and_wrappers_are_taken_off():
    """LearnedGaussianDiffusion registers its parent's default loss_weight (pred_v in 2.x) but trains and samples
    the first half of the output as noise; DDP's module. and torch.compile's _orig_mod. prefixes come off."""
    version = "2.3.4"
    reference = _unet(version, {**CONFIGS["2.3.4 small"][1], "learned_variance": True})
    diffusion_state = {f"model.{key}": value for key, value in reference.state_dict().items()}
    plain = package(version).GaussianDiffusion(_unet(version, CONFIGS["2.3.4 small"][1]), image_size=16, timesteps=100)
    buffers = {key: value for key, value in plain.state_dict().items() if not key.startswith("model.")}  # as its subclass registers them
    wrapped = {"model": {f"module.{key}": value for key, value in {**diffusion_state, **buffers}.items()}}
    assert buffers["loss_weight"][-1] < 0.5  # pred_v's weighting snr / (snr + 1)
    unet, scheduler, summary = convert_lucidrains(wrapped, LucidrainsSettings(image_size=16, weights="model"))
    assert "objective pred_noise (LearnedGaussianDiffusion's)" in summary and scheduler["prediction_type"] == "epsilon"
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([7])
    with torch.no_grad():
        torch.testing.assert_close(unet(x, t).sample, reference(x, t)[:, :3], rtol=1e-5, atol=1e-5)
    with pytest.raises(TenshotError, match="predicts the noise"):
        convert_lucidrains(wrapped, LucidrainsSettings(weights="model", objective="pred_x0"))


def test_ema_or_online_weights():
    version, config = CONFIGS["2.3.4 small"]
    reference = _unet(version, config)
    before = copy.deepcopy(reference)
    saved = _trainer_save(version, reference, online_offset=0.05)  # moves reference, the online network
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([50])
    ema, _, summary = convert_lucidrains(saved, LucidrainsSettings(image_size=16))
    online, _, _ = convert_lucidrains(saved, LucidrainsSettings(image_size=16, weights="model"))
    assert "ema weights" in summary
    with torch.no_grad():
        torch.testing.assert_close(ema(x, t).sample, before(x, t), rtol=1e-5, atol=1e-5)  # the EMA copied before the drift
        torch.testing.assert_close(online(x, t).sample, reference(x, t), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(ema(x, t).sample, online(x, t).sample, atol=1e-3)


def test_convert_a_trainer_checkpoint_into_a_pipeline_every_command_takes(tmp_path):
    from diffusers import DDIMPipeline

    importlib.import_module("tenshot.models.lucidrains_unet")  # diffusers loads a class from outside its libraries once imported

    version, config = CONFIGS["0.28"]
    reference = _unet(version, config)
    checkpoint = tmp_path / "model-10.pt"
    torch.save(_trainer_save(version, reference, objective="pred_x0", beta_schedule="linear"), checkpoint)
    out = tmp_path / "converted"
    argv = ["convert", str(checkpoint), "--out", str(out), "--image-size", "16", "--objective", "pred_x0"]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 0, result.output
    assert "0.28 Unet" in result.output and "objective pred_x0 (given)" in result.output
    card = (out / "README.md").read_text()
    assert str(checkpoint) in card and "denoising-diffusion-pytorch" in card and "image size 16" in card
    model = load_model(out)
    assert model.size == 16 and model.schedule.prediction_type == "sample" and model.schedule.clip_sample
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model.unet(x, torch.tensor([5, 90])).sample, reference(x, torch.tensor([5, 90])), rtol=1e-5, atol=1e-5)
    pipeline = DDIMPipeline.from_pretrained(out)
    images = pipeline(batch_size=1, num_inference_steps=2, output_type="np").images
    assert images.shape == (1, 16, 16, 3)
    adapted = tmp_path / "adapted"
    argv = ["adapt", "--source", str(out), "--target", "emoji:openmoji:shots", "--method", "finetune", "--steps", "2", "--batch-size", "2", "--out", str(adapted)]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 0, result.output
    assert load_model(adapted).unet.config.layout == "0.28"
    sampled = CliRunner().invoke(main, ["sample", str(adapted), "--n", "2", "--steps", "2", "--out", str(tmp_path / "samples")])
    assert sampled.exit_code == 0, sampled.output


def test_source_of_a_checkpoint_converts_on_the_fly_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSHOT_CACHE", str(tmp_path / "cache"))
    version = "0.28.0"
    checkpoint = tmp_path / "model-1.pt"
    torch.save(_trainer_save(version, _unet(version, dict(dim=8, dim_mults=(1, 2, 4, 8, 8)))), checkpoint)
    first = CliRunner().invoke(main, ["sample", str(checkpoint), "--n", "1", "--steps", "1", "--out", str(tmp_path / "s1")])
    assert first.exit_code == 0, first.output
    assert "converted on the fly" in first.output and "assumed image size 256" in first.output
    converted = list((tmp_path / "cache" / "converted").iterdir())
    assert len(converted) == 1 and (converted[0] / "README.md").is_file()
    second = CliRunner().invoke(main, ["sample", str(checkpoint), "--n", "1", "--steps", "1", "--out", str(tmp_path / "s2")])
    assert second.exit_code == 0 and "converted on the fly" not in second.output and "cached at" in second.output
    torch.save(_trainer_save(version, _unet(version, dict(dim=8, dim_mults=(1, 2, 4, 8, 8)), seed=1)), checkpoint)
    changed = CliRunner().invoke(main, ["sample", str(checkpoint), "--n", "1", "--steps", "1", "--out", str(tmp_path / "s3")])
    assert changed.exit_code == 0 and "converted on the fly" in changed.output  # keyed by the file's bytes, not its name
    assert len(list((tmp_path / "cache" / "converted").iterdir())) == 2


def test_what_does_not_convert_is_one_line(tmp_path):
    version, config = CONFIGS["2.3.4 small"]
    conditioned = _unet(version, {**config, "self_condition": True})
    with pytest.raises(TenshotError, match="self-conditioned"):
        convert_lucidrains(_trainer_save(version, conditioned), LucidrainsSettings())
    saved = _trainer_save(version, _unet(version, config), objective="pred_v")
    with pytest.raises(TenshotError, match="disagrees with the checkpoint's loss_weight"):
        convert_lucidrains(saved, LucidrainsSettings(objective="pred_noise"))
    old = _trainer_save("0.28.0", _unet("0.28.0", CONFIGS["0.28"][1]))
    with pytest.raises(TenshotError, match="theta 10000"):
        convert_lucidrains(old, LucidrainsSettings(sinusoidal_theta=100.0))
    extra = {**saved, "ema": {}, "model": {**saved["model"], "model.extra.weight": torch.zeros(1)}}
    with pytest.raises(TenshotError, match="does not fit"):
        convert_lucidrains(extra, LucidrainsSettings(weights="model"))
    with pytest.raises(TenshotError, match="no ema_model"):
        convert_lucidrains(extra, LucidrainsSettings())
    folder = tmp_path / "converted"
    result = CliRunner().invoke(main, ["convert", str(_saved(tmp_path, saved)), "--out", str(folder), "--image-size", "16"])
    assert result.exit_code == 0, result.output
    lora = CliRunner().invoke(main, ["adapt", "--source", str(folder), "--target", "emoji:openmoji:shots", "--method", "lora", "--steps", "1", "--out", str(tmp_path / "l")])
    assert lora.exit_code == 2 and "LoRA's target layers" in lora.output and len(lora.output.strip().splitlines()) == 1


def _saved(folder, checkpoint: dict):
    path = folder / "checkpoint.pt"
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize("name", ["0.28", "2.3.4 attention"])
def test_phasic_s_bottleneck_and_gdd_i_s_frozen_layers_reach_the_converted_unet(name):
    from tenshot.methods.gdd import gdd_i_frozen_parameters
    from tenshot.models.bottleneck import bottleneck_channels, encode, forward_with_bottleneck

    version, config = CONFIGS[name]
    unet, _, _ = convert_lucidrains(_trainer_save(version, _unet(version, config))["model"], LucidrainsSettings(image_size=16))
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 70])
    seen = []
    with torch.no_grad():
        torch.testing.assert_close(forward_with_bottleneck(unet, x, t), unet(x, t).sample)
        zeroed = forward_with_bottleneck(unet, x, t, hook=lambda h: seen.append(h.shape) or torch.zeros_like(h))
    assert seen == [encode(unet, x, t).shape] and seen[0][1] == bottleneck_channels(unet) == 16 * config["dim_mults"][-1]
    assert not torch.allclose(zeroed, unet(x, t).sample)
    frozen = gdd_i_frozen_parameters(unet)
    assert any(".block1.proj." in key for key in frozen) and any(".3.conv." in key for key in frozen)
    assert not any("norm" in key or "mlp" in key or "final_conv" in key for key in frozen)
