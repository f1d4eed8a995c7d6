"""CRDI: the time grid and segments, the guided step, the frozen UNet, the optimisation, sampling, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from conftest import uniform_images, write_images
from safetensors.torch import load_file

from tenshot.api import generate
from tenshot.cli import main
from tenshot.config import AdaptConfig
from tenshot.diffusion.samplers import ddim_move, ddim_sample, randn, sample_generators
from tenshot.diffusion.schedule import NoiseSchedule, default_scheduler_config
from tenshot.errors import TenshotError
from tenshot.methods import build_method
from tenshot.methods.base import Batch
from tenshot.methods.crdi import CRDI, draw_segment_indices, guided_prediction, respaced_times, segment_layout, window_indices
from tenshot.models.unet import DiffusionModel, new_model, save_model
from tenshot.sampling import load_for_sampling

SIZE = 16
# guided-diffusion's timestep_respacing "25" of T = 1000 (METHODS.md 4.2)
CODE_GRID = [0, 42, 83, 125, 166, 208, 250, 291, 333, 375, 416, 458, 500, 541, 583, 624, 666, 708, 749, 791, 832, 874, 916, 957, 999]


def _shots(count: int = 4, seed: int = 0) -> torch.Tensor:
    return uniform_images(seed, count, SIZE)


def _method(prediction_type: str = "v_prediction", shots: int = 4, **options) -> CRDI:
    torch.manual_seed(0)
    method = build_method("crdi", new_model("tiny", SIZE, prediction_type), options)
    method.setup(_shots(shots))
    return method


def _batch(seed: int, count: int = 4) -> Batch:
    return Batch(images=torch.zeros(count, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(seed))


# --- times and segments --------------------------------------------------------------------------------------


def test_times_are_the_codes_spaced_indices_as_original_times():
    assert respaced_times(25) == CODE_GRID
    # t_start = 5 and t_end = 20 of 25 (main.sh) are stored as t = 208 and 832: the window is spaced 5 ... 19
    assert window_indices(208, 832, 25) == list(range(5, 20))
    assert window_indices(208, 624, 25) == list(range(5, 15))  # the yaml's t_end = 15
    method = _method()  # no resolution shift by default
    assert method.grid == CODE_GRID
    # sampling starts at the noisiest window time (spaced 19, t = 791) and runs the grid below it: the code's 20 steps
    assert [paper for paper, _ in method.sampling_times(25)] == CODE_GRID[19::-1]
    assert [model for _, model in method.sampling_times(25)] == CODE_GRID[19::-1]  # linear T = 1000: the identity
    # any other step count keeps the start and takes its own grid below it
    assert [paper for paper, _ in method.sampling_times(10)] == [791, 777, 666, 555, 444, 333, 222, 111, 0]


def test_one_segment_versus_several():
    window = list(range(5, 20))
    assert segment_layout(208, 832, 25, 1) == [window]
    assert segment_layout(208, 832, 25, 15) == [[i] for i in window]
    # 15 steps in 4 segments: lengths 4, 4, 4, 3, the longer ones at the low-noise end (the code's split_list)
    assert segment_layout(208, 832, 25, 4) == [[5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16], [17, 18, 19]]
    one, several = _method(segments=1), _method(segments=15)
    assert [len(g) for g in one.embeddings] == [4] and len(several.embeddings) == 15
    assert one.extra_tensors()["embeddings"].shape == (4, 1, 3, SIZE, SIZE)
    assert several.extra_tensors()["embeddings"].shape == (4, 15, 3, SIZE, SIZE)
    # every guided time uses the SGE of its own segment; one segment serves the whole window
    assert [several.segment_at(CODE_GRID[i]) for i in window] == list(range(15))
    assert {one.segment_at(CODE_GRID[i]) for i in window} == {0}
    assert several.segment_at(777) == several.segment_at(791) == 14  # a time between grid times: the nearest
    # optimiser steps go round the segments, noisiest first
    assert [several.training_segment(step) for step in range(17)] == [*range(14, -1, -1), 14, 13]
    assert [one.training_segment(step) for step in range(3)] == [0, 0, 0]


def test_times_drawn_per_step_cover_the_segment_in_equal_parts():
    generator = torch.Generator().manual_seed(0)
    block = list(range(5, 20))
    for _ in range(20):
        drawn = draw_segment_indices(block, generator)
        assert len(drawn) == 12  # int(0.8 * 15)
        width = 15 / 12
        assert all(5 + int(j * width) <= i <= 5 + int((j + 1) * width) for j, i in enumerate(drawn))
    assert draw_segment_indices([9], generator) == [9]
    assert len(draw_segment_indices([5, 6], generator)) == 1


def test_times_move_to_another_schedule_by_equal_abar():
    config = {**default_scheduler_config("epsilon"), "beta_schedule": "squaredcos_cap_v2"}
    method = build_method("crdi", DiffusionModel(new_model("tiny", SIZE).unet, NoiseSchedule(config)), {})
    linear = NoiseSchedule(default_scheduler_config("epsilon"))
    times = method.sampling_times(25)
    for paper, model in times:
        assert model != paper or paper == 0
        assert abs(float(method.model.schedule.abar(model)) - float(linear.abar(paper))) < 0.01
    assert [m for _, m in times] == sorted({m for _, m in times}, reverse=True)


def test_times_move_from_the_papers_resolution_by_the_snr_shift():
    """With paper_size 256, a paper time t moves on a SIZE px model to the time whose SNR is (256 / SIZE)^2 times
    t's; paper_size 0 (the default) and the model's own size are both the equal-abar map."""
    linear = NoiseSchedule(default_scheduler_config("epsilon"))
    method = _method(paper_size=256)
    factor = (256 / SIZE) ** 2
    assert _method(paper_size=SIZE).sampling_times(25) == _method().sampling_times(25)

    def snr(schedule, t):
        abar = float(schedule.abar(t))
        return abar / (1 - abar)

    for paper, model in method.sampling_times(25)[:-1]:  # the last, t = 0, stays 0
        assert model < paper
        assert snr(linear, model + 1) <= factor * snr(linear, paper) <= snr(linear, model - 1)
    assert [m for _, m in method.sampling_times(25)] == sorted({m for _, m in method.sampling_times(25)}, reverse=True)
    # the schedule helper: factor 1 is the equal-abar map; a factor moves to the time of that SNR
    assert linear.map_time(791, linear) == linear.map_time(791, linear, 1.0) == 791
    assert linear.map_time(-1, linear, 64.0) == -1
    assert abs(snr(linear, linear.map_time(791, linear, 64.0)) / snr(linear, 791) - 64) < 64 * 0.02


def test_options_are_checked():
    for bad, message in [
        ({"segments": 16}, "segments must be between 1 and the 15"),
        ({"segments": 0}, "segments"),
        ({"t_start": 800, "t_end": 700}, "t_start < t_end"),
        ({"t_start": 210, "t_end": 240}, "no time of the 25-step grid"),
        ({"init": "uniform"}, "init must be one of"),
        ({"anneal_scale": -1}, "anneal_scale"),
        ({"reassign": "yes"}, "reassign"),
        ({"grid_steps": 1}, "grid_steps"),
        ({"paper_size": -1}, "paper_size"),
    ]:
        with pytest.raises(TenshotError, match=message):
            build_method("crdi", new_model("tiny", SIZE), bad)
    assert window_indices(208, 624, 25) and build_method("crdi", new_model("tiny", SIZE), {"segments": 10, "t_end": 624}).blocks[-1] == [14]


# --- the guided step -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_guided_step_with_a_zero_embedding_is_the_unguided_ddim_step(prediction_type):
    method = _method(prediction_type)
    schedule, denoiser = method.model.schedule, method.model.denoiser()
    x_t = torch.randn(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 1.5
    t, s = 624, 583
    times = torch.full((4,), t)
    prediction = denoiser(x_t, t)
    assert prediction.x0.abs().max() > 1  # the clipping matters in this comparison
    guided = guided_prediction(schedule, prediction, x_t, times, torch.zeros_like(x_t))
    ours = ddim_move(guided, schedule.abar(torch.full((4,), s), like=guided.x0))
    steps = []
    ddim_sample(denoiser, x_t, [t, s], clip=True, callback=lambda i, time, x_next, p: steps.append(x_next))
    torch.testing.assert_close(ours, steps[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(guided_prediction(schedule, prediction, x_t, times, None).x0, guided.x0)

    # with an embedding: x0' = clip(x0) + (1 - a)/sqrt(a) g and eps' = eps(clip(x0)) - sqrt(1 - a) g (METHODS.md 4.3)
    g = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(2)) * 0.1
    a = float(schedule.abar(t))
    clipped_x0 = prediction.x0.clamp(-1, 1)
    clipped_eps = (x_t - a**0.5 * clipped_x0) / (1 - a) ** 0.5
    pushed = guided_prediction(schedule, prediction, x_t, times, g)
    torch.testing.assert_close(pushed.x0, clipped_x0 + (1 - a) / a**0.5 * g, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pushed.eps, clipped_eps - (1 - a) ** 0.5 * g, rtol=1e-5, atol=1e-4)
    b = float(schedule.abar(s))
    torch.testing.assert_close(ddim_move(pushed, schedule.abar(torch.full((4,), s), like=pushed.x0)), b**0.5 * pushed.x0 + (1 - b) ** 0.5 * pushed.eps)


def test_sampling_with_zero_embeddings_and_no_perturbation_is_clipped_ddim_from_a_noised_shot():
    method = _method(init="zeros", anneal_scale=0.0)
    generators = sample_generators(3, range(3))
    noise = randn((3, 3, SIZE, SIZE), generators, "cpu")
    ours = method.sample(noise, steps=10, generators=generators)
    generators = sample_generators(3, range(3))
    randn((3, 3, SIZE, SIZE), generators, "cpu")  # the same stream position as the sampler's
    shots = torch.cat([torch.randint(4, (1,), generator=g) for g in generators])
    times = [model for _, model in method.sampling_times(10)]
    start = method.model.schedule.add_noise(method.shots[shots], noise, torch.full((3,), times[0]))
    plain = ddim_sample(method.model.denoiser(), start, times, clip=True)
    torch.testing.assert_close(ours, plain, rtol=1e-5, atol=1e-5)
    with pytest.raises(TenshotError, match="DDIM"):
        method.sample(noise, sampler="ddpm")


# --- adaptation ----------------------------------------------------------------------------------------------


def test_adaptation_leaves_the_network_untouched(tmp_path):
    from tenshot.config import TrainConfig
    from tenshot.data.images import to_uint8
    from tenshot.train.loop import Trainer

    method = _method(segments=3)
    before = {name: value.clone() for name, value in method.unet.state_dict().items()}
    embeddings = [g.detach().clone() for g in method.embeddings]
    assert method.trainable_parameters() == list(method.embeddings)
    config = TrainConfig(steps=4, batch_size=4, lr=0.05, grad_clip=0.0, mixed_precision="no", preview_count=0, checkpoint_every=100, log_every=1)
    trainer = Trainer(method, to_uint8(method.shots), config, tmp_path / "run")
    # under torchrun, DDP must find the segments a step leaves without a gradient (checked by hand with 2 ranks)
    assert trainer.accelerator.ddp_handler.find_unused_parameters
    trainer.train()
    after = method.unet.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert all(p.grad is None and not p.requires_grad for p in method.unet.parameters())
    assert method.train().training and not method.unet.training  # the frozen UNet stays in eval mode
    assert all(not torch.equal(old, new) for old, new in zip(embeddings, method.embeddings))
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert {"total", "x0", "previous", "penalty"} <= set(logged[-1])


def test_a_step_trains_one_segment_and_the_shots_the_generator_picks():
    method = _method(segments=3, shots=5)
    terms = method.losses(_batch(0, count=3), step=1)
    terms["total"].backward()
    grads = [g.grad for g in method.embeddings]
    assert grads[0] is None and grads[2] is None and grads[1] is not None  # step 1 trains segment 3 - 1 - 1
    chosen = torch.randperm(5, generator=torch.Generator().manual_seed(0))[:3]
    # the penalty reaches every shot's embedding; the reconstruction only those of the step's shots
    method.embeddings[1].grad = None
    method.options.penalty_weight = 0.0
    method.losses(_batch(0, count=3), step=1)["total"].backward()
    touched = method.embeddings[1].grad.flatten(1).abs().sum(1) > 0
    assert touched.tolist() == [i in chosen.tolist() for i in range(5)]


def test_the_optimisation_lowers_its_loss():
    method = _method(segments=3, shots=2, random_noise=False)
    optimizer = torch.optim.Adam(method.trainable_parameters(), lr=0.05)

    def fixed_loss() -> float:
        with torch.no_grad():
            return sum(float(method.losses(_batch(100 + step, count=2), step)["total"]) for step in range(3))

    before = fixed_loss()
    for step in range(60):  # 20 Adam steps per segment
        optimizer.zero_grad(set_to_none=True)
        method.losses(_batch(step, count=2), step)["total"].backward()
        optimizer.step()
    after = fixed_loss()
    assert after < 0.3 * before, (before, after)


# --- sampling ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_sampling_is_deterministic_per_seed_and_independent_of_the_batch_size(eta):
    method = _method(segments=3).eval()  # random embeddings: the guidance, reassignment and perturbation all matter
    assert method.options.reassign and method.options.anneal_scale > 0
    whole = generate(method, 5, steps=6, eta=eta, seed=11, batch_size=5)
    assert np.array_equal(whole, generate(method, 5, steps=6, eta=eta, seed=11, batch_size=2))
    assert np.array_equal(whole[3:], generate(method, 2, steps=6, eta=eta, seed=11, batch_size=1, start=3))
    assert not np.array_equal(whole, generate(method, 5, steps=6, eta=eta, seed=12, batch_size=5))
    fixed = build_method("crdi", method.model, {"segments": 3, "reassign": False})
    fixed.load_extra_tensors(method.extra_tensors())
    assert not np.array_equal(whole, generate(fixed, 5, steps=6, eta=eta, seed=11, batch_size=5))


# --- runs ----------------------------------------------------------------------------------------------------


def test_method_training_defaults_apply_unless_given():
    assert AdaptConfig().train.lr == 1e-4
    crdi = AdaptConfig(method="crdi").train
    assert (crdi.lr, crdi.batch_size, crdi.flip, crdi.grad_clip) == (0.05, 10, False, 0.0)


def test_adapt_then_sample_a_run_from_the_command_line(tmp_path):
    torch.manual_seed(0)
    source = save_model(new_model("tiny", SIZE), tmp_path / "source")
    target = write_images(tmp_path / "shots", 5, SIZE)
    run = tmp_path / "run"
    runner = CliRunner()
    adapt = ["adapt", "--source", str(source), "--target", str(target), "--method", "crdi", "--mixed-precision", "no",
             "--preview-every", "2", "--preview-count", "2"]
    result = runner.invoke(main, [*adapt, "--steps", "3", "--option", "segments=3", "--out", str(run)])
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["steps"] == 3 and saved["options"] == {"segments": 3}
    assert (saved["train"]["lr"], saved["train"]["batch_size"], saved["train"]["flip"]) == (0.05, 10, False)  # crdi's defaults
    tensors = load_file(str(run / "method.safetensors"))
    assert tensors["embeddings"].shape == (5, 3, 3, SIZE, SIZE) and tensors["shots"].shape == (5, 3, SIZE, SIZE)
    # model/ is the source UNet unchanged
    exported, original = load_file(str(run / "model" / "unet" / "diffusion_pytorch_model.safetensors")), load_file(str(source / "unet" / "diffusion_pytorch_model.safetensors"))
    assert exported.keys() == original.keys() and all(torch.equal(exported[k], original[k]) for k in original)
    assert (run / "samples" / "step-2.png").is_file()

    loaded = load_for_sampling(run)
    assert isinstance(loaded, CRDI) and not loaded.training and loaded.options.segments == 3
    assert torch.equal(loaded.extra_tensors()["embeddings"], tensors["embeddings"]) and torch.equal(loaded.shots, tensors["shots"])
    result = runner.invoke(main, ["sample", str(run), "--n", "3", "--steps", "5", "--seed", "4", "--out", str(tmp_path / "samples")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["000000.png", "000001.png", "000002.png"]
    from tenshot.data import load_domain

    assert np.array_equal(load_domain(str(tmp_path / "samples"), SIZE), generate(loaded, 3, steps=5, seed=4))

    # a flag given on the command line wins over the method's default
    result = runner.invoke(main, [*adapt, "--steps", "1", "--lr", "0.01", "--batch-size", "2", "--out", str(tmp_path / "run2")])
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((tmp_path / "run2" / "config.yaml").read_text())["train"]
    assert (saved["lr"], saved["batch_size"], saved["flip"]) == (0.01, 2, False)


def test_a_run_with_the_wrong_tensors_is_refused():
    method = _method(segments=3)
    tensors = method.extra_tensors()
    other = build_method("crdi", method.model, {"segments": 5})
    with pytest.raises(TenshotError, match="embeddings are"):
        other.load_extra_tensors(tensors)
    with pytest.raises(TenshotError, match="must hold embeddings and shots"):
        other.load_extra_tensors({"shots": tensors["shots"]})
    with pytest.raises(TenshotError, match="no embeddings"):
        build_method("crdi", method.model, {}).losses(_batch(0), 0)
