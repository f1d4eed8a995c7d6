"""DomainStudio / DDPM-PA: Haar bands, the pairwise-similarity KL, the frozen source copy, training, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file

from conftest import uniform_images
from tenshot.cli import main
from tenshot.errors import TenshotError
from tenshot.methods import METHODS, build_method, method_options
from tenshot.methods.base import Batch
from tenshot.methods.domainstudio import DomainStudio, DomainStudioOptions, pairwise_similarity_kl
from tenshot.methods.frequency import haar_dwt, haar_idwt, high_frequency
from tenshot.models.unet import new_model

SIZE = 8


def _images(seed: int, count: int = 4) -> torch.Tensor:
    return uniform_images(seed, count, SIZE)


def _method(prediction_type: str = "v_prediction", **options) -> DomainStudio:
    torch.manual_seed(0)
    method = build_method("domainstudio", new_model("tiny", SIZE, prediction_type), options)
    method.setup(_images(0))
    return method


def _losses(method: DomainStudio, images: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    return method.losses(Batch(images=images, generator=torch.Generator().manual_seed(seed)), 0)


# --- Haar transform ------------------------------------------------------------------------------------------


def test_haar_bands_reconstruct_the_input_exactly():
    x = torch.randn(2, 3, 8, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    bands = haar_dwt(x)
    assert all(band.shape == (2, 3, 4, 3) for band in bands)
    torch.testing.assert_close(haar_idwt(*bands), x, rtol=0, atol=1e-12)
    # orthonormal: energy is preserved
    torch.testing.assert_close(sum(band.pow(2).sum() for band in bands), x.pow(2).sum())


def test_haar_filters_are_those_of_methods_md():
    block = torch.tensor([[1.0, 2.0], [3.0, 5.0]]).view(1, 1, 2, 2)  # [[a, b], [c, d]]
    a, b, c, d = 1.0, 2.0, 3.0, 5.0
    ll, lh, hl, hh = (float(band) for band in haar_dwt(block))
    assert ll == pytest.approx((a + b + c + d) / 2)
    assert lh == pytest.approx((-a + b - c + d) / 2)  # L^T H = 1/2 [[-1, 1], [-1, 1]]
    assert hl == pytest.approx((-a - b + c + d) / 2)  # H^T L = 1/2 [[-1, -1], [1, 1]]
    assert hh == pytest.approx((a - b - c + d) / 2)  # H^T H = 1/2 [[1, -1], [-1, 1]]
    assert float(high_frequency(block)) == pytest.approx(lh + hl + hh)


def test_high_frequency_is_zero_on_a_constant_image_only():
    assert high_frequency(torch.full((2, 3, 8, 8), 0.37)).abs().max() == 0
    checker = (torch.arange(8).view(1, 8) + torch.arange(8).view(8, 1)) % 2 * 2.0 - 1
    assert high_frequency(checker.expand(1, 3, 8, 8)).abs().min() > 0.5
    with pytest.raises(ValueError):
        haar_dwt(torch.zeros(1, 3, 7, 8))


# --- pairwise-similarity KL ----------------------------------------------------------------------------------


def _code_kl(adapted: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """The official code's L_img, written independently: per-anchor softmaxes over the others, KLDivLoss's
    default reduction (the mean over every entry; spelled out, since torch warns that the default will change)."""
    def rows(x):
        flat = x.flatten(1)
        return torch.stack([
            torch.stack([F.cosine_similarity(flat[i], flat[j], dim=0) for j in range(len(x)) if j != i]) for i in range(len(x))
        ])

    return F.kl_div(F.log_softmax(rows(adapted), dim=1), F.softmax(rows(source), dim=1), reduction="none").mean()


def test_pairwise_kl_matches_the_code_and_its_weights():
    generator = torch.Generator().manual_seed(2)
    for batch in (3, 5):
        source = torch.randn(batch, 3, 8, 8, generator=generator)
        adapted = source + 0.5 * torch.randn(batch, 3, 8, 8, generator=generator)
        entries = pairwise_similarity_kl(adapted, source, reduction="entries")
        torch.testing.assert_close(entries, _code_kl(adapted, source))
        anchors = pairwise_similarity_kl(adapted, source, reduction="anchors")
        torch.testing.assert_close(anchors, entries * (batch - 1))
        if batch == 3:  # lambda = 2 over anchors equals the code's 4.0 * KLDivLoss mean at B = 3
            torch.testing.assert_close(2.0 * anchors, 4.0 * entries)
        # the paper's direction is the other KL
        reverse = pairwise_similarity_kl(adapted, source, direction="adapted-to-source")
        assert reverse > 0 and not torch.isclose(reverse, anchors)


@pytest.mark.parametrize("preset", ["tenshot", "code", "paper"])
def test_pairwise_kl_is_zero_for_the_source_model_and_positive_after_a_change(preset):
    method = _method(preset=preset)
    images = _images(3)
    before = _losses(method, images)
    assert before["image_kl"] == 0 and before["hf_kl"] == 0
    with torch.no_grad():
        for parameter in method.unet.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(parameter.numel())))
    after = _losses(method, images)
    assert after["image_kl"] > 0 and after["hf_kl"] > 0


# --- the frozen source copy ----------------------------------------------------------------------------------


def test_gradients_reach_only_the_adapted_model():
    method = _method()
    source_ids = {id(p) for p in method.source.parameters()}
    trainable_ids = {id(p) for p in method.trainable_parameters()}
    assert source_ids and not source_ids & trainable_ids
    assert trainable_ids == {id(p) for p in method.unet.parameters()}
    assert method.averaged_module() is method.unet
    # the trainer's checkpoint state is the parameters with requires_grad: no source copy in it
    assert not [name for name, p in method.named_parameters() if p.requires_grad and name.startswith("source.")]
    method.train()
    assert method.unet.training and not method.source.training
    with torch.no_grad():  # move away from the source so the pairwise terms have gradients too
        method.unet.conv_out.bias.add_(0.1)
    _losses(method, _images(4))["total"].backward()
    assert all(p.grad is None and not p.requires_grad for p in method.source.parameters())
    assert all(p.grad is not None for p in method.unet.parameters())


def test_options_presets_and_errors():
    assert DomainStudioOptions().resolved() == DomainStudioOptions(preset="paper").resolved()
    assert DomainStudioOptions(preset="tenshot").resolved() == {
        "pair_weight": 2.0, "hf_pair_weight": 2.0, "hf_mse_weight": 1.0, "kl_direction": "source-to-adapted", "kl_reduction": "anchors",
    }
    code = DomainStudioOptions(preset="code").resolved()
    assert (code["pair_weight"], code["hf_pair_weight"], code["hf_mse_weight"], code["kl_reduction"]) == (4.0, 4.0, 1.0, "entries")
    assert code["kl_direction"] == "source-to-adapted"
    paper = DomainStudioOptions(preset="paper").resolved()
    assert (paper["kl_direction"], paper["hf_mse_weight"]) == ("adapted-to-source", 0.05)
    assert DomainStudioOptions(paper_hf_mse=True).resolved()["hf_mse_weight"] == 0.05
    assert DomainStudioOptions(preset="code", kl_direction="adapted-to-source").resolved()["kl_direction"] == "adapted-to-source"
    assert "domainstudio" in METHODS
    for bad in ({"preset": "nope"}, {"kl_direction": "both"}, {"pair_weight": -1}, {"paper_hf_mse": True, "hf_mse_weight": 2.0}, {"lambda": 1}):
        with pytest.raises(TenshotError):
            method_options("domainstudio", bad)
    with pytest.raises(TenshotError, match="at least 3"):
        _losses(_method(), _images(5, count=2))


# --- training ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_a_few_steps_lower_the_total_loss_on_a_fixed_batch(prediction_type):
    method = _method(prediction_type)
    images = _images(6)
    optimizer = torch.optim.AdamW(method.trainable_parameters(), lr=1e-3)
    first = None
    for _ in range(6):
        terms = _losses(method, images, seed=7)  # same t and noise every step
        first = first if first is not None else float(terms["total"].detach())
        optimizer.zero_grad()
        terms["total"].backward()
        optimizer.step()
    with torch.no_grad():
        last = _losses(method, images, seed=7)
    assert all(torch.isfinite(v) for v in last.values())
    assert float(last["total"]) < first
    assert last["image_kl"] > 0  # the adapted model has moved away from the source


def test_x0_is_clipped_on_epsilon_checkpoints_only_by_default():
    """Unclipped, an eps model's x0 at t near T is its error / sqrt(abar) and the hf-MSE explodes; clamped to
    [-1, 1], each Haar detail band is at most 1 in size (a half-sum of four +-1 terms), so hf <= 3 and the MSE
    to the real shots' hf is at most 36."""
    images = _images(6)
    epsilon = _method("epsilon")
    assert epsilon.clip_x0 and not _method("v_prediction").clip_x0
    assert float(_losses(epsilon, images, seed=7)["hf_mse"]) <= 36
    unclipped = _method("epsilon", clip_x0=False)
    unclipped.unet.load_state_dict(epsilon.unet.state_dict())
    unclipped.source.load_state_dict(epsilon.source.state_dict())
    assert float(_losses(unclipped, images, seed=7)["hf_mse"]) > 100


def test_adapt_domainstudio_end_to_end_and_sample(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(4):
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    runner = CliRunner()
    common = ["--steps", "2", "--batch-size", "4", "--mixed-precision", "no"]
    result = runner.invoke(main, ["pretrain", "--data", str(folder), "--size", str(SIZE), "--preset", "tiny", "--out", str(tmp_path / "source"), *common])
    assert result.exit_code == 0, result.output
    run = tmp_path / "adapted"
    result = runner.invoke(
        main,
        ["adapt", "--source", str(tmp_path / "source"), "--target", str(folder), "--method", "domainstudio",
         "--option", "preset=paper", "--option", "hf_pair_weight=3", "--out", str(run), *common],
    )
    assert result.exit_code == 0, result.output
    assert (run / "model" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    logged = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
    assert {"total", "simple", "image_kl", "hf_kl", "hf_mse"} <= set(logged)
    trainable = load_file(str(run / "checkpoints" / "step-2" / "trainable.safetensors"))
    assert trainable and not [name for name in trainable if name.startswith("source.")]
    result = runner.invoke(main, ["sample", str(run), "--n", "2", "--steps", "2", "--out", str(tmp_path / "samples")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["000000.png", "000001.png"]
    from tenshot.sampling import load_for_sampling
    from tenshot.methods.finetune import FineTune

    loaded = load_for_sampling(run)
    assert isinstance(loaded, DomainStudio) and loaded.settings["hf_pair_weight"] == 3 and not loaded.training
    assert loaded.source is None  # sampling holds one UNet; the source copy is made by setup() for training
    with pytest.raises(RuntimeError, match="setup"):
        _losses(loaded, _images(4))
    assert type(load_for_sampling(tmp_path / "source")) is FineTune  # a pretraining run samples plainly
