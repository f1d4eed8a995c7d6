"""Converting ADM (guided-diffusion / improved-diffusion) state dicts: outputs equal to the reference network,
the structure read from the state dict, the schedule, the command, and one line for what does not convert."""

from __future__ import annotations


import pytest
import torch
from click.testing import CliRunner

from adm_reference import ADMUNet
from tenshot.cli import main
from tenshot.errors import TenshotError
from tenshot.models.convert import ADMSettings, adm_structure, convert_adm
from tenshot.models.unet import load_model

CONFIGS = {
    # attention at two resolutions and the middle, learned sigma, scale-shift norm, residual up/down, 32-channel heads
    "attention": dict(model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=2, attention=(1, 2), num_head_channels=32,
                      scale_shift=True, resblock_updown=True, learn_sigma=True),  # fmt: skip
    # small: one block per level, attention in the middle only, conv up/down, 2 heads in the legacy order
    "small": dict(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention=(), num_heads=2),
    "new order": dict(model_channels=32, channel_mult=(1, 1), num_res_blocks=1, attention=(0,), num_heads=2, new_order=True),
}


def _reference(config: dict) -> ADMUNet:
    torch.manual_seed(0)
    model = ADMUNet(**config).eval()
    with torch.no_grad():  # no zero-initialised layer: every weight must be mapped for the outputs to agree
        for parameter in model.parameters():
            parameter.normal_(0, 0.15)
    return model


def _settings(config: dict, **extra) -> ADMSettings:
    return ADMSettings(image_size=16, num_heads=config.get("num_heads", 1), num_head_channels=config.get("num_head_channels", -1),
                       use_new_attention_order=config.get("new_order", False), **extra)  # fmt: skip


@pytest.mark.parametrize("name", list(CONFIGS))
def test_the_converted_unet_computes_what_adm_computes(name):
    config = CONFIGS[name]
    reference = _reference(config)
    structure = adm_structure(reference.state_dict())
    assert structure.num_res_blocks == config["num_res_blocks"]
    assert structure.channels == [32 * m for m in config["channel_mult"]]
    assert structure.attention == [level in config["attention"] for level in range(len(config["channel_mult"]))]
    assert (structure.scale_shift, structure.resblock_updown, structure.learn_sigma) == tuple(config.get(k, False) for k in ("scale_shift", "resblock_updown", "learn_sigma"))
    unet, _ = convert_adm(reference.state_dict(), _settings(config))
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 417, 999])
    with torch.no_grad():
        expected = reference(x, t)[:, :3]  # the eps half of a learned-sigma output
        got = unet(x, t).sample
    assert got.abs().max() > 0.1
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_the_schedules_are_adm_s():
    import numpy as np

    from tenshot.diffusion.schedule import NoiseSchedule

    _, linear = convert_adm(_reference(CONFIGS["small"]).state_dict(), _settings(CONFIGS["small"], diffusion_steps=500))
    betas = np.linspace(2 * 0.0001, 2 * 0.02, 500)  # ADM scales the linear betas by 1000 / T
    np.testing.assert_allclose(NoiseSchedule(linear).alphas_cumprod.numpy(), np.cumprod(1 - betas), rtol=1e-4)
    _, cosine = convert_adm(_reference(CONFIGS["small"]).state_dict(), _settings(CONFIGS["small"], noise_schedule="cosine", predict_xstart=True))
    steps = np.arange(1001) / 1000
    abar = np.cos((steps + 0.008) / 1.008 * np.pi / 2) ** 2
    expected = np.cumprod(1 - np.minimum(1 - abar[1:] / abar[:-1], 0.999))
    schedule = NoiseSchedule(cosine)
    np.testing.assert_allclose(schedule.alphas_cumprod.numpy(), expected, rtol=1e-4)  # diffusers' betas are float32
    assert schedule.prediction_type == "sample"


def test_tenshot_convert_writes_a_model_every_command_takes(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSHOT_CACHE", str(tmp_path / "cache"))
    reference = _reference(CONFIGS["attention"])
    checkpoint = tmp_path / "ffhq.pt"
    torch.save(reference.state_dict(), checkpoint)
    out = tmp_path / "converted"
    argv = ["convert", str(checkpoint), "--out", str(out), "--image-size", "16", "--num-head-channels", "32", "--noise-schedule", "cosine"]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 0, result.output
    assert "learned sigma" in result.output  # the dropped variance half is said
    card = (out / "README.md").read_text()
    assert str(checkpoint) in card and "guided-diffusion" in card
    model = load_model(out)
    assert model.size == 16 and model.schedule.config["beta_schedule"] == "squaredcos_cap_v2"
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model.unet(x, torch.tensor([5, 900])).sample, reference(x, torch.tensor([5, 900]))[:, :3], rtol=1e-5, atol=1e-5)
    sampled = CliRunner().invoke(main, ["sample", str(out), "--n", "2", "--steps", "2", "--out", str(tmp_path / "samples")])
    assert sampled.exit_code == 0, sampled.output
    again = CliRunner().invoke(main, argv)
    assert again.exit_code == 2 and "not empty" in again.output
    small = tmp_path / "small.pt"
    torch.save(_reference(dict(model_channels=32, channel_mult=(1, 1), num_res_blocks=1, attention=(), num_heads=4)).state_dict(), small)
    direct = CliRunner().invoke(main, ["sample", str(small), "--n", "1", "--steps", "1", "--out", str(tmp_path / "direct")])
    assert direct.exit_code == 0, direct.output
    assert "converted on the fly" in direct.output and "image size 256, 4 heads" in direct.output  # the defaults assumed, said


def test_what_does_not_convert_is_one_line(tmp_path):
    state = _reference(CONFIGS["small"]).state_dict()
    with pytest.raises(TenshotError, match="num-heads 3 gives attention layers"):
        convert_adm(state, ADMSettings(num_heads=3))
    with pytest.raises(TenshotError, match="not a guided-diffusion"):
        convert_adm({"weight": torch.zeros(1)}, ADMSettings())
    with pytest.raises(TenshotError, match="does not fit"):
        convert_adm({**state, "extra.weight": torch.zeros(1)}, _settings(CONFIGS["small"]))
    pickled = tmp_path / "code.pt"
    torch.save(torch.nn.Linear(2, 2), pickled)  # a pickled module, not a state dict: refused by weights_only
    result = CliRunner().invoke(main, ["convert", str(pickled), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "not a readable torch checkpoint" in result.output
    assert not (tmp_path / "out").exists()
