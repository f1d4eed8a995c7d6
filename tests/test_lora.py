"""LoRA: the adapter's function and merge, what trains, the run's adapter folder, loading base + adapter, export
at a checkpoint, and the options of lora and domainstudio's adapter."""

from __future__ import annotations

import json
import re

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from conftest import write_images
from tenshot import api
from tenshot.cli import main
from tenshot.config import LORA_LR, AdaptConfig, ExportConfig, PretrainConfig, TrainConfig
from tenshot.errors import TenshotError
from tenshot.methods import build_method, method_options
from tenshot.models.lora import TARGET_MODULES, add_lora, has_lora, merged
from tenshot.models.unet import load_model, new_model

TRAIN = {"batch_size": 4, "mixed_precision": "no", "log_every": 1, "preview_count": 2, "preview_steps": 2}


def _unet_with_attention():
    torch.manual_seed(0)
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=8, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"))  # fmt: skip


def _output(unet, seed=1):
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return unet(x, torch.tensor([10, 500])).sample


def test_a_new_adapter_changes_nothing_and_only_it_trains():
    unet = _unet_with_attention()
    before = _output(unet)
    add_lora(unet, rank=2, alpha=2)
    assert torch.equal(_output(unet), before)  # B = 0
    trainable = {name for name, p in unet.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in name for name in trainable)
    adapted = {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in trainable}
    assert adapted == {"to_q", "to_k", "to_v", "0", "conv1", "conv2", "conv_shortcut"}  # "0": to_out.0
    assert not any("conv_in" in name or "conv_out" in name or "time_embedding" in name for name in trainable)


def test_the_merged_unet_computes_what_the_adapter_computes():
    unet = _unet_with_attention()
    base_keys = set(unet.state_dict())
    add_lora(unet, rank=2, alpha=4)
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if ".lora_B" in name:
                parameter.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    adapted = _output(unet)
    plain = merged(unet)
    assert not has_lora(plain) and has_lora(unet) and set(plain.state_dict()) == base_keys
    assert not torch.allclose(adapted, _output(_unet_with_attention()), atol=1e-3)
    torch.testing.assert_close(_output(plain), adapted, rtol=1e-4, atol=1e-5)  # W + (alpha / r) B A


def test_lora_and_domainstudio_adapter_options():
    assert method_options("lora", {}).rank == 4 and method_options("lora", {}).adapter == "lora"
    assert method_options("finetune", {}).adapter == "full"
    for method, values, message in (("lora", {"rank": 0}, "lora rank must be an integer >= 1"),
                                    ("lora", {"adapter": "full"}, "lora adapter must be one of lora"),
                                    ("finetune", {"adapter": "dora"}, "finetune adapter must be one of full, lora"),
                                    ("domainstudio", {"adapter": "lora", "rank": 1.5}, "domainstudio rank must be an integer")):  # fmt: skip
        with pytest.raises(TenshotError, match=message):
            method_options(method, values)
    torch.manual_seed(0)
    studio = build_method("domainstudio", new_model("tiny", 8), {"adapter": "lora", "rank": 2})
    studio.setup(torch.zeros(2, 3, 8, 8))
    assert has_lora(studio.unet) and not has_lora(studio.source)
    torch.manual_seed(0)
    base = new_model("tiny", 8).unet.state_dict()  # the adapter's zero B folds away: the copy is the base exactly
    assert base.keys() == studio.source.state_dict().keys() and all(torch.equal(base[k], v) for k, v in studio.source.state_dict().items())
    assert {p.requires_grad for p in studio.source.parameters()} == {False}
    assert all(".lora_" in name for name, p in studio.named_parameters() if p.requires_grad)


@pytest.fixture(scope="module")
def source(tmp_path_factory, image_folder):
    out = tmp_path_factory.mktemp("lora-source") / "pretrain"
    api.pretrain(PretrainConfig(data=str(image_folder), out=str(out), size=16, preset="tiny", train=TrainConfig(steps=2, checkpoint_every=100, **TRAIN)))
    return out


def test_a_lora_run_saves_its_adapter_and_loads_as_base_plus_adapter(source, tmp_path):
    target = write_images(tmp_path / "shots", 4, 16, seed=5)
    run = tmp_path / "run"
    flags = "--steps 4 --lr 1e-2 --checkpoint-every 2 --keep-checkpoints 5 --preview-every 4 --batch-size 4 --mixed-precision no --preview-count 2"
    argv = ["adapt", "--source", str(source), "--target", str(target), "--method", "lora", "--option", "rank=2", "--out", str(run), *flags.split()]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 0, result.output
    adapter = run / "adapter"
    assert f"adapter: {adapter} (0.0" in result.output  # a few kB against the model's
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["r"] == 2 and config["base_model_name_or_path"] == str(source.resolve())
    weights = load_file(adapter / "adapter_model.safetensors")
    assert weights and all(".lora_" in name for name in weights)
    base, final = load_model(source), load_model(run)
    assert set(final.unet.state_dict()) == set(base.unet.state_dict())
    changed = {name for name, value in final.unet.state_dict().items() if not torch.equal(value, base.unet.state_dict()[name])}
    assert changed and all(name.endswith(".weight") and re.fullmatch(TARGET_MODULES, name[: -len(".weight")]) for name in changed)
    again = load_model(adapter)  # the base named by the adapter, the adapter merged in
    for name, value in final.unet.state_dict().items():
        torch.testing.assert_close(again.unet.state_dict()[name], value)
    # a checkpoint exported through the run's method is the run's weights at that step
    exported = api.export(ExportConfig(run=str(run), step=4, out=str(tmp_path / "at-4")))
    assert (exported / "model" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == (run / "model" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert (exported / "adapter" / "adapter_model.safetensors").is_file()
    # sampling folds the run's zero adapters away: the same images, at the plain UNet's cost
    from tenshot.sampling import generate, load_for_sampling

    folded, kept = load_for_sampling(run), load_for_sampling(run, keep_adapters=True)
    assert not has_lora(folded.unet) and has_lora(kept.unet)
    assert (generate(folded, 2, steps=2) == generate(kept, 2, steps=2)).all()
    # sampling a LoRA run through the command
    result = CliRunner().invoke(main, ["sample", str(run), "--n", "2", "--steps", "2", "--out", str(tmp_path / "samples")])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "samples").glob("*.png"))) >= 2


def test_an_adapter_folder_that_is_not_one_is_one_line(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    with pytest.raises(TenshotError, match="names no base model"):
        load_model(folder)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "noto-32", "peft_type": "LORA", "r": 2}))
    with pytest.raises(TenshotError, match="not a readable LoRA adapter"):
        load_model(folder)


def test_a_lora_trains_at_lora_s_learning_rate_unless_told_otherwise():
    assert AdaptConfig(method="lora").train.lr == LORA_LR == 10 * AdaptConfig().train.lr
    assert AdaptConfig(method="domainstudio", options={"adapter": "lora"}).train.lr == LORA_LR
    assert AdaptConfig(method="domainstudio").train.lr == 1e-4
