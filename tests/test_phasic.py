"""Phasic content fusion + DDC: the bottleneck forward, the gate, the fusion, the losses, structure-guided
translation, source images, the cached fusion initialisation and the CLI end to end (tiny UNet, 16 px)."""

from __future__ import annotations

import dataclasses
import math
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file

from conftest import ConstantNoiseDenoiser, uniform_images, write_images
from tenshot.cli import main
from tenshot.diffusion.samplers import ddim_invert, ddim_sample, dpm_solver_sample, partial_noise, sample_generators
from tenshot.diffusion.schedule import NoiseSchedule, cosine_schedule, default_scheduler_config
from tenshot.errors import TenshotError
from tenshot.methods import build_method, method_options
from tenshot.methods.base import Batch
from tenshot.methods.frequency import low_pass
from tenshot.methods.phasic import (CODE_WEIGHT_BASE, CODE_WEIGHT_CEILING, PHASE_SPLIT, Phasic, code_rest_weight, code_times, ddc_distance,
                                    gate, gram, nearest_shot_spread, nearest_style_distance, shot_distances, shot_spread, style_distance)
from tenshot.methods.translation import TranslationSettings, guided_latent, structure_guided_translation, translation_times
from tenshot.models.bottleneck import encode, forward_with_bottleneck
from tenshot.models.unet import DiffusionModel, new_model, save_model
from tenshot.sampling import load_for_sampling
from tenshot.source_images import card_dataset, load_source_images

SIZE = 16


def _images(seed: int, count: int = 4) -> torch.Tensor:
    return uniform_images(seed, count, SIZE)


def _method(prediction_type: str = "v_prediction", **options) -> Phasic:
    torch.manual_seed(0)
    return build_method("phasic", new_model("tiny", SIZE, prediction_type), options)


# --- the UNet forward with a bottleneck hook -------------------------------------------------------------


def test_forward_with_bottleneck_is_the_unet_forward_and_the_hook_sees_the_bottleneck():
    model = new_model("tiny", SIZE)
    x, t = _images(0), torch.tensor([0, 10, 500, 999])
    seen = []
    with torch.no_grad():
        plain = model.unet(x, t).sample
        torch.testing.assert_close(forward_with_bottleneck(model.unet, x, t), plain, rtol=0, atol=0)
        torch.testing.assert_close(forward_with_bottleneck(model.unet, x, t, lambda h: seen.append(h) or h), plain, rtol=0, atol=0)
        encoded = encode(model.unet, x, t)
        changed = forward_with_bottleneck(model.unet, x, t, lambda h: h + 1.0)
    assert seen[0].shape == encoded.shape == (4, 64, SIZE // 2, SIZE // 2)  # tiny: channels (32, 64), one downsampling
    assert (changed - plain).abs().max() > 1e-3


# --- the gate and the times ------------------------------------------------------------------------------


def test_gate_values_and_times_mapped_by_noise_level():
    t = torch.tensor([0, 140, 149, 150, 151, 160, 999])
    m = gate(t, 150)
    assert float(m[3]) == 0.5
    for value, time in zip(m, t.tolist()):
        assert float(value) == pytest.approx(1 / (1 + math.exp(-(time - 150))), abs=1e-7)
    assert float(m[1]) < 5e-5 and float(m[5]) > 1 - 5e-5 and float(m[0]) == 0.0 and float(m[-1]) == 1.0
    linear = _method()
    assert linear.gate_time == 150  # T_s = 300 of the cosine schedule, by equal noise level
    assert int(linear.checkpoint_time_of[600]) == 324 and int(linear.checkpoint_time_of[800]) == 482
    cosine = build_method("phasic", DiffusionModel(new_model("tiny", SIZE).unet, cosine_schedule()), {})
    assert cosine.gate_time == 300 and torch.equal(cosine.checkpoint_time_of, torch.arange(1000))


# --- the fusion --------------------------------------------------------------------------------------------


def test_fusion_convs_are_2c_c_c_c_and_identity_initialisation_gives_the_source_unet():
    method = _method()
    convs = [layer for layer in method.fusion.convs if isinstance(layer, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(128, 64, (3, 3)), (64, 64, (3, 3)), (64, 64, (3, 3))]
    method.source_images = _images(1, 8)
    method.initialising(True)
    assert not any(p.requires_grad for p in method.unet.parameters())
    assert {id(p) for p in method.trainable_parameters()} == {id(p) for p in method.fusion.parameters()}
    assert method.averaged_module() is method.fusion
    x, t = _images(2), torch.tensor([3, 100, 400, 900])
    with torch.no_grad():
        fused = method.fused_output(x, t, _images(3), torch.Generator().manual_seed(0))
        torch.testing.assert_close(fused, method.unet(x, t).sample, rtol=1e-5, atol=1e-5)
    method.initialising(False)
    assert all(p.requires_grad for p in method.unet.parameters())
    assert set(method.averaged_module().state_dict()) == {f"unet.{k}" for k in method.unet.state_dict()} | {f"fusion.{k}" for k in method.fusion.state_dict()}


def test_condition_branch_carries_no_gradient():
    method = _method()
    condition = _images(4).requires_grad_(True)
    x, t = _images(5), torch.tensor([50, 200, 400, 800])
    output = method.fused_output(x, t, condition, torch.Generator().manual_seed(1))
    output.pow(2).mean().backward()
    assert condition.grad is None
    through_branch = method.unet.conv_in.weight.grad.clone()
    method.zero_grad()
    with torch.no_grad():  # the same condition features, as a constant
        constant = method.condition_features(condition, t, torch.Generator().manual_seed(1))
    forward_with_bottleneck(method.unet, x, t, lambda h: method.fusion(h, constant)).float().pow(2).mean().backward()
    torch.testing.assert_close(method.unet.conv_in.weight.grad, through_branch, rtol=0, atol=0)


def test_gate_replaces_condition_features_by_noise_below_t_s():
    method = _method()
    images = _images(6)
    early, late = torch.full((4,), 0), torch.full((4,), 999)
    first = method.condition_features(images, early, torch.Generator().manual_seed(0))
    second = method.condition_features(_images(7), early, torch.Generator().manual_seed(0))
    torch.testing.assert_close(first, second)  # t << T_s: pure noise, whatever the image
    assert (method.condition_features(images, late, torch.Generator().manual_seed(0))
            - method.condition_features(_images(7), late, torch.Generator().manual_seed(0))).abs().max() > 1e-3


def test_translation_denoises_with_the_plain_unet_below_t_s_and_the_fused_one_above():
    method = _method()
    condition, x = _images(4), _images(5)
    below, above = torch.full((4,), method.gate_time - 1), torch.full((4,), method.gate_time + 20)

    def translated(t: torch.Tensor) -> torch.Tensor:
        return method.translation_denoiser(condition, torch.Generator().manual_seed(0))(x, int(t[0])).x0

    with torch.no_grad():
        plain = method.model.schedule.predict(method.unet(x, below).sample.float(), x, below).x0
        fused = method.model.schedule.predict(method.fused_output(x, above, condition, torch.Generator().manual_seed(0)), x, above).x0
        torch.testing.assert_close(translated(below), plain, rtol=0, atol=0)
        torch.testing.assert_close(translated(above), fused)
        method.fusion.convs[4].bias.add_(1.0)  # a change of the fusion moves the fused path alone
        assert (translated(above) - fused).abs().max() > 1e-3
        torch.testing.assert_close(translated(below), plain, rtol=0, atol=0)


# --- losses ------------------------------------------------------------------------------------------------


def test_ddc_is_zero_when_the_prediction_is_the_source_feature_plus_the_direction():
    generator = torch.Generator().manual_seed(0)
    source, direction = torch.randn(3, 7, generator=generator), torch.randn(7, generator=generator)
    assert torch.equal(ddc_distance(source + direction, source, direction), torch.zeros(3))
    prediction = torch.randn(3, 7, generator=generator)
    expected = [sum((prediction[b, d] - source[b, d] - direction[d]).item() ** 2 for d in range(7)) / 7 for b in range(3)]
    torch.testing.assert_close(ddc_distance(prediction, source, direction), torch.tensor(expected))


def test_gram_and_style_loss_against_a_hand_computation():
    maps = torch.tensor([[[[1.0, 2.0], [0.0, -1.0]], [[3.0, 0.0], [1.0, 1.0]]]])  # (1, C=2, 2, 2)
    f0, f1 = [1.0, 2.0, 0.0, -1.0], [3.0, 0.0, 1.0, 1.0]
    hand = [[sum(a * b for a, b in zip(u, v)) / (2 * 4) for v in (f0, f1)] for u in (f0, f1)]
    torch.testing.assert_close(gram(maps)[0], torch.tensor(hand))
    layer2 = torch.arange(18, dtype=torch.float32).view(1, 2, 3, 3) / 10
    targets = [torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.5, 0.5], [0.5, 0.5]]]), torch.zeros(2, 2, 2)]
    g1, g2 = gram(maps)[0], gram(layer2)[0]

    def frobenius2(a, b):
        return sum((a[i, j] - b[i, j]).item() ** 2 for i in range(2) for j in range(2))

    expected = 0.5 * (
        (frobenius2(g1, targets[0][0]) + 3.0 * frobenius2(g2, targets[1][0]))
        + (frobenius2(g1, targets[0][1]) + 3.0 * frobenius2(g2, targets[1][1]))
    )
    torch.testing.assert_close(style_distance([maps, layer2], targets, [1.0, 3.0]), torch.tensor([expected]))
    assert float(style_distance([maps], [gram(maps)])[0]) == 0.0


def _one_hot_maps(channel: int) -> torch.Tensor:
    """Maps ``(1, 3, 2, 2)`` whose Gram is e_c e_c^T: sqrt(3) on channel ``channel``, 0 elsewhere."""
    maps = torch.zeros(1, 3, 2, 2)
    maps[0, channel] = math.sqrt(3)
    return maps


def test_style_hinge_floors_eq5_at_the_shots_leave_one_out_spread():
    shots = [_one_hot_maps(c) for c in range(3)]  # Grams e_i e_i^T: every pair at ||G_i - G_j||^2 = 2
    grams = [torch.cat([gram(maps) for maps in shots])]
    spread = shot_spread(grams)
    torch.testing.assert_close(spread, torch.tensor([2.0]))
    assert float(shot_spread([grams[0][:1]])[0]) == 0.0  # one shot: no spread, the hinge is Eq. 5
    for maps in shots:  # a shot scores (m - 1)/m of the spread against the set, so the hinge leaves it alone
        assert float(style_distance([maps], grams)[0]) == pytest.approx(4 / 3)
        assert float(style_distance([maps], grams, floors=spread)[0]) == 0.0
    centre = torch.zeros(1, 3, 1, 3)  # Gram I/3, the shots' mean: Eq. 5's minimum, (m - 1)/2m of the spread
    centre[0, [0, 1, 2], 0, [0, 1, 2]] = math.sqrt(3)
    torch.testing.assert_close(gram(centre)[0], torch.eye(3) / 3)
    assert float(style_distance([centre], grams)[0]) == pytest.approx(2 / 3)
    far = (3 * _one_hot_maps(0)).requires_grad_(True)  # beyond the spread: Eq. 5 minus the floor, same gradient
    hinged = style_distance([far], grams, [0.5], floors=spread)
    plain = style_distance([far], grams, [0.5])
    torch.testing.assert_close(hinged, plain - 0.5 * 2.0)
    assert torch.equal(torch.autograd.grad(hinged.sum(), far)[0], torch.autograd.grad(plain.sum(), far)[0])
    near = centre.clone().requires_grad_(True)
    hinged = style_distance([near], grams, floors=spread)
    hinged.sum().backward()
    assert float(hinged.detach()[0]) == 0.0 and float(near.grad.abs().max()) == 0.0


def test_nearest_style_rule_hinges_each_output_on_its_nearest_shot():
    """Three shots with Grams e_0 e_0^T, e_1 e_1^T and 2 e_1 e_1^T: nearest-neighbour distances 2, 1 and 1 (shot 0's
    nearest is shot 1 at 2; shots 1 and 2 are 1 apart), so s^nn = 4/3. Every shot scores 0 (its own Gram is at
    distance 0); an output far from them pays only for its distance to the one it is nearest to, beyond s^nn, with
    that shot's gradient."""
    shots = [_one_hot_maps(0), _one_hot_maps(1), math.sqrt(2) * _one_hot_maps(1)]
    grams = [torch.cat([gram(maps) for maps in shots])]
    floors = nearest_shot_spread(grams, [1.0])
    torch.testing.assert_close(floors, torch.tensor([4 / 3]))
    for maps in shots:
        assert float(nearest_style_distance(shot_distances([maps], grams), [1.0], floors)[0]) == 0.0
    far = (3 * _one_hot_maps(0)).requires_grad_(True)  # Gram 9 e_0 e_0^T: 64 from shot 0, 82 and 85 from the others
    loss = nearest_style_distance(shot_distances([far], grams), [0.5], floors)
    torch.testing.assert_close(loss, torch.tensor([0.5 * (64 - 4 / 3)]))
    alone = 0.5 * (gram(far)[0] - grams[0][0]).pow(2).sum()
    torch.testing.assert_close(torch.autograd.grad(loss.sum(), far)[0], torch.autograd.grad(alone, far)[0])
    assert float(nearest_shot_spread([grams[0][:1]], [1.0])[0]) == 0.0


def test_adaptation_on_the_shots_own_spread():
    method = _method(feature_size=32)
    method.source_images = _images(16, 6)
    shots = _images(17, 5)
    method.setup(shots)
    torch.testing.assert_close(method.style_spread, shot_spread(method.target_grams))
    assert method.options.style_rule == "hinge" and (method.style_spread > 0).all()
    with torch.no_grad():
        maps = method.encoder(shots)[1]
    weights, floors = method.style_layer_weights, method.style_spread
    own = style_distance(maps, method.target_grams, weights)  # each shot against the whole set, itself included
    total_spread = float(floors.cpu() @ torch.tensor(weights))
    assert float(own.mean()) == pytest.approx(4 / 5 * total_spread, rel=1e-4)  # (m - 1)/m of the spread, m = 5
    hinged = style_distance(maps, method.target_grams, weights, floors)
    assert float(hinged.max()) < float(own.max()) and float(hinged.min()) >= 0.0
    batch = Batch(images=_images(18), generator=torch.Generator().manual_seed(3))
    terms = method.losses(batch, 0)
    assert 0 < float(terms["style_spread"]) and float(terms["style"]) <= float(terms["style_spread"]) * total_spread
    torch.testing.assert_close(method.nearest_spread, nearest_shot_spread(method.target_grams, weights).to(method.nearest_spread))
    method.options.style_rule = "nearest"  # the same step under the nearest-shot rule: a finite, non-negative term
    nearest = method.losses(Batch(images=_images(18), generator=torch.Generator().manual_seed(3)), 0)
    assert 0.0 <= float(nearest["style"]) < float("inf") and torch.isfinite(nearest["total"])


def test_code_times_cover_every_time_and_the_weights_stay_positive():
    generator = torch.Generator().manual_seed(0)
    large, rest = code_times(20_000, 20_000, 300, generator)
    assert int(large.min()) == 300 and int(large.max()) == PHASE_SPLIT - 1
    assert set(rest.tolist()) == set(range(300)) | set(range(PHASE_SPLIT, 1000))
    both = torch.cat([large, rest]).float()  # every time equally often: each range in proportion to its length
    for low, high in ((0, 300), (300, PHASE_SPLIT), (PHASE_SPLIT, 1000)):
        assert float(((both >= low) & (both < high)).float().mean()) == pytest.approx((high - low) / 1000, abs=0.01)
    times = torch.arange(1000)
    rest_times = times[(times < 300) | (times >= PHASE_SPLIT)]
    weight = code_rest_weight(rest_times, 300)
    assert float(weight.min()) > 0
    small = torch.arange(300)
    torch.testing.assert_close(code_rest_weight(small, 300), (CODE_WEIGHT_CEILING - CODE_WEIGHT_BASE ** (small / 1000)) / 5)
    at_split = CODE_WEIGHT_CEILING - CODE_WEIGHT_BASE ** (PHASE_SPLIT / 1000)
    torch.testing.assert_close(code_rest_weight(torch.tensor([PHASE_SPLIT, 950, 999]), 300), torch.full((3,), at_split))


def test_code_step_trains_the_shots_above_the_phase_split_and_repeats_under_its_generator(monkeypatch):
    method = _method(feature_size=32)
    method.source_images = _images(19, 6)
    method.setup(_images(20, 3))
    drawn = []
    shot_diffusion = method._shot_diffusion
    monkeypatch.setattr(method, "_shot_diffusion", lambda shots, times, generator: drawn.append(times) or shot_diffusion(shots, times, generator))
    images = _images(21)
    for step in range(30):
        method.losses(Batch(images=images, generator=torch.Generator().manual_seed(step)), step)
    rest = torch.cat(drawn[1::2])
    assert int(rest.max()) >= PHASE_SPLIT and bool(((rest < 300) | (rest >= PHASE_SPLIT)).all())
    assert int(method._checkpoint_times(rest, "cpu").max()) > int(method.checkpoint_time_of[PHASE_SPLIT])
    first = method.losses(Batch(images=images, generator=torch.Generator().manual_seed(7)), 0)
    again = method.losses(Batch(images=images, generator=torch.Generator().manual_seed(7)), 0)
    for name, value in first.items():
        assert torch.equal(value, again[name]), name


# --- structure-guided translation ----------------------------------------------------------------------------


def test_structure_guidance_at_full_resolution_returns_the_reference():
    x, reference = _images(8), _images(9)
    torch.testing.assert_close(guided_latent(x, reference, 1), reference, rtol=0, atol=1e-6)
    guided = guided_latent(x, reference, 2)
    torch.testing.assert_close(guided - low_pass(reference, 2), x - low_pass(x, 2))  # the high band is x's
    flat = torch.full((1, 3, SIZE, SIZE), 0.3)
    torch.testing.assert_close(low_pass(flat, 4), flat)  # the low band keeps a constant
    checker = ((torch.arange(SIZE).view(1, SIZE) + torch.arange(SIZE).view(SIZE, 1)) % 2 * 2.0 - 1).expand(1, 3, SIZE, SIZE)
    assert low_pass(checker, 2).abs().max() < 0.1  # and removes the finest pattern


def test_translation_times_and_guidance_off_is_partial_denoising():
    linear = NoiseSchedule(default_scheduler_config())
    assert translation_times(cosine_schedule(), 600, 25) == [int(t) for t in np.round(np.linspace(600, -1, 26)[:-1])]
    times = translation_times(linear, 600, 25)
    assert times[0] == 324 and len(times) == 25 and times == sorted(times, reverse=True)
    model = new_model("tiny", SIZE, "epsilon")
    images = _images(10, 3)
    off = TranslationSettings(start=600, steps=5, guidance_end=600, eta=0.5, encode="noise")
    translated = structure_guided_translation(model.denoiser(), images, off, sample_generators(0, range(3)))
    generators = sample_generators(0, range(3))
    grid = translation_times(linear, 600, 5)
    expected = ddim_sample(model.denoiser(), partial_noise(linear, images, grid[0], generators), grid, eta=0.5, generator=generators)
    torch.testing.assert_close(translated, expected)
    guided = structure_guided_translation(model.denoiser(), images, dataclasses.replace(off, guidance_end=400), sample_generators(0, range(3)))
    assert (guided - translated).abs().max() > 1e-4
    with pytest.raises(TenshotError, match="filter-factor"):
        TranslationSettings(filter_factor=3).check(SIZE)
    # DPM-Solver++(2M): without guidance the partial denoising of the same start, whatever eta
    dpm_off = structure_guided_translation(model.denoiser(), images, dataclasses.replace(off, sampler="dpm++"), sample_generators(0, range(3)))
    generators = sample_generators(0, range(3))
    torch.testing.assert_close(dpm_off, dpm_solver_sample(model.denoiser(), partial_noise(linear, images, grid[0], generators), grid))
    assert (dpm_off - translated).abs().max() > 1e-4
    dpm_guided = structure_guided_translation(model.denoiser(), images, dataclasses.replace(off, guidance_end=400, sampler="dpm++"), sample_generators(0, range(3)))
    assert (dpm_guided - dpm_off).abs().max() > 1e-4
    with pytest.raises(TenshotError, match="translate's sampler must be one of ddim, dpm"):
        TranslationSettings(sampler="ddpm").check(SIZE)
    with pytest.raises(TenshotError, match="encode must be one of source, noise"):
        TranslationSettings(encode="ddim").check(SIZE)


def test_source_encoding_starts_and_guides_from_the_source_models_ddim_inversion():
    """encode="source" (DDIB): the start is the source model's DDIM inversion of the input through the translation
    times, and the adapted model denoises it; without an encoder it refuses."""
    linear = NoiseSchedule(default_scheduler_config())
    torch.manual_seed(1)
    source, adapted = new_model("tiny", SIZE, "epsilon"), new_model("tiny", SIZE, "epsilon")
    images = _images(12, 3)
    settings = TranslationSettings(start=600, steps=5, guidance_end=600)
    translated = structure_guided_translation(adapted.denoiser(), images, settings, sample_generators(0, range(3)), source.denoiser())
    grid = translation_times(linear, 600, 5)
    expected = ddim_sample(adapted.denoiser(), ddim_invert(source.denoiser(), images, grid), grid)
    torch.testing.assert_close(translated, expected)
    guided = structure_guided_translation(adapted.denoiser(), images, dataclasses.replace(settings, guidance_end=200), None, source.denoiser())
    assert (guided - translated).abs().max() > 1e-4
    with pytest.raises(ValueError, match="needs the source model"):
        structure_guided_translation(adapted.denoiser(), images, settings)


@pytest.mark.parametrize("guidance_end", [600, 400, -1])
def test_a_model_translating_its_own_encoding_gives_the_input_back(guidance_end):
    """DDIB's round trip: where the DDIM ODE is a straight line (a constant-noise denoiser), Euler steps follow it
    exactly, so encoding and decoding with one model returns the input, with structure guidance too (each
    reference is the next point of the same encoding)."""
    schedule = NoiseSchedule({**default_scheduler_config(), "clip_sample": False})
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, SIZE, SIZE, generator=generator, dtype=torch.float64) * 2 - 1
    denoiser = ConstantNoiseDenoiser(schedule, torch.randn(1, 3, SIZE, SIZE, generator=generator, dtype=torch.float64))
    settings = TranslationSettings(start=600, steps=10, guidance_end=guidance_end, filter_factor=2)
    translated = structure_guided_translation(denoiser, images, settings, None, denoiser)
    torch.testing.assert_close(translated, images, rtol=0, atol=1e-9)
    noised = structure_guided_translation(denoiser, images, dataclasses.replace(settings, encode="noise"), sample_generators(0, range(2)))
    assert (noised - images).abs().max() > 0.1  # a fresh draw of q(x_t | x) is not the input's own encoding


@pytest.mark.parametrize("encode, eta", [("source", 0.0), ("noise", 1.0)])
def test_translation_is_per_image_whatever_the_batch(encode, eta):
    method = _method()
    encoder = new_model("tiny", SIZE, "v_prediction").denoiser()
    images = _images(11, 3)
    settings = TranslationSettings(start=500, steps=3, style_repeats=1, output="intermediate", encode=encode, eta=eta)
    whole = method.translate(images, settings, sample_generators(5, range(3)), encoder)
    last = method.translate(images[2:], settings, sample_generators(5, [2]), encoder)
    torch.testing.assert_close(whole[2:], last, rtol=1e-4, atol=1e-4)


# --- training --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("weighting", ["code", "paper", "baseline"])
def test_adaptation_losses_train_the_unet_and_the_fusion(weighting):
    method = _method(weighting=weighting, feature_size=32)
    method.source_images = _images(12, 6)
    method.setup(_images(13, 3))
    assert method.direction.shape == (1280,) and len(method.target_grams) == 4
    terms = method.losses(Batch(images=_images(14), generator=torch.Generator().manual_seed(0)), 0)
    assert {"total", "ddc", "style", "style_spread", "diffusion"} <= set(terms) and all(torch.isfinite(v) for v in terms.values())
    terms["total"].backward()
    assert method.unet.conv_in.weight.grad.abs().sum() > 0 and method.fusion.convs[0].weight.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in method.encoder.parameters())
    with pytest.raises(TenshotError, match="at least 2"):
        method.losses(Batch(images=_images(15, 1), generator=torch.Generator().manual_seed(0)), 0)


def test_options_and_errors():
    for bad in ({"stage": "all"}, {"weighting": "both"}, {"fusion_steps": 0}, {"ddc_network": "dino"}, {"feature_size": 8}, {"lambda": 1},
                {"style_rule": "sample"}):
        with pytest.raises(TenshotError):
            method_options("phasic", bad)
    with pytest.raises(TenshotError, match="source-domain images"):
        _method().setup(_images(0))


# --- source images -----------------------------------------------------------------------------------------


def test_source_images_come_from_the_card_or_from_samples(tmp_path, monkeypatch, image_folder):
    monkeypatch.setenv("TENSHOT_CACHE", str(tmp_path / "cache"))
    assert card_dataset("noto-32") == "emoji:noto"
    model = new_model("tiny", SIZE)
    folder = save_model(model, tmp_path / "model")
    (folder / "README.md").write_text(f"```bash\ntenshot pretrain \\\n  --data {image_folder} --size 16\n```\n")
    assert card_dataset(folder) == str(image_folder)
    assert load_source_images(None, folder, model, 5).shape == (5, SIZE, SIZE, 3)
    (folder / "README.md").write_text("tenshot pretrain --data emoji:nope\n")
    with pytest.raises(TenshotError, match="card names"):
        load_source_images(None, folder, model, 5)
    (folder / "README.md").unlink()
    sampled = load_source_images(None, folder, model, 3)
    assert sampled.shape == (3, SIZE, SIZE, 3) and len(list((tmp_path / "cache" / "source-samples").iterdir())) == 1
    np.testing.assert_array_equal(load_source_images(None, folder, model, 3), sampled)


# --- the CLI end to end ------------------------------------------------------------------------------------


def test_adapt_both_stages_translate_and_sample(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSHOT_CACHE", str(tmp_path / "cache"))
    source_data = write_images(tmp_path / "source-data", 6, SIZE, seed=1)
    shots = write_images(tmp_path / "shots", 3, SIZE, seed=2)
    source = save_model(new_model("tiny", SIZE), tmp_path / "source")
    runner = CliRunner()
    common = ["--source", str(source), "--target", str(shots), "--source-data", str(source_data), "--method", "phasic",
              "--batch-size", "2", "--mixed-precision", "no", "--preview-count", "1", "--option", "feature_size=32",
              "--fusion-steps", "2", "--option", "fusion_batch_size=2"]

    result = runner.invoke(main, ["adapt", *common, "--stage", "adapt", "--steps", "1", "--out", str(tmp_path / "early")])
    assert result.exit_code == 2 and "run the initialisation stage first" in result.output

    result = runner.invoke(main, ["adapt", *common, "--stage", "init", "--out", str(tmp_path / "init")])
    assert result.exit_code == 0, result.output
    init = tmp_path / "init"
    assert (init / "checkpoints" / "step-2").is_dir() and len(list((tmp_path / "cache" / "initialisation").iterdir())) == 1
    assert torch.equal(load_file(str(init / "model" / "unet" / "diffusion_pytorch_model.safetensors"))["conv_in.weight"],
                       load_file(str(source / "unet" / "diffusion_pytorch_model.safetensors"))["conv_in.weight"])  # stage 2 leaves the UNet

    run = tmp_path / "run"
    result = runner.invoke(main, ["adapt", *common, "--steps", "2", "--out", str(run)])  # stage 2 from the cache
    assert result.exit_code == 0, result.output
    assert not (run / "fusion-init").exists() and (run / "method.safetensors").is_file()
    fusion = load_file(str(run / "method.safetensors"))
    assert not torch.equal(fusion["fusion.convs.0.weight"], load_file(str(init / "method.safetensors"))["fusion.convs.0.weight"])

    loaded = load_for_sampling(run)
    assert isinstance(loaded, Phasic) and not loaded.training
    for name, value in loaded.extra_tensors().items():
        torch.testing.assert_close(value, fusion[name])

    result = runner.invoke(main, ["translate", str(run), "--input", str(source_data), "--n", "4", "--steps", "3", "--batch-size", "3", "--out", str(tmp_path / "translated")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "translated").iterdir()) == ["000.png", "001.png", "002.png", "003.png"]
    assert (tmp_path / "translated.png").is_file()
    # the default encoding loads the run's source model: a run whose source is gone says so, and --encode noise needs none
    moved = tmp_path / "moved"
    shutil.copytree(run, moved)
    (moved / "config.yaml").write_text((run / "config.yaml").read_text().replace(str(source), str(tmp_path / "gone")))
    translate = ["translate", str(moved), "--input", str(source_data), "--n", "2", "--steps", "3"]
    result = runner.invoke(main, [*translate, "--out", str(tmp_path / "refused-encoding")])
    assert result.exit_code == 2 and "use --encode noise" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "refused-encoding").exists()
    result = runner.invoke(main, [*translate, "--encode", "noise", "--eta", "1", "--out", str(tmp_path / "noise-encoded")])
    assert result.exit_code == 0, result.output
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "noise-encoded" / "000.png")), np.asarray(Image.open(tmp_path / "translated" / "000.png")))
    result = runner.invoke(main, ["sample", str(run), "--n", "2", "--steps", "2", "--out", str(tmp_path / "samples")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["000000.png", "000001.png"]

    # --from-source: the source model's samples translated by the run through fresh noise, as the two commands give them
    drawn = ["--n", "3", "--steps", "2", "--seed", "4"]
    for argv in (["sample", str(run), "--from-source", *drawn, "--out", str(tmp_path / "via-source")],
                 ["sample", str(source), *drawn, "--out", str(tmp_path / "drawn")],
                 ["translate", str(run), "--input", str(tmp_path / "drawn"), "--seed", "4", "--encode", "noise", "--eta", "1",
                  "--out", str(tmp_path / "translated-drawn")]):
        result = runner.invoke(main, argv)
        assert result.exit_code == 0, result.output
    for name in ("000000.png", "000001.png", "000002.png"):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "via-source" / name)), np.asarray(Image.open(tmp_path / "translated-drawn" / name)))
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "via-source" / "000000.png")), np.asarray(Image.open(tmp_path / "drawn" / "000000.png")))
    result = runner.invoke(main, ["sample", str(source), "--from-source", "--out", str(tmp_path / "refused")])
    assert result.exit_code == 2 and "not a run folder" in result.output and not (tmp_path / "refused").exists()


def test_translate_keeps_nested_names_and_refuses_collisions(tmp_path):
    source = save_model(new_model("tiny", SIZE), tmp_path / "source")
    inputs = tmp_path / "inputs"
    write_images(inputs / "faces", 1, SIZE)
    Image.fromarray(np.full((SIZE, SIZE, 3), 200, np.uint8)).save(inputs / "b.jpg")
    runner = CliRunner()
    result = runner.invoke(main, ["translate", str(source), "--input", str(inputs), "--steps", "2", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.png")) == ["b.png", "faces/000.png"]
    Image.fromarray(np.full((SIZE, SIZE, 3), 10, np.uint8)).save(inputs / "b.png")
    result = runner.invoke(main, ["translate", str(source), "--input", str(inputs), "--steps", "2", "--out", str(tmp_path / "again")])
    assert result.exit_code == 2 and "would both be translated to b.png" in result.output


def test_source_data_is_refused_by_methods_without_source_images(tmp_path):
    source = save_model(new_model("tiny", SIZE), tmp_path / "source")
    shots = write_images(tmp_path / "shots", 2, SIZE)
    result = CliRunner().invoke(main, ["adapt", "--source", str(source), "--target", str(shots), "--source-data", str(shots), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "--source-data is for methods that use source images" in result.output
    assert not (tmp_path / "run").exists()


def test_a_run_with_another_fusion_is_refused():
    method = _method()
    saved = {name: value.clone() for name, value in method.extra_tensors().items()}
    method.load_extra_tensors({name: value + 1 for name, value in saved.items()})
    assert all(torch.equal(value + 1, method.extra_tensors()[name]) for name, value in saved.items())
    name = next(iter(saved))
    with pytest.raises(TenshotError, match="phasic fusion"):
        method.load_extra_tensors(saved | {name: saved[name][:1]})
    with pytest.raises(TenshotError, match="phasic fusion"):
        method.load_extra_tensors({})
