"""Schedules and samplers against diffusers' schedulers, closed forms and analytic denoisers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from conftest import ConstantNoiseDenoiser
from tenshot.diffusion import ddim_invert, ddim_sample, ddpm_sample, dpm_solver_sample, partial_noise, sample_seed
from tenshot.diffusion.schedule import NoiseSchedule, default_scheduler_config
from tenshot.errors import TenshotError

BETA_CONFIGS = {
    "linear": {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02},
    "scaled_linear": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    "squaredcos_cap_v2": {"beta_schedule": "squaredcos_cap_v2"},
}
PREDICTIONS = ("epsilon", "sample", "v_prediction")


def schedule_config(**overrides) -> dict:
    return {**default_scheduler_config(), **overrides}


# --- schedule tables -------------------------------------------------------------------------------


def closed_form_alphas_cumprod(name: str, total: int = 1000) -> np.ndarray:
    """The beta schedules written out independently (Ho et al. 2020; LDM's scaled linear; Nichol & Dhariwal 2021)."""
    if name == "linear":
        betas = np.linspace(0.0001, 0.02, total)
    elif name == "scaled_linear":
        betas = np.linspace(0.00085**0.5, 0.012**0.5, total) ** 2
    else:
        f = lambda t: np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2  # noqa: E731
        t = np.arange(total)
        betas = np.minimum(1 - f((t + 1) / total) / f(t / total), 0.999)
    return np.cumprod(1 - betas)


@pytest.mark.parametrize("name", list(BETA_CONFIGS))
def test_schedule_tables_equal_diffusers(name):
    config = {"num_train_timesteps": 1000, **BETA_CONFIGS[name]}
    schedule = NoiseSchedule(config)
    reference = DDPMScheduler(**config).alphas_cumprod
    assert schedule.alphas_cumprod.shape == (1000,)
    assert torch.equal(schedule.alphas_cumprod.float(), reference)
    np.testing.assert_allclose(schedule.alphas_cumprod.numpy(), closed_form_alphas_cumprod(name), rtol=2e-5)
    assert float(schedule.abar(-1)) == 1.0
    assert float(schedule.abar(999)) == pytest.approx(float(reference[999]))


def test_schedule_rejects_bad_configs():
    with pytest.raises(TenshotError):
        NoiseSchedule(schedule_config(beta_schedule="no-such-schedule"))
    with pytest.raises(TenshotError):
        NoiseSchedule(schedule_config(prediction_type="flow"))
    with pytest.raises(TenshotError):
        NoiseSchedule(schedule_config()).timesteps(0)
    with pytest.raises(TenshotError):
        NoiseSchedule(schedule_config()).timesteps(10, spacing="karras")


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("offset", [0, 1])
def test_timesteps_equal_diffusers(spacing, offset):
    config = {"num_train_timesteps": 1000, "timestep_spacing": spacing, "steps_offset": offset}
    schedule = NoiseSchedule(config)
    scheduler = DDIMScheduler(**config)
    for steps in range(1, 1001):
        scheduler.set_timesteps(steps)
        reference = scheduler.timesteps.tolist()
        # diffusers' float arange sometimes gives `trailing` a stray -1, and leading+offset can reach T:
        # those are invalid indices, which tenshot drops.
        valid = [t for t in reference if 0 <= t < 1000]
        assert schedule.timesteps(steps) == valid, (spacing, steps)
        if valid == reference:
            assert len(valid) == steps


# --- reading a model output ------------------------------------------------------------------------


@pytest.mark.parametrize("prediction_type", PREDICTIONS)
def test_predict_round_trips(prediction_type):
    schedule = NoiseSchedule(schedule_config(prediction_type=prediction_type))
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 3, 4, 4, generator=generator, dtype=torch.float64)
    eps = torch.randn(6, 3, 4, 4, generator=generator, dtype=torch.float64)
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    x_t = schedule.add_noise(x0, eps, t)
    abar = schedule.abar(t, like=x0)
    torch.testing.assert_close(x_t, abar.sqrt() * x0 + (1 - abar).sqrt() * eps)
    target = schedule.target(x0, eps, t)
    expected = {"epsilon": eps, "sample": x0, "v_prediction": abar.sqrt() * eps - (1 - abar).sqrt() * x0}
    torch.testing.assert_close(target, expected[prediction_type])
    prediction = schedule.predict(target, x_t, t)
    torch.testing.assert_close(prediction.eps, eps, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(prediction.x0, x0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(prediction.v, schedule.velocity(x0, eps, t), rtol=1e-9, atol=1e-9)
    again = schedule.from_x0(prediction.x0, x_t, t)
    torch.testing.assert_close(again.eps, eps, rtol=1e-9, atol=1e-9)


# --- samplers against diffusers --------------------------------------------------------------------


class LinearModel:
    """A fixed random "network": a per-pixel channel mix plus a time-dependent bias."""

    def __init__(self, seed: int = 0, dtype=torch.float32):
        generator = torch.Generator().manual_seed(seed)
        self.weight = (torch.eye(3) * 0.8 + 0.1 * torch.randn(3, 3, generator=generator)).to(dtype)
        self.bias = (0.1 * torch.randn(1, 3, 1, 1, generator=generator)).to(dtype)

    def __call__(self, x: torch.Tensor, t) -> torch.Tensor:
        return torch.einsum("oc,bchw->bohw", self.weight, x) + self.bias * (float(t) / 1000.0)


class ModelDenoiser:
    def __init__(self, model, schedule: NoiseSchedule):
        self.model, self.schedule = model, schedule

    def __call__(self, x, t):
        return self.schedule.predict(self.model(x, t), x, torch.tensor([int(t)]))


def assert_steps_close(actual: torch.Tensor, expected: torch.Tensor, t: int, what: str = ""):
    """float64: to 1e-10. float32: diffusers computes ``1 - abar_t / abar_prev`` in float32, which cancels at the
    smallest times (measured 6e-5 at t = 2, 3e-6 from t = 20 on), so 1e-4 below t = 10 and 2e-5 above, relative
    to the sample's scale."""
    if actual.dtype == torch.float64:
        tolerance = 1e-10
    else:
        tolerance = 1e-4 if t < 10 else 2e-5
    error = float((actual - expected).abs().max())
    assert error <= tolerance * (1.0 + float(expected.abs().max())), f"{what} (t={t}): max error {error}"


def start_noise(seed: int = 1, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def noise_list(seed: int, count: int, dtype) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, 4, 4, generator=generator, dtype=dtype) for _ in range(count)]


def diffusers_in(scheduler, dtype):
    """diffusers keeps its tables in float32; for the float64 comparison they are upcast (same values)."""
    if dtype == torch.float64:
        scheduler.alphas_cumprod = scheduler.alphas_cumprod.double()
        for name in ("final_alpha_cumprod", "one"):
            if hasattr(scheduler, name):
                setattr(scheduler, name, torch.as_tensor(getattr(scheduler, name), dtype=torch.float64))
    return scheduler


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("prediction_type", PREDICTIONS)
@pytest.mark.parametrize("eta", [0.0, 0.7])
@pytest.mark.parametrize("clip", [True, False], ids=["clip", "noclip"])
def test_ddim_steps_equal_diffusers(prediction_type, eta, clip, dtype):
    config = schedule_config(prediction_type=prediction_type, clip_sample=clip, timestep_spacing="leading")
    schedule = NoiseSchedule(config)
    scheduler = diffusers_in(DDIMScheduler.from_config({**config, "set_alpha_to_one": True}), dtype)
    model = LinearModel(dtype=dtype)
    steps = 10
    scheduler.set_timesteps(steps)
    timesteps = schedule.timesteps(steps)
    assert timesteps == scheduler.timesteps.tolist()

    # diffusers' trajectory; tenshot gets the same noise from a generator with the same seed
    noises = noise_list(7, steps, dtype)
    x = start_noise(dtype=dtype)
    trajectory = [x]
    for i, t in enumerate(scheduler.timesteps):
        out = scheduler.step(model(x, t), t, x, eta=eta, use_clipped_model_output=True, variance_noise=noises[i])
        x = out.prev_sample
        trajectory.append(x)

    # each of tenshot's steps starts from diffusers' state (the callback hands it back), so step i is
    # compared on the same input; tenshot draws noise only where sigma > 0 (all but the last step when eta > 0)
    seen = []

    def callback(i, t, x_next, prediction):
        assert t == timesteps[i]
        assert_steps_close(x_next, trajectory[i + 1], t, f"step {i}")
        seen.append(i)
        return trajectory[i + 1]

    final = ddim_sample(ModelDenoiser(model, schedule), trajectory[0].clone(), timesteps, eta=eta, callback=callback, generator=torch.Generator().manual_seed(7))
    assert seen == list(range(steps))
    assert torch.equal(final, trajectory[-1])
    free = ddim_sample(ModelDenoiser(model, schedule), trajectory[0].clone(), timesteps, eta=eta, generator=torch.Generator().manual_seed(7))
    assert_steps_close(free, trajectory[-1], 10 if clip else 0, "free-running chain")


DDPM_CASES = [
    *[(p, steps, clip, torch.float64) for p in PREDICTIONS for steps in (None, 10) for clip in (True, False)],
    *[(p, 10, clip, torch.float32) for p in PREDICTIONS for clip in (True, False)],
    ("v_prediction", None, True, torch.float32),
]


@pytest.mark.parametrize("prediction_type,steps,clip,dtype", DDPM_CASES)
def test_ddpm_steps_equal_diffusers(prediction_type, steps, clip, dtype):
    config = schedule_config(prediction_type=prediction_type, clip_sample=clip, timestep_spacing="leading")
    schedule = NoiseSchedule(config)
    scheduler = diffusers_in(DDPMScheduler.from_config(config), dtype)
    model = LinearModel(1, dtype=dtype)
    if steps is None:  # the full training grid, 999 ... 0
        timesteps = list(range(999, -1, -1))
    else:
        scheduler.set_timesteps(steps)
        timesteps = schedule.timesteps(steps)
    assert scheduler.timesteps.tolist() == timesteps

    x = start_noise(3, dtype)
    trajectory = [x]
    reference_generator = torch.Generator().manual_seed(11)
    for t in scheduler.timesteps:
        x = scheduler.step(model(x, t), t, x, generator=reference_generator).prev_sample
        trajectory.append(x)

    def callback(i, t, x_next, prediction):
        assert_steps_close(x_next, trajectory[i + 1], t, f"step {i}")
        return trajectory[i + 1]

    ddpm_sample(ModelDenoiser(model, schedule), trajectory[0].clone(), timesteps, callback=callback, generator=torch.Generator().manual_seed(11))
    if steps is not None and (dtype == torch.float64 or clip):
        free = ddpm_sample(ModelDenoiser(model, schedule), trajectory[0].clone(), timesteps, generator=torch.Generator().manual_seed(11))
        assert_steps_close(free, trajectory[-1], 0, "free-running chain")


@pytest.mark.parametrize("prediction_type", PREDICTIONS)
@pytest.mark.parametrize("steps", [5, 10, 25])
def test_dpm_solver_steps_equal_diffusers(prediction_type, steps):
    """Step by step against ``DPMSolverMultistepScheduler`` (its defaults: 2M, dpmsolver++, midpoint, lower-order
    final, final sigma 0) on its own timesteps. Its ``step`` computes in float32 whatever the input dtype, so the
    comparison is in float32, at float32's tolerance; float64 accuracy is the next test's."""
    config = schedule_config(prediction_type=prediction_type, clip_sample=False)
    schedule = NoiseSchedule(config)
    scheduler = DPMSolverMultistepScheduler.from_config(config)
    scheduler.set_timesteps(steps)
    model = LinearModel(2)
    x = start_noise(4)
    trajectory = [x]
    for t in scheduler.timesteps:
        x = scheduler.step(model(x, t), t, x).prev_sample
        trajectory.append(x)
    timesteps = scheduler.timesteps.tolist()

    def callback(i, t, x_next, prediction):
        assert_steps_close(x_next, trajectory[i + 1], t, f"step {i}")
        return trajectory[i + 1]

    dpm_solver_sample(ModelDenoiser(model, schedule), trajectory[0].clone(), timesteps, callback=callback, clip=False)
    free = dpm_solver_sample(ModelDenoiser(model, schedule), trajectory[0].clone(), timesteps, clip=False)
    assert_steps_close(free, trajectory[-1], 0, "free-running chain")


@pytest.mark.parametrize("prediction_type", PREDICTIONS)
def test_dpm_solver_is_second_order_on_gaussian_data(prediction_type):
    """Data ~ N(mu, s^2): the probability-flow ODE keeps z = (x_t - alpha_t mu) / sqrt(alpha_t^2 s^2 + sigma_t^2)
    constant, so x_T has the exact image mu + s z. DPM-Solver++(2M)'s error falls about 4x per doubling of the
    steps from 10 on (measured 4.4x and 25x), DDIM's (first order) about 2x (1.9x), and at 40 steps it is 40
    times smaller than DDIM's (measured 2.7e-3 against 0.11), in float64."""
    schedule = NoiseSchedule(schedule_config(prediction_type=prediction_type, clip_sample=False, timestep_spacing="trailing"))
    generator = torch.Generator().manual_seed(0)
    mu, s = 0.3 * torch.randn(1, 3, 8, 8, generator=generator, dtype=torch.float64), 0.5
    denoiser = GaussianDenoiser(schedule, mu, s)
    x_T = torch.randn(2, 3, 8, 8, generator=generator, dtype=torch.float64)
    errors = {}
    for steps in (10, 20, 40):
        timesteps = schedule.timesteps(steps)
        abar = float(schedule.abar(timesteps[0]))
        exact = mu + s * (x_T - abar**0.5 * mu) / (abar * s * s + 1 - abar) ** 0.5
        errors[steps] = [float((sample(denoiser, x_T.clone(), timesteps) - exact).abs().max()) for sample in (dpm_solver_sample, ddim_sample)]
    (dpm_10, ddim_10), (dpm_20, ddim_20), (dpm_40, ddim_40) = errors[10], errors[20], errors[40]
    assert dpm_10 / dpm_20 > 3.5 and dpm_20 / dpm_40 > 3.5
    assert 1.5 < ddim_10 / ddim_20 < 2.5 and 1.5 < ddim_20 / ddim_40 < 2.5
    assert dpm_40 < ddim_40 / 20


def test_samplers_reject_unordered_times():
    schedule = NoiseSchedule(schedule_config())
    denoiser = ModelDenoiser(LinearModel(), schedule)
    with pytest.raises(ValueError):
        ddim_sample(denoiser, start_noise(), [100, 500])
    with pytest.raises(ValueError):
        ddpm_sample(denoiser, start_noise(), [500, 500, 0])


# --- DDIM inversion --------------------------------------------------------------------------------


class GaussianDenoiser:
    """The exact posterior-mean denoiser of data ~ N(mu, s^2 I), read through the schedule's prediction type."""

    def __init__(self, schedule: NoiseSchedule, mu: torch.Tensor, s: float):
        self.schedule, self.mu, self.s = schedule, mu, s

    def __call__(self, x, t):
        abar = float(self.schedule.abar(t))
        eps = (1 - abar) ** 0.5 * (x - abar**0.5 * self.mu) / (abar * self.s**2 + 1 - abar)
        x0 = (x - (1 - abar) ** 0.5 * eps) / abar**0.5
        output = {"epsilon": eps, "sample": x0, "v_prediction": abar**0.5 * eps - (1 - abar) ** 0.5 * x0}
        return self.schedule.predict(output[self.schedule.prediction_type], x, torch.tensor([int(t)]))


@pytest.mark.parametrize("spacing", ["trailing", "leading", "linspace"])
def test_ddim_inversion_is_exact_on_straight_trajectories(spacing):
    schedule = NoiseSchedule(schedule_config(clip_sample=False, timestep_spacing=spacing))
    generator = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 8, 8, generator=generator, dtype=torch.float64) * 2 - 1
    denoiser = ConstantNoiseDenoiser(schedule, torch.randn(1, 3, 8, 8, generator=generator, dtype=torch.float64))
    timesteps = schedule.timesteps(50)
    latent = ddim_invert(denoiser, x0, timesteps)
    abar = float(schedule.abar(timesteps[0]))
    torch.testing.assert_close(latent, abar**0.5 * x0 + (1 - abar) ** 0.5 * denoiser.eps.expand_as(x0), rtol=0, atol=1e-9)
    torch.testing.assert_close(ddim_sample(denoiser, latent, timesteps, clip=False), x0, rtol=0, atol=1e-9)


@pytest.mark.parametrize("prediction_type", PREDICTIONS)
def test_ddim_inversion_reconstructs_with_analytic_denoiser(prediction_type):
    """Inversion then sampling with the exact Gaussian denoiser. DDIM is a first-order (Euler) solver, so
    the round trip is exact only in the limit: the max error must stay below 0.25 at 50 steps (measured
    0.19 on the default trailing grid), below 0.07 at 200 steps, and fall about linearly in the step count."""
    schedule = NoiseSchedule(schedule_config(prediction_type=prediction_type, clip_sample=False))
    generator = torch.Generator().manual_seed(0)
    mu = 0.3 * torch.randn(1, 3, 8, 8, generator=generator, dtype=torch.float64)
    x0 = mu + 0.5 * torch.randn(2, 3, 8, 8, generator=generator, dtype=torch.float64)
    denoiser = GaussianDenoiser(schedule, mu, 0.5)
    errors = {}
    for steps in (50, 100, 200):
        timesteps = schedule.timesteps(steps)
        latent = ddim_invert(denoiser, x0, timesteps)
        assert 0.8 < float(latent.std()) < 1.2  # a noise-like latent, not the image
        errors[steps] = float((ddim_sample(denoiser, latent, timesteps, clip=False) - x0).abs().max())
    assert errors[50] < 0.25 and errors[200] < 0.07, errors
    assert errors[100] < 0.6 * errors[50] and errors[200] < 0.6 * errors[100], errors


# --- per-sample seeds, hooks, partial noising, time mapping ----------------------------------------


@pytest.fixture(scope="module")
def tiny_model():
    from tenshot.models.unet import new_model

    torch.manual_seed(0)
    model = new_model("tiny", 16)
    model.unet.eval()
    return model


@pytest.mark.parametrize("sampler,eta", [("ddim", 0.0), ("ddim", 1.0), ("ddpm", 0.0), ("dpm++", 0.0)])
def test_sample_k_of_seed_s_is_independent_of_batch_size(tiny_model, sampler, eta):
    from tenshot.api import generate
    from tenshot.methods.finetune import FineTune

    tiny_model = FineTune(tiny_model).eval()
    runs = {bs: generate(tiny_model, 8, steps=4, sampler=sampler, eta=eta, seed=5, batch_size=bs) for bs in (1, 3, 8)}
    assert runs[1].shape == (8, 16, 16, 3) and runs[1].dtype == np.uint8
    assert np.array_equal(runs[1], runs[3]) and np.array_equal(runs[1], runs[8])
    assert not np.array_equal(runs[1][0], runs[1][1])
    # `start` continues a seed's stream: samples 3.. of seed 5 are samples 0.. of a run started at 3
    assert np.array_equal(generate(tiny_model, 2, steps=4, sampler=sampler, eta=eta, seed=5, start=3), runs[8][3:5])
    assert not np.array_equal(generate(tiny_model, 1, steps=4, sampler=sampler, eta=eta, seed=6), runs[1][:1])
    assert len({sample_seed(5, k) for k in range(100)}) == 100


def test_sampling_calls_default_to_16_images_on_a_cpu(tiny_model, monkeypatch):
    from tenshot.api import default_sample_batch, generate
    from tenshot.methods.finetune import FineTune

    method, calls = FineTune(tiny_model).eval(), []
    sample = method.sample
    monkeypatch.setattr(method, "sample", lambda noise, **kwargs: calls.append(len(noise)) or sample(noise, **kwargs))
    images = generate(method, 20, steps=2, seed=1)
    assert calls == [16, 4]
    assert np.abs(images.astype(int) - generate(method, 20, steps=2, seed=1, batch_size=7)).max() <= 1  # same noise; float sums may round apart
    assert default_sample_batch("cuda") == 64


def test_identity_guidance_changes_nothing_and_callback_replaces_x(tiny_model):
    denoiser = tiny_model.denoiser()
    timesteps = tiny_model.schedule.timesteps(5)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    calls = []

    def identity(x_t, t, prediction):
        calls.append(t)
        return prediction

    for sampler, kwargs in ((ddim_sample, {"eta": 0.5}), (ddpm_sample, {})):
        plain = sampler(denoiser, x.clone(), timesteps, generator=torch.Generator().manual_seed(1), **kwargs)
        guided = sampler(denoiser, x.clone(), timesteps, guidance=identity, generator=torch.Generator().manual_seed(1), **kwargs)
        assert torch.equal(plain, guided)
    assert calls == timesteps * 2

    # guidance that moves x0 is honoured
    shifted = ddim_sample(denoiser, x.clone(), timesteps, guidance=lambda x_t, t, p: tiny_model.schedule.from_x0(p.x0 * 0 + 0.5, x_t, torch.tensor([t])))
    torch.testing.assert_close(shifted, torch.full_like(x, 0.5), rtol=0, atol=1e-4)

    # a callback that replaces x: the next step starts from the replacement
    seen = []

    def replace(i, t, x_next, prediction):
        seen.append((i, t))
        return torch.zeros_like(x_next) if i == 2 else None

    replaced = ddim_sample(denoiser, x.clone(), timesteps, callback=replace)
    restarted = ddim_sample(denoiser, torch.zeros_like(x), timesteps[3:])
    assert seen == list(enumerate(timesteps))
    assert torch.equal(replaced, restarted)
    # returning the final replacement is the sampler's result
    last = ddim_sample(denoiser, x.clone(), timesteps, callback=lambda i, t, x_next, p: torch.ones_like(x_next) if i == 4 else None)
    assert torch.equal(last, torch.ones_like(x))


def test_partial_noise_draws_q_xt_given_x0():
    schedule = NoiseSchedule(schedule_config())
    x0 = torch.rand(4, 3, 8, 8) * 2 - 1
    generators = [torch.Generator().manual_seed(sample_seed(0, k)) for k in range(4)]
    noisy = partial_noise(schedule, x0, 300, generators)
    noise = torch.stack([torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(sample_seed(0, k))) for k in range(4)])
    abar = float(schedule.abar(300))
    torch.testing.assert_close(noisy, abar**0.5 * x0 + (1 - abar) ** 0.5 * noise)
    from tenshot.diffusion import timesteps_from

    times = timesteps_from(schedule, 50, start=300)
    assert times and max(times) <= 300 and times == [t for t in schedule.timesteps(50) if t <= 300]


def test_map_time():
    linear = NoiseSchedule(schedule_config())
    cosine = NoiseSchedule(schedule_config(beta_schedule="squaredcos_cap_v2"))
    assert [linear.map_time(t, linear) for t in range(1000)] == list(range(1000))
    assert linear.map_time(-1, cosine) == -1 and cosine.map_time(-1, linear) == -1  # the clean image stays clean
    assert [cosine.map_time(t, cosine) for t in range(1000)] == list(range(1000))
    for t in (0, 10, 100, 250, 500, 750, 900, 999):
        mapped = cosine.map_time(t, linear)
        target = float(linear.alphas_cumprod[t])
        best = float((cosine.alphas_cumprod - target).abs().min())
        assert abs(float(cosine.alphas_cumprod[mapped]) - target) == pytest.approx(best)
    assert cosine.map_time(500, linear) > 500  # the cosine schedule keeps more signal at equal t
    mapped = [cosine.map_time(t, linear) for t in range(1000)]
    assert mapped == sorted(mapped)  # monotone
