"""GDD / GDD-I: the one-step generator's boundary values, GDD-I's frozen weights, the two-phase trainer,
one-step sampling, the distill command end to end, and exact resume."""

from __future__ import annotations

import copy
import json
import math
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from conftest import VENV_BIN, cli_env, interrupt_when, write_images
from tenshot import api
from tenshot.cli import main
from tenshot.config import AdaptConfig, DistillConfig, TrainConfig, save_yaml
from tenshot.diffusion.schedule import NoiseSchedule, default_scheduler_config
from tenshot.errors import TenshotError
from tenshot.methods import build_method, method_options
from tenshot.methods.base import Batch
from tenshot.methods.gdd import GDD, ONE_STEP_KEY, generate_one_step
from tenshot.models.unet import DiffusionModel, new_model, save_model
from tenshot.sampling import load_for_sampling
from tenshot.train.checkpoint import list_checkpoints, load_checkpoint
from tenshot.train.loop import Trainer

SIZE = 16
# the smallest discriminator: EL0 at 32 px, heads of 32 channels (the defaults are 128 px and 512)
FAST = {"resolution": 32, "head_width": 32, "channels": 8, "r1_interval": 2}

# GDD-I on the tiny preset: every resnet 3x3 conv and every sampler conv, weights and biases
FROZEN_TINY = sorted(
    f"{module}.{kind}"
    for module in [
        *(f"down_blocks.0.resnets.0.{conv}" for conv in ("conv1", "conv2")),
        "down_blocks.0.downsamplers.0.conv",
        *(f"down_blocks.1.resnets.0.{conv}" for conv in ("conv1", "conv2")),
        *(f"mid_block.resnets.{i}.{conv}" for i in (0, 1) for conv in ("conv1", "conv2")),
        *(f"up_blocks.0.resnets.{i}.{conv}" for i in (0, 1) for conv in ("conv1", "conv2")),
        "up_blocks.0.upsamplers.0.conv",
        *(f"up_blocks.1.resnets.{i}.{conv}" for i in (0, 1) for conv in ("conv1", "conv2")),
    ]
    for kind in ("weight", "bias")
)


def _model(prediction_type: str = "v_prediction") -> DiffusionModel:
    torch.manual_seed(0)
    return new_model("tiny", SIZE, prediction_type)


def _method(variant: str = "gdd-i", prediction_type: str = "v_prediction", **options) -> GDD:
    model = _model(prediction_type)
    torch.manual_seed(1)
    return build_method("gdd", model, {**FAST, "variant": variant, **options})


def _images(seed: int, count: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, SIZE, SIZE, 3), dtype=np.uint8)


def _train_config(steps: int, **values) -> TrainConfig:
    settings = dict(steps=steps, batch_size=2, lr=1e-3, grad_clip=0.0, flip=False, mixed_precision="no",
                    preview_count=0, checkpoint_every=2, log_every=1)
    return TrainConfig(**{**settings, **values})


class _ConstantUNet(torch.nn.Module):
    """Returns ``value`` whatever the input, and records what it was called with."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = value
        self.calls = []

    def forward(self, x, t):
        self.calls.append((x.clone(), t.clone()))
        return type("Output", (), {"sample": self.value.expand_as(x)})()


# --- the generator ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample", "epsilon"])
def test_generator_is_c_skip_z_plus_c_out_f_at_the_noisiest_time(prediction_type):
    schedule = NoiseSchedule(default_scheduler_config(prediction_type))
    a = float(schedule.alphas_cumprod[-1])  # abar at t* = T - 1 = 999, from the table itself
    output = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64).float()
    unet = _ConstantUNet(output)
    z = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    generated = generate_one_step(DiffusionModel(unet, schedule), z, 999)
    (x_in, t_in), = unet.calls
    assert t_in.tolist() == [999, 999]
    torch.testing.assert_close(x_in, math.sqrt(1 - a) * z)  # sqrt(abar) * 0 + sqrt(1 - abar) * z
    c_skip, c_out = {
        "v_prediction": (math.sqrt(a * (1 - a)), -math.sqrt(1 - a)),
        "sample": (0.0, 1.0),
        "epsilon": (math.sqrt((1 - a) / a), -math.sqrt((1 - a) / a)),
    }[prediction_type]
    torch.testing.assert_close(generated, c_skip * z + c_out * output, rtol=1e-5, atol=1e-5 * max(1.0, abs(c_out)))
    if prediction_type == "v_prediction":  # GDD's boundary: c_skip -> 0, |c_out| -> 1 (linear schedule)
        assert c_skip == pytest.approx(0.0064, abs=1e-4) and c_out == pytest.approx(-1.0, abs=1e-4)


def test_zero_terminal_snr_eps_model_is_refused():
    config = {**default_scheduler_config("epsilon"), "rescale_betas_zero_snr": True}
    model = DiffusionModel(new_model("tiny", SIZE).unet, NoiseSchedule(config))
    assert float(model.schedule.alphas_cumprod[-1]) < 1e-6
    with pytest.raises(TenshotError, match="zero terminal SNR"):
        GDD(model, method_options("gdd", FAST))


@pytest.mark.parametrize("prediction_type", ["v_prediction", "epsilon"])
def test_generator_at_step_zero_is_the_teachers_one_step_x0(prediction_type):
    method = _method(prediction_type=prediction_type)
    teacher = copy.deepcopy(_model(prediction_type).unet)
    schedule = method.model.schedule
    z = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    t = torch.full((3,), 999)
    x_t = (1 - schedule.alphas_cumprod[-1]).sqrt().float() * z
    gain = float(schedule.alphas_cumprod[-1] ** -0.5) if prediction_type == "epsilon" else 1.0  # x0 = (x - s eps) / sqrt(abar)
    with torch.no_grad():
        expected = schedule.predict(teacher(x_t, t).sample, x_t, t).x0
        torch.testing.assert_close(method.generate(z), expected, rtol=1e-5, atol=1e-5 * gain)
        torch.testing.assert_close(method.sample(z), expected.clamp(-1, 1), rtol=1e-5, atol=1e-5 * gain)
    assert method.time == 999 and method.unet.config[ONE_STEP_KEY] == 999


# --- GDD-I freezing -----------------------------------------------------------------------------------------


def test_gdd_i_freezes_exactly_the_resnet_and_sampler_convs():
    method = _method("gdd-i")
    frozen = sorted(name for name, p in method.unet.named_parameters() if not p.requires_grad)
    assert frozen == FROZEN_TINY
    trainable = {name for name, p in method.unet.named_parameters() if p.requires_grad}
    for kept in ("conv_in.weight", "conv_out.weight", "time_embedding.linear_1.weight", "time_embedding.linear_2.bias",
                 "down_blocks.0.resnets.0.time_emb_proj.weight", "down_blocks.0.resnets.0.norm1.weight",
                 "up_blocks.0.resnets.0.conv_shortcut.weight", "mid_block.attentions.0.to_q.weight", "conv_norm_out.weight"):
        assert kept in trainable, kept
    assert all(p.requires_grad for p in _method("gdd").unet.parameters())


@pytest.mark.parametrize("variant", ["gdd-i", "gdd"])
def test_a_few_steps_train_only_the_trainable_parameters(variant, tmp_path):
    method = _method(variant)
    before = {name: p.detach().clone() for name, p in method.named_parameters()}
    trainer = Trainer(method, _images(0), _train_config(3), tmp_path / "run")
    in_optimisers = [{id(p) for group in optimizer.param_groups for p in group["params"]} for optimizer in trainer.optimizers]
    generator_ids, discriminator_ids = in_optimisers
    result = trainer.train()
    assert result.steps == 3 and all(math.isfinite(v) for v in result.final_losses.values())
    params = dict(method.named_parameters())
    frozen = [f"unet.{name}" for name in FROZEN_TINY] if variant == "gdd-i" else []
    for name, p in params.items():
        moved = not torch.equal(p.detach(), before[name])
        if name.startswith("unet."):
            assert (id(p) in generator_ids) == moved == (name not in frozen), name
        elif name.startswith("discriminator.heads."):
            assert id(p) in discriminator_ids and moved, name
        else:  # EL0 and the random projections
            assert not p.requires_grad and not moved and id(p) not in generator_ids | discriminator_ids, name
    assert all(not torch.equal(params[f"unet.{name}"], before[f"unet.{name}"]) for name in ("conv_in.weight", "conv_out.weight"))
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert {"generator/total", "discriminator/total", "discriminator/fake", "discriminator/real"} <= set(log[0])
    assert "discriminator/r1" in log[0] and "discriminator/r1" not in log[1] and "discriminator/r1" in log[2]
    assert [group["betas"] for optimizer in trainer.optimizers for group in optimizer.param_groups] == [(0.0, 0.99)] * 2


def test_losses_follow_the_non_saturating_gan_and_r1():
    method = _method(r1_gamma=0.5)
    twin = copy.deepcopy(method)  # the same state, to recompute R1 by hand
    images = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3)) * 2 - 1
    logits = []
    method.discriminator.register_forward_hook(lambda module, inputs, output: logits.append(output.detach()))
    g = method.losses(Batch(images, torch.Generator().manual_seed(0)), 1, "generator")
    (fake,) = logits
    torch.testing.assert_close(g["total"], torch.log1p(fake.exp()).mean(1).sum() - fake.mean(1).sum())  # softplus(-l)
    logits.clear()
    d = method.losses(Batch(images, torch.Generator().manual_seed(0)), 1, "discriminator")
    fake, real = logits
    assert "r1" not in d
    torch.testing.assert_close(d["total"], torch.log1p(fake.exp()).mean(1).sum() + torch.log1p((-real).exp()).mean(1).sum())

    # an R1 step (step 2 of interval 2): + interval * gamma / 2 * mean_i |d sum_k l_k(x_i) / d x_i|^2
    for phase in ("generator", "discriminator"):  # the twin replays the passes above (spectral norm's power iteration moves)
        twin.losses(Batch(images, torch.Generator().manual_seed(0)), 1, phase)
    d = method.losses(Batch(images, torch.Generator().manual_seed(0)), 2, "discriminator")
    with torch.no_grad():
        twin.discriminator(twin.generate(torch.randn(images.shape, generator=torch.Generator().manual_seed(0))))
    x = images.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(twin.discriminator(x).sum(), x)
    expected = 2 * 0.5 / 2 * gradient.square().sum(dim=(1, 2, 3)).mean()
    torch.testing.assert_close(d["r1"], expected)
    assert d["r1"] > 0 and torch.isclose(d["total"], d["fake"] + d["real"] + d["r1"])


def test_discriminator_gradients_reach_the_images_through_el0():
    """Finite differences of the (eval-mode, float64) discriminator against autograd: the frozen EL0 path is
    differentiable, which R1 and the generator's loss rely on."""
    discriminator = _method().discriminator.eval().double()
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 2 - 1
    direction = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    step = 1e-6  # small enough that no ReLU6 or LeakyReLU kink lies between x - step and x + step
    with torch.no_grad():
        difference = (discriminator(x + step * direction).sum() - discriminator(x - step * direction).sum()) / (2 * step)
    x.requires_grad_(True)
    (gradient,) = torch.autograd.grad(discriminator(x).sum(), x)
    assert float(gradient.abs().max()) > 0
    assert float((gradient * direction).sum()) == pytest.approx(float(difference), rel=1e-6)


# --- sampling -----------------------------------------------------------------------------------------------


def _count_evaluations(method) -> list[int]:
    calls = []
    method.unet.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    return calls


def test_one_step_sampling_shape_determinism_and_one_evaluation():
    method = _method().eval()
    calls = _count_evaluations(method)
    images = api.generate(method, 5, steps=25, seed=3, batch_size=5)
    assert images.shape == (5, SIZE, SIZE, 3) and images.dtype == np.uint8
    assert calls == [5]  # one network evaluation for the whole batch, whatever --steps says
    assert np.array_equal(api.generate(method, 5, seed=3, batch_size=2), images)  # sample k is the same at any batch size
    assert not np.array_equal(api.generate(method, 5, seed=4), images)


# --- the command line ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A tiny 16 px "adapt run": model/ plus a config.yaml that names its target shots."""
    root = tmp_path_factory.mktemp("gdd")
    shots = write_images(root / "shots", 3, SIZE, seed=5)
    run = root / "teacher-run"
    save_model(_model(), run / "model")
    save_yaml(AdaptConfig(source="noto-32", target=str(shots), out=str(run)), run / "config.yaml")
    return run


def _distill(model: Path, out: Path, data: str, steps: int, *extra: str):
    flags = ["--steps", str(steps), "--batch-size", "2", "--mixed-precision", "no", "--checkpoint-every", "2",
             "--preview-every", "2", "--preview-count", "2", "--teacher-samples", "3", "--teacher-steps", "2"]
    options = [part for key, value in FAST.items() for part in ("--option", f"{key}={value}")]
    return CliRunner().invoke(main, ["distill", str(model), "--data", data, "--out", str(out), *flags, *options, *extra])


def test_distill_then_sample_in_one_evaluation(teacher, image_folder, tmp_path):
    run = tmp_path / "distilled"
    result = _distill(teacher, run, str(image_folder), 2)
    assert result.exit_code == 0, result.output
    assert "one-step generator" in result.output
    config = json.loads((run / "model" / "unet" / "config.json").read_text())
    assert config[ONE_STEP_KEY] == 999 and config["_class_name"] == "UNet2DModel"
    extra = load_file(str(run / "method.safetensors"))
    assert extra and all(name.startswith("discriminator.") and ".features." not in name for name in extra)
    assert any(name.startswith("discriminator.heads.") for name in extra)
    assert (run / "samples" / "step-2.png").is_file() and not (run / "teacher").exists()
    # the model card's diffusers snippet draws what tenshot's one-step generator draws from the same noise
    card = (run / "model" / "README.md").read_text()
    snippet = card.split("```python\n")[-1].split("```")[0].replace("PATH/TO/model", str(run / "model"))
    torch.manual_seed(0)
    scope: dict = {}
    exec(snippet, scope)
    noise = torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    generator = load_for_sampling(run)
    with torch.no_grad():
        expected = generate_one_step(generator.model, noise, 999).clamp(-1, 1)
    torch.testing.assert_close(scope["images"].detach(), expected, rtol=1e-5, atol=1e-5)

    result = CliRunner().invoke(main, ["sample", str(run), "--n", "3", "--out", str(tmp_path / "samples")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["000000.png", "000001.png", "000002.png"]
    for reference in (run, run / "model"):  # the run through its config, and the bare model folder by its mark
        method = load_for_sampling(reference)
        assert isinstance(method, GDD) and not method.training
        calls = _count_evaluations(method)
        api.generate(method, 3, steps=25, seed=0)
        assert calls == [3]
    # the exported generator is the EMA, which moved away from the teacher
    exported = load_for_sampling(run)
    assert not torch.equal(exported.unet.conv_out.weight, _model().unet.conv_out.weight)
    # a one-step generator is no diffusion model to adapt: refused before any work
    result = CliRunner().invoke(main, ["adapt", "--source", str(run / "model"), "--target", str(image_folder), "--out", str(tmp_path / "re")])
    assert result.exit_code == 2 and "one-step generator" in result.output and not (tmp_path / "re").exists()


def test_export_of_the_last_checkpoint_is_the_distilled_run(teacher, image_folder, tmp_path):
    """``tenshot export`` of a distillation's checkpoint: the generator's EMA and the discriminator heads, as the run
    itself exported them at its end (what bench/distillation.py scores at every checkpoint)."""
    run = tmp_path / "distilled"
    assert _distill(teacher, run, str(image_folder), 4).exit_code == 0
    result = CliRunner().invoke(main, ["export", str(run), "--step", "4", "--out", str(tmp_path / "step-4")])
    assert result.exit_code == 0, result.output
    for name in ("model/unet/diffusion_pytorch_model.safetensors", "method.safetensors"):
        first, second = load_file(str(run / name)), load_file(str(tmp_path / "step-4" / name))
        assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first), name
    assert isinstance(load_for_sampling(tmp_path / "step-4"), GDD)


def test_ctrl_c_while_drawing_teacher_images_is_one_line_and_keeps_nothing_half_written(teacher, tmp_path):
    out = tmp_path / "stopped"
    process = subprocess.Popen(
        [str(VENV_BIN / "tenshot"), "distill", str(teacher), "--teacher-samples", "100000", "--teacher-steps", "50", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
        # a shell's background job (CI may be one) inherits SIGINT ignored; Ctrl-C reaches a foreground command
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    # the run is prepared when config.yaml exists; a second later the teacher is drawing
    stderr = interrupt_when(process, (out / "config.yaml").is_file, signal.SIGINT, timeout=120, settle=1.0)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == "interrupted: nothing half-written was kept"
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml"]


def test_teacher_and_shots_data(teacher, tmp_path):
    run = tmp_path / "both"
    result = _distill(teacher, run, "teacher+shots", 1)
    assert result.exit_code == 0, result.output
    drawn = sorted(p.name for p in (run / "teacher").iterdir())
    assert drawn == ["000000.png", "000001.png", "000002.png"]
    first = (run / "teacher" / "000000.png").read_bytes()
    # the teacher's images are its own sampler's: sample 0 of seed 0 with the same steps
    expected = api.generate(load_for_sampling(teacher), 1, steps=2, seed=0)
    from tenshot.data import load_domain

    assert np.array_equal(load_domain(run / "teacher", SIZE)[:1], expected)
    result = _distill(teacher, run, "teacher+shots", 2, "--resume")
    assert result.exit_code == 0, result.output
    assert (run / "teacher" / "000000.png").read_bytes() == first
    # shots need an adapt run's config; a bare model folder has none
    result = _distill(teacher / "model", tmp_path / "no-shots", "shots", 1)
    assert result.exit_code == 2 and "not an adapt run" in result.output
    assert not (tmp_path / "no-shots").exists()


def test_bad_options_are_one_line_errors(teacher, tmp_path):
    for extra, message in [(["--option", "variant=gdd-x"], "variant"), (["--option", "resolution=40"], "multiple of 32"),
                           (["--variant", "gdd", "--option", "variant=gdd-i"], "disagree"), (["--ema-half-life", "2"], "ema-half-life")]:
        result = _distill(teacher, tmp_path / "bad", "teacher", 1, *extra)
        assert result.exit_code == 2 and message in result.output, (extra, result.output)
        assert not (tmp_path / "bad").exists()


def test_distill_config_defaults():
    config = DistillConfig()
    assert (config.data, config.method, config.train.batch_size, config.train.grad_clip) == ("teacher", "gdd", 8, 0.0)
    assert config.train.steps == 750 and config.ema_beta() == pytest.approx(0.5 ** (1 / 75))  # half-life 10% of 750 steps
    assert method_options("gdd", {}).variant == "gdd-i"


# --- resume -------------------------------------------------------------------------------------------------


def test_resume_reproduces_the_uninterrupted_run(teacher, image_folder, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert _distill(teacher, straight, str(image_folder), 4).exit_code == 0
    assert _distill(teacher, resumed, str(image_folder), 2).exit_code == 0
    result = _distill(teacher, resumed, str(image_folder), 4, "--resume")
    assert result.exit_code == 0, result.output
    assert [step for step, _ in list_checkpoints(resumed / "checkpoints")] == [2, 4]
    names = sorted(p.name for p in (straight / "checkpoints" / "step-4").iterdir())
    assert names == ["ema.safetensors", "optimizer-discriminator.safetensors", "optimizer-generator.safetensors",
                     "trainable.safetensors", "trainer.json"]
    for name in names[:-1]:
        a, b = load_file(str(straight / "checkpoints" / "step-4" / name)), load_file(str(resumed / "checkpoints" / "step-4" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    trainable = load_checkpoint(straight / "checkpoints" / "step-4")["trainable"]
    assert any(name.endswith("._u") for name in trainable)  # spectral-norm vectors travel with the checkpoint
    assert not any(name[len("unet."):] in FROZEN_TINY for name in trainable)
    for name in ("model/unet/diffusion_pytorch_model.safetensors", "method.safetensors"):
        a, b = load_file(str(straight / name)), load_file(str(resumed / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
