"""Text-to-image DomainStudio and DreamBooth on a tiny random Stable Diffusion pipeline built here from configs
(UNet, VAE, CLIP text encoder and a character-level tokenizer written by the test): CPU, seconds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import write_images
from test_cli import check_bad_result, invoke
from tiny_pipeline import build_tiny_pipeline

PIXELS = 16  # 8 latent pixels, VAE factor 2


@pytest.fixture(scope="module")
def pipeline_folder(tmp_path_factory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("sd") / "pipeline")


@pytest.fixture
def model(pipeline_folder):
    from tenshot.models.unet import load_model

    return load_model(pipeline_folder)


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TENSHOT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_pipeline_folder_loads_as_a_latent_model(model):
    from tenshot.models.text_to_image import TextToImageModel

    assert isinstance(model, TextToImageModel)
    assert model.size == PIXELS and model.noise_shape == (4, PIXELS // 2, PIXELS // 2)
    assert not any(p.requires_grad for p in [*model.vae.parameters(), *model.text_encoder.parameters()])
    images = torch.rand(2, 3, PIXELS, PIXELS) * 2 - 1
    latents = model.encode(images)
    assert latents.shape == (2, 4, PIXELS // 2, PIXELS // 2)
    assert torch.equal(latents, model.encode(images))  # the posterior mean: the same whenever it is computed
    assert model.decode(latents).shape == images.shape
    assert model.embed(["a [v] house", ""]).shape == (2, 16, 32)
    from tenshot.sampling import default_sample_batch

    assert default_sample_batch("cuda", model) == 4 and default_sample_batch("cuda") == 64  # 512 px images: small calls


def test_pipelines_that_take_more_than_latents_and_text_are_refused(pipeline_folder, tmp_path):
    """An inpainting-style UNet (9 input channels) is one clear error at load time, not a traceback at its first call;
    a scheduler config without clip_sample loads unclipped (latents span about +-4)."""
    import shutil

    from diffusers import UNet2DConditionModel

    from tenshot.errors import TenshotError
    from tenshot.models.unet import load_model

    folder = tmp_path / "inpainting"
    shutil.copytree(pipeline_folder, folder)
    config = UNet2DConditionModel.load_config(folder / "unet")
    UNet2DConditionModel.from_config({**config, "in_channels": 9}).save_pretrained(folder / "unet")
    with pytest.raises(TenshotError, match="9 input channels"):
        load_model(folder)
    plain = tmp_path / "no-clip-key"
    shutil.copytree(pipeline_folder, plain)
    scheduler = plain / "scheduler" / "scheduler_config.json"
    scheduler.write_text(json.dumps({k: v for k, v in json.loads(scheduler.read_text()).items() if k != "clip_sample"}))
    assert not load_model(plain).schedule.clip_sample


def test_guidance_scale_one_is_the_conditional_prediction_and_zero_the_unconditional(model):
    from tenshot.methods.text_to_image import GuidedDenoiser

    states = model.embed(["a house", ""])
    x = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    times = torch.full((3,), 500)

    def plain(state):
        return model.schedule.predict(model.unet(x, times, encoder_hidden_states=state.expand(3, -1, -1)).sample, x, times).eps

    with torch.no_grad():
        for scale, expected in ((1.0, plain(states[:1])), (0.0, plain(states[1:]))):
            guided = GuidedDenoiser(model.unet, model.schedule, states[:1], states[1:], scale)(x, 500).eps
            assert torch.allclose(guided, expected, atol=1e-5)


def _batch(seed: int, count: int = 3):
    from tenshot.methods import Batch

    return Batch(images=torch.rand(count, 3, PIXELS, PIXELS, generator=torch.Generator().manual_seed(seed)) * 2 - 1,
                 generator=torch.Generator().manual_seed(seed))  # fmt: skip


def test_domainstudio_terms_vanish_when_the_prompts_agree_at_the_start(model):
    """With the instance prompt equal to the class prompt, the adapted and the frozen source UNets see the same
    inputs before any step: both pairwise KLs are exactly 0, and only the UNet receives gradients."""
    from tenshot.methods import build_method

    method = build_method("domainstudio", model, {"prompt": "a house", "class_prompt": "a house", "gradient_checkpointing": False})
    method.setup(torch.zeros(0))
    method.class_pixels = torch.rand(4, 3, PIXELS, PIXELS) * 2 - 1
    terms = method.losses(_batch(0), 0)
    assert float(terms["image_kl"]) == pytest.approx(0.0, abs=1e-7) and float(terms["hf_kl"]) == pytest.approx(0.0, abs=1e-7)
    assert float(terms["prior"]) > 0 and float(terms["hf_mse"]) > 0
    terms["total"].backward()
    trained = {name for name, p in method.named_parameters() if p.grad is not None}
    assert trained and all(name.startswith("unet.") for name in trained)
    assert {name for name, p in method.named_parameters() if p.requires_grad} == {name for name, _ in method.unet.named_parameters(prefix="unet")}


def test_the_hf_mse_pairs_each_prediction_with_its_own_image(model, monkeypatch):
    """L_hfmse compares the decoded prediction of instance i with instance image i (the official code draws its
    references from a second, independently shuffled loader): permuting the references changes it."""
    from tenshot.methods import build_method, text_to_image

    method = build_method("domainstudio", model, {"prompt": "a [v] house", "class_prompt": "a house", "prior_weight": 0.0, "gradient_checkpointing": False})
    method.setup(torch.zeros(0))
    seen = []
    original = text_to_image.high_frequency
    monkeypatch.setattr(text_to_image, "high_frequency", lambda x: seen.append(x) or original(x))
    batch = _batch(1)
    terms = method.losses(batch, 0)
    adapted_hf, references = original(seen[0].detach()), seen[-1]
    assert torch.equal(references, batch.images)
    assert float(terms["hf_mse"]) == pytest.approx(float(((adapted_hf - original(batch.images)) ** 2).mean()), rel=1e-6)


def test_adapt_then_sample_with_a_prompt_end_to_end(pipeline_folder, tmp_path, isolated_cache):
    from diffusers import StableDiffusionPipeline

    target = write_images(tmp_path / "houses", 4, PIXELS)
    run = tmp_path / "run"
    argv = ["adapt", "--source", pipeline_folder, "--target", target, "--method", "domainstudio", "--prompt", "a [v] house",
            "--class-prompt", "a house", "--steps", "2", "--batch-size", "3", "--checkpoint-every", "1", "--preview-every", "2",
            "--preview-count", "2", "--option", "class_images=3", "--option", "class_steps=2", "--out", run]  # fmt: skip
    status, stdout, stderr = invoke(argv)
    assert status == 0, stderr
    settings = yaml.safe_load((run / "config.yaml").read_text())
    assert settings["options"]["prompt"] == "a [v] house" and settings["train"]["lr"] == 5e-6 and not settings["train"]["flip"]
    assert settings["train"]["weight_decay"] == 0.01 and settings["train"]["grad_clip"] == 0.0
    assert len(list((isolated_cache / "prompt-samples").glob("*.npy"))) == 1
    card = (run / "model" / "README.md").read_text()
    assert "pipeline_tag: text-to-image" in card and "StableDiffusionPipeline" in card

    pipeline = StableDiffusionPipeline.from_pretrained(run / "model")
    assert type(pipeline.scheduler).__name__ == "DDIMScheduler" and not pipeline.scheduler.config.clip_sample
    images = pipeline("a [v] house", num_inference_steps=2, height=PIXELS, width=PIXELS, output_type="np").images
    assert images.shape == (1, PIXELS, PIXELS, 3) and np.isfinite(images).all()

    from tenshot.sampling import load_for_sampling

    assert load_for_sampling(run).source is None  # sampling a run builds no second UNet

    out = tmp_path / "samples"
    status, _, stderr = invoke(["sample", run, "--n", "2", "--steps", "2", "--prompt", "a [v] house", "--guidance-scale", "3", "--out", out])
    assert status == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", "000001.png"]

    finetune = tmp_path / "dreambooth"
    status, _, stderr = invoke([*argv[:6], "finetune", *argv[7:-1], finetune])
    assert status == 0, stderr
    assert len(list((isolated_cache / "prompt-samples").glob("*.npy"))) == 1  # the class images came from the cache

    lora = tmp_path / "lora"
    status, stdout, stderr = invoke([*argv[:6], "lora", *argv[7:-1], lora])
    assert status == 0, stderr
    assert yaml.safe_load((lora / "config.yaml").read_text())["train"]["lr"] == 5e-5 and "adapter:" in stdout
    status, _, stderr = invoke(["sample", lora / "adapter", "--n", "1", "--steps", "2", "--prompt", "a [v] house", "--out", tmp_path / "from-adapter"])
    assert status == 0, stderr


def test_text_to_image_misuse_is_one_line(pipeline_folder, tmp_path, isolated_cache):
    target = write_images(tmp_path / "houses", 4, PIXELS)
    cases = [
        (["adapt", "--source", pipeline_folder, "--target", target, "--out", tmp_path / "a"], "adapt it with --prompt"),
        (["adapt", "--source", pipeline_folder, "--target", target, "--prompt", "a [v] house", "--method", "crdi", "--out", tmp_path / "b"],
         "crdi does not adapt a text-to-image model"),
        (["adapt", "--target", target, "--prompt", "a [v] house", "--out", tmp_path / "c"], "--prompt is for text-to-image sources"),
        (["adapt", "--source", pipeline_folder, "--target", target, "--prompt", " ", "--out", tmp_path / "c2"], "--prompt is empty"),
        (["adapt", "--source", pipeline_folder, "--target", target, "--prompt", "a [v] house", "--method", "domainstudio", "--out", tmp_path / "c3"],
         "give --class-prompt"),
        (["sample", pipeline_folder, "--n", "1", "--out", tmp_path / "d"], "give --prompt"),
        (["sample", "noto-32", "--n", "1", "--prompt", "a house", "--out", tmp_path / "e"], "are for text-to-image models"),
        (["evaluate", pipeline_folder, "--reference", target, "--n", "4", "--out", tmp_path / "f.json"], "give --prompt"),
        (["translate", pipeline_folder, "--input", target, "--out", tmp_path / "g"], "translate takes unconditional models"),
        (["distill", pipeline_folder, "--out", tmp_path / "h"], "distill takes unconditional models"),
    ]  # fmt: skip
    for argv, expected in cases:
        check_bad_result(expected, argv[-1], *invoke(argv))


def test_drawing_class_images_leaves_a_lora_run_as_it_was(model, isolated_cache):
    """The class images are drawn after the method is built: sampling must not unfreeze a LoRA's base, and a fresh
    adapter (B = 0) must not change the cache key, which is the base model's."""
    from tenshot.methods import build_method
    from tenshot.source_images import model_fingerprint, prompt_samples

    base_key = model_fingerprint(model)
    method = build_method("lora", model, {"prompt": "a [v] house", "class_prompt": "a house"})
    trainable = {name for name, p in method.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in name for name in trainable)
    assert model_fingerprint(model) == base_key
    images = prompt_samples(model, "a house", 2, 2, 7.5)
    assert images.shape == (2, PIXELS, PIXELS, 3)
    assert {name for name, p in method.named_parameters() if p.requires_grad} == trainable
    assert np.array_equal(prompt_samples(model, "a house", 2, 2, 7.5), images)  # from the cache


def test_class_images_are_cached_per_sample_size(tmp_path, isolated_cache):
    """The same weights at another sample size (Stable Diffusion at 512 or 768 px) draw other class images; a run at
    the second size must not be handed the first size's from the cache."""
    from tenshot.models.unet import load_model
    from tenshot.source_images import model_fingerprint, prompt_samples

    small, large = (load_model(build_tiny_pipeline(tmp_path / name / "pipeline", pixels)) for name, pixels in (("small", PIXELS), ("large", 2 * PIXELS)))
    assert model_fingerprint(small) == model_fingerprint(large)  # the weights do not say the size
    assert prompt_samples(small, "a house", 2, 2, 7.5).shape == (2, PIXELS, PIXELS, 3)
    assert prompt_samples(large, "a house", 2, 2, 7.5).shape == (2, 2 * PIXELS, 2 * PIXELS, 3)
