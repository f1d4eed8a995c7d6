"""The ``tenshot`` command line: parse flags, build a config, call the library, print where results went.

Heavy modules (torch, diffusers) are imported inside commands so ``tenshot --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from .config import METHOD_TRAIN_DEFAULTS, SAMPLERS, TEXT_LORA_LR, TEXT_TRAIN_DEFAULTS, TRANSLATION_ENCODINGS, TRANSLATION_OUTPUTS, AdaptConfig, DemoConfig, DistillConfig, PretrainConfig, SampleConfig, TrainConfig, TranslateConfig, adapt_train_defaults
from .errors import Interrupted, TenshotError


def _training_options(defaults: TrainConfig):
    """The flags every training command shares, with that command's defaults shown by --help."""

    def decorate(command):
        options = [
            click.option("--steps", type=int, default=defaults.steps, show_default=True, help="Optimiser steps."),
            click.option("--batch-size", type=int, default=defaults.batch_size, show_default=True, help="Global batch of one optimiser step."),
            click.option("--lr", type=float, default=defaults.lr, show_default=True, help="AdamW learning rate."),
            click.option("--weight-decay", type=float, default=defaults.weight_decay, show_default=True, help="AdamW weight decay."),
            click.option("--warmup-steps", type=int, default=defaults.warmup_steps, show_default=True, help="Linear learning-rate warm-up."),
            click.option("--grad-accum", type=int, default=defaults.grad_accum, show_default=True, help="Micro-batches per optimiser step."),
            click.option("--grad-clip", type=float, default=defaults.grad_clip, show_default=True, help="Gradient norm clip (0: off)."),
            click.option("--mixed-precision", type=click.Choice(["auto", "no", "bf16", "fp16"]), default=defaults.mixed_precision, show_default=True, help="Autocast precision; auto: bf16 on CUDA and on CPUs with AMX-BF16, else fp32. Losses and EMA stay fp32."),
            click.option("--ema-beta", type=float, default=defaults.ema_beta, show_default=True, help="EMA decay cap; warm-up min(beta, (1+i)/(10+i))."),
            click.option("--flip/--no-flip", default=defaults.flip, show_default=True, help="Random horizontal flips."),
            click.option("--seed", type=int, default=defaults.seed, show_default=True, help="Seed of data order, noise and previews."),
            click.option("--checkpoint-every", type=int, default=defaults.checkpoint_every, show_default=True, help="Steps between checkpoints."),
            click.option("--keep-checkpoints", type=int, default=defaults.keep_checkpoints, show_default=True, help="Checkpoints kept."),
            click.option("--preview-every", type=int, default=defaults.preview_every, show_default=True, help="Steps between fixed-noise sample grids."),
            click.option("--preview-count", type=int, default=defaults.preview_count, show_default=True, help="Images per preview grid (0: no previews)."),
            click.option("--report-to", type=click.Choice(["none", "tensorboard"]), default=defaults.report_to, show_default=True, help="Also log losses and scores to an experiment tracker through Accelerate (RUN/tensorboard/); log.jsonl is always written."),
            click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint."),
        ]
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def _train_config(defaults: TrainConfig, values: dict, given: set[str] | None = None) -> TrainConfig:
    """The training flags taken out of ``values``; with ``given``, flags not in it keep ``defaults``' value."""
    config = TrainConfig(**{**defaults.__dict__})
    for name in list(values):
        if hasattr(config, name):
            value = values.pop(name)
            if given is None or name in given:
                setattr(config, name, value)
    return config


def _given_flags() -> set[str]:
    """The parameters of the running command set on the command line (or by environment), not by default."""
    from click.core import ParameterSource

    context = click.get_current_context()
    return {name for name in context.params if context.get_parameter_source(name) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)}


def _method_defaults_help() -> str:
    """--help text: each method's training defaults that replace the ones shown (config.METHOD_TRAIN_DEFAULTS)."""
    return " ".join(f"{method}: {_defaults_text(values)}." for method, values in METHOD_TRAIN_DEFAULTS.items())


def _defaults_text(values: dict) -> str:
    """``steps 800, lr 5e-06, no-flip``: training settings as their flags would give them."""

    def setting(name, value):
        name = name.replace("_", "-")
        if isinstance(value, bool):
            return name if value else f"no-{name}"
        return f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}"

    return ", ".join(setting(k, v) for k, v in values.items())


def _echo_main(text: str) -> None:
    """Print once per job: only on rank 0 under torchrun or accelerate launch."""
    if os.environ.get("RANK", "0") == "0":
        click.echo(text)


SAMPLER_HELP = ("ddim (with --eta), ddpm (ancestral) or dpm++ (DPM-Solver++(2M), second order, deterministic). Default: dpm++, "
                "or ddim for crdi runs (guidance defined on DDIM steps) and text-to-image pipelines.")
STEPS_HELP = "Sampling steps. Default: 10 for dpm++, which reaches 25-step DDIM's fid-el0 (bench/results/samplers.md), 25 for ddim and ddpm."
DEVICE_OPTION = click.option("--device", default="auto", show_default=True, help="auto (CUDA when present, else the CPU), cpu, cuda or cuda:N.")


def _out_of_memory(error: RuntimeError) -> bool:
    import torch

    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


class TenshotGroup(click.Group):
    """Turns a usage error, :class:`TenshotError` and an out-of-memory (with the advice of a smaller batch) into one line on
    stderr and exit status 2, and an interruption outside the training loop (Ctrl-C while sampling, drawing teacher images, evaluating) into one line and status 130."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as error:  # a bad flag, value or command: one line, not click's usage block
            where = (error.ctx or ctx).command_path
            click.echo(f"error: {error.format_message()} (see {where} --help)", err=True)
            sys.exit(error.exit_code)
        except TenshotError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(error.exit_code)
        except (MemoryError, RuntimeError) as error:  # the host's MemoryError; torch's OutOfMemoryError is a RuntimeError
            if isinstance(error, RuntimeError) and not _out_of_memory(error):
                raise
            detail = str(error).splitlines()[0] if str(error) else "host memory"
            click.echo(f"error: out of memory ({detail}): try a smaller --batch-size", err=True)
            sys.exit(TenshotError.exit_code)
        except Interrupted as stop:
            click.echo(str(stop), err=True)
            sys.exit(130)
        except KeyboardInterrupt:
            click.echo("\ninterrupted: nothing half-written was kept", err=True)
            sys.exit(130)


@click.group(cls=TenshotGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="tenshot")
def main():
    """Few-shot image generation with diffusion models: pretrain, adapt, distill, sample, translate, evaluate."""


PRETRAIN = PretrainConfig()


@main.command()
@click.option("--data", default=PRETRAIN.data, show_default=True, help="Folder of images or emoji:STYLE[:SPLIT] (default split all).")
@click.option("--size", type=int, default=PRETRAIN.size, show_default=True, help="Image size in pixels.")
@click.option("--preset", type=click.Choice(["tiny", "small", "base"]), default=PRETRAIN.preset, show_default=True, help="UNet2DModel preset.")
@click.option("--prediction-type", type=click.Choice(["epsilon", "sample", "v_prediction"]), default=PRETRAIN.prediction_type, show_default=True)
@click.option("--snr-gamma", type=float, default=PRETRAIN.snr_gamma, show_default=True, help="Min-SNR loss weight (0: plain MSE).")
@click.option("--out", required=True, help="Run folder.")
@_training_options(PRETRAIN.train)
def pretrain(**values):
    """Train a diffusion UNet from scratch on a source domain."""
    from . import api

    resume = values.pop("resume")
    train = _train_config(PRETRAIN.train, values)
    config = PretrainConfig(train=train, **values)
    result = api.pretrain(config, resume=resume)
    _echo_main(f"model: {result.model}\nrun: {result.run} ({result.steps} steps, {result.seconds:.0f} s)")


ADAPT = AdaptConfig()


def _parse_options(pairs: tuple[str, ...]) -> dict:
    import yaml

    options = {}
    for pair in pairs:
        if "=" not in pair:
            raise TenshotError(f"--option {pair!r}: expected KEY=VALUE")
        key, value = pair.split("=", 1)
        options[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return options


@main.command(
    help="Adapt a source model to a few target images. Defaults fit about 5 minutes at 32 px on 2 CPU cores "
    "(crdi about 7). A method's own training defaults replace those shown below where the flag is not given: "
    + _method_defaults_help()
    + " Any method with --option adapter=lora: lr 0.001. A text-to-image run (--prompt): "
    + _defaults_text(TEXT_TRAIN_DEFAULTS)
    + f" (a LoRA: lr {TEXT_LORA_LR:g})."
)
@click.option("--source", default=ADAPT.source, show_default=True, help="Source model: run folder, LoRA adapter folder (RUN/adapter: its base with it merged in), diffusers folder, asset name, hub id, or an ADM / denoising-diffusion-pytorch .pt (converted once with convert's defaults, cached).")
@click.option("--target", default=ADAPT.target, show_default=True, help="Folder of target images or emoji:STYLE[:SPLIT] (default split shots).")
@click.option("--method", type=click.Choice(["finetune", "lora", "domainstudio", "phasic", "crdi"]), default=ADAPT.method, show_default=True, help="Adaptation method.")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="A method option (repeatable), e.g. snr_gamma=0.")
@click.option("--source-data", default=None, help="Source-domain images for methods that use them (phasic): folder or emoji:STYLE[:SPLIT] (default split all); default: the dataset the source model's card names, else 1,000 samples of the source model (cached).")
@click.option("--stage", type=click.Choice(["both", "init", "adapt"]), default=None, help="phasic: init (stage 2 alone: fusion initialisation on source images, UNet frozen, cached per source model; no stage 3), adapt (stage 3 from the cached stage 2) or both (default).")
@click.option("--fusion-steps", type=int, default=None, help="phasic: optimiser steps of stage 2 (default 200, batch 8).")
@click.option(
    "--stop-on-copies", type=float, default=None, metavar="SHARE",
    help="Stop at the first preview where more than SHARE of the samples are nearer to a shot than the two closest "
    "shots are to each other (the memorisation monitor, logged at every preview), and export the EMA of the last "
    "preview at or below it. Off by default.",
)  # fmt: skip
@click.option("--prompt", default=None, help="Text-to-image sources (a Stable Diffusion pipeline folder): the instance prompt of the target images, e.g. 'a [V] house'.")
@click.option("--class-prompt", default=None, help="Text-to-image sources: the class prompt whose images the source draws for prior preservation (and domainstudio's distances), e.g. 'a house'.")
@click.option("--out", required=True, help="Run folder.")
@_training_options(ADAPT.train)
def adapt(**values):
    from . import api

    resume = values.pop("resume")
    options = _parse_options(values.pop("options"))
    for flag in ("prompt", "class_prompt", "stage", "fusion_steps"):  # flags that are method options
        if values[flag] is not None:
            options[flag] = values[flag]
        values.pop(flag)
    train = _train_config(adapt_train_defaults(values["method"], options), values, _given_flags())
    config = AdaptConfig(train=train, options=options, **values)
    result = api.adapt(config, resume=resume)
    if result.stopped is not None:
        _echo_main(
            f"stopped on copies at step {result.stopped.step} ({result.stopped.share:.0%} of the previews); "
            f"the model is the EMA of step {result.stopped.kept_step}"
        )
    adapter = result.run / "adapter"
    if adapter.is_dir():
        size = sum(file.stat().st_size for file in adapter.iterdir()) / 2**20
        _echo_main(f"adapter: {adapter} ({size:.2f} MiB; --source {adapter} loads the source with it merged in)")
    _echo_main(f"model: {result.model}\nrun: {result.run} ({result.steps} steps, {result.seconds:.0f} s)\nreport: {result.report}")


@main.command()
@click.argument("run")
@click.option("--step", type=int, required=True, help="The checkpoint to export (checkpoints/step-N).")
@click.option("--out", required=True, help="Run folder to write: config.yaml, model/ and method.safetensors.")
def export(**values):
    """The weights of RUN at a checkpoint (its EMA, as model/ holds at the end) as a run folder that sample,
    evaluate and translate take: an earlier step of a run, such as the last before the memorisation monitor
    saw copies."""
    from . import api
    from .config import ExportConfig

    _echo_main(f"run: {api.export(ExportConfig(**values))}")


@main.command()
@click.argument("checkpoint")
@click.option("--out", required=True, help="Folder to write: a diffusers pipeline folder with a model card.")
@click.option("--image-size", type=int, default=256, show_default=True, help="The size the model was trained at (neither kind of file says).")
@click.option("--num-heads", type=int, default=4, show_default=True, help="ADM: attention heads (guided-diffusion's flag), unless --num-head-channels.")
@click.option("--num-head-channels", type=int, default=-1, show_default=True, help="ADM: channels per attention head (guided-diffusion's 256 px models: 64); wins over --num-heads when > 0.")
@click.option("--use-new-attention-order", is_flag=True, help="ADM: the qkv split before the heads (guided-diffusion's flag; default: the legacy order).")
@click.option("--noise-schedule", type=click.Choice(["linear", "cosine"]), default="linear", show_default=True, help="ADM only.")
@click.option("--diffusion-steps", type=int, default=1000, show_default=True, help="ADM only.")
@click.option("--predict-xstart", is_flag=True, help="ADM: the model predicts x0 (guided-diffusion's flag; default: eps).")
@click.option("--objective", type=click.Choice(["pred_noise", "pred_x0", "pred_v"]), default=None, help="denoising-diffusion-pytorch: the GaussianDiffusion objective (default: read from 2.x's loss_weight; 0.28: pred_noise).")
@click.option("--weights", type=click.Choice(["ema", "model"]), default="ema", show_default=True, help="denoising-diffusion-pytorch: the Trainer's EMA or online weights.")
@click.option("--resnet-block-groups", type=int, default=8, show_default=True, help="denoising-diffusion-pytorch 0.28: GroupNorm groups of the Unet.")
@click.option("--sinusoidal-theta", type=float, default=10000.0, show_default=True, help="denoising-diffusion-pytorch: the time embedding's theta (2.x's sinusoidal_pos_emb_theta).")
def convert(checkpoint, out, objective, weights, resnet_block_groups, sinusoidal_theta, **settings):
    """Convert a CHECKPOINT (.pt) into a diffusers folder that every command takes: a guided-diffusion /
    improved-diffusion (ADM) state dict (the checkpoints of DDPM-PA / DomainStudio and CRDI), or a
    denoising-diffusion-pytorch Trainer checkpoint of 0.28 to 0.31 (Phasic pins 0.28) or 2.x. The architecture is
    read from the tensors, and a denoising-diffusion-pytorch schedule and objective from its buffers; give the
    flags for the rest. Loads with torch.load(weights_only=True)."""
    from . import api
    from .config import ConvertConfig
    from .models.convert import ADMSettings
    from .models.convert_lucidrains import LucidrainsSettings

    lucidrains = LucidrainsSettings(settings["image_size"], objective, weights, resnet_block_groups, sinusoidal_theta)
    folder, summary = api.convert(ConvertConfig(source=checkpoint, out=out, settings=ADMSettings(**settings), lucidrains=lucidrains))
    click.echo(f"model: {folder}\n{summary}")


DISTILL = DistillConfig()


@main.command()
@click.argument("model")
@click.option("--data", default=DISTILL.data, show_default=True, help="Real images for the discriminator: teacher (samples of MODEL, drawn once into RUN/teacher), shots (the target of MODEL, an adapt run), teacher+shots, or a folder / emoji:STYLE[:SPLIT] (default split all).")
@click.option("--variant", type=click.Choice(["gdd-i", "gdd"]), default=None, help="gdd-i: the UNet's resnet and sampler convs frozen (default); gdd: every weight trained.")
@click.option("--teacher-samples", type=int, default=DISTILL.teacher_samples, show_default=True, help="Images drawn from the teacher for --data teacher (about 8 min at 32 px on 2 cores; METHODS.md's 2000 take about 16).")
@click.option("--teacher-steps", type=int, default=DISTILL.teacher_steps, show_default=True, help="DDIM steps of the teacher's samples.")
@click.option("--ema-half-life", type=float, default=DISTILL.ema_half_life, show_default=True, help="EMA half-life as a fraction of --steps (0: use --ema-beta). The decay at step i is min(its beta, (1+i)/(10+i)); the warm-up term, a half-life of about 7.7% of the steps done, is the smaller until about 1.3 x --steps, so above about 0.078 it sets the decay for the whole run.")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="A GDD option (repeatable): r1_gamma, r1_interval, d_lr_scale, resolution, channels, head_width.")
@click.option("--out", required=True, help="Run folder.")
@_training_options(DISTILL.train)
def distill(model, variant, ema_half_life, **values):
    """Distil MODEL (run folder, diffusers folder, asset name or hub id) into a one-step generator with GDD:
    the UNet's x0-prediction at its noisiest time, trained with a GAN loss against a projected EfficientNet-Lite0
    discriminator (R1, Adam beta1 = 0; --lr is the generator's, the discriminator's is --lr times d_lr_scale).
    `tenshot sample RUN` then takes one network evaluation per image. Defaults (GDD-I, 750 steps of batch 8 on
    1000 teacher samples of 25 DDIM steps) take about 25 minutes at 32 px on 2 CPU cores."""
    from . import api

    resume = values.pop("resume")
    train = _train_config(DISTILL.train, values)
    options = _parse_options(values.pop("options"))
    if variant is not None:
        if options.get("variant", variant) != variant:
            raise TenshotError(f"--variant {variant} and --option variant={options['variant']} disagree")
        options["variant"] = variant
    config = DistillConfig(model=model, train=train, options=options, ema_half_life=ema_half_life or None, **values)
    result = api.distill(config, resume=resume)
    _echo_main(f"model: {result.model} (one-step generator)\nrun: {result.run} ({result.steps} steps, {result.seconds:.0f} s)")


SAMPLE = SampleConfig()


@main.command()
@click.argument("model")
@click.option("--n", type=int, default=SAMPLE.n, show_default=True, help="Number of images.")
@click.option("--steps", type=int, default=SAMPLE.steps, help=STEPS_HELP + " A one-step generator from distill takes one.")
@click.option("--sampler", type=click.Choice(SAMPLERS), default=SAMPLE.sampler, help=SAMPLER_HELP)
@click.option("--eta", type=float, default=SAMPLE.eta, show_default=True, help="DDIM eta (0: deterministic); above 0 without --sampler, the sampler is ddim.")
@click.option("--seed", type=int, default=SAMPLE.seed, show_default=True, help="Image k uses seed (seed, k) at any batch size.")
@click.option("--batch-size", type=int, default=None, help="Images per sampling call (default: 16 on a CPU, 64 on an accelerator); image k's noise does not depend on it.")
@DEVICE_OPTION
@click.option("--prompt", default=None, help="Text-to-image models: the prompt (default: a run's instance prompt).")
@click.option("--guidance-scale", type=float, default=None, help="Text-to-image models: classifier-free guidance scale (default: the run's, 7.5).")
@click.option("--from-source", is_flag=True, help="Draw the images from the run's source model and translate them with the run through fresh noise, "
              "the Phasic code's sampler (= sample SOURCE, then translate RUN --encode noise --eta 1, same seed): the Phasic paper's way to generate, and phasic's fair generator "
              "(its own noise-to-image samples lose diversity; README).")
@click.option("--out", required=True, help="Folder for 000000.png, ...; the grid goes to OUT.png.")
def sample(model, **values):
    """Draw images from MODEL (run folder, diffusers folder, Stable Diffusion pipeline folder, asset name, hub id, or
    a .pt checkpoint that convert reads, converted once with its defaults)."""
    from . import api

    result = api.sample(SampleConfig(model=model, **values), progress=True)
    click.echo(f"samples: {result.folder} ({result.count} images, {result.count / result.seconds:.1f} img/s)\ngrid: {result.grid}")


TRANSLATE = TranslateConfig()


@main.command()
@click.argument("model")
@click.option("--input", "input_", required=True, help="Source-domain images: folder or emoji:STYLE[:SPLIT] (default split all).")
@click.option("--out", required=True, help="Folder for the translations, named as the inputs (as .png); the grid goes to OUT.png.")
@click.option("--n", type=int, default=None, help="Translate the first N inputs only (default all).")
@click.option("--start", type=int, default=TRANSLATE.start, show_default=True, help="Noise level to start from, as a time of the Phasic paper's cosine schedule (mapped to the model's: 600 -> 324 on linear).")
@click.option("--steps", type=int, default=TRANSLATE.steps, show_default=True, help="Denoising steps from --start.")
@click.option("--encode", type=click.Choice(TRANSLATION_ENCODINGS), default=TRANSLATE.encode, show_default=True, help="How each input reaches --start: source, the DDIM encoding by the model the run was adapted from (DDIB, with --eta 0; loads that model); noise, a fresh draw of q(x_t | x) (the Phasic code's, with --eta 1).")
@click.option("--eta", type=float, default=TRANSLATE.eta, show_default=True, help="DDIM eta (0: deterministic; 1: the Phasic code's stochastic sampler).")
@click.option("--sampler", type=click.Choice(["ddim", "dpm++"]), default=TRANSLATE.sampler, show_default=True, help="ddim (with --eta), or DPM-Solver++(2M), deterministic (fewer --steps).")
@click.option("--guidance-end", type=int, default=TRANSLATE.guidance_end, show_default=True, help="Structure guidance while the next time is above this (cosine time; >= --start: off).")
@click.option("--filter-factor", type=int, default=None, help="Low-pass factor N of the structure guidance (default: the paper's 8 at 256 px scaled to the image size, 1 at 32 px).")
@click.option("--style-repeats", type=int, default=TRANSLATE.style_repeats, show_default=True, help="Style-enhancement repeats M per guided step.")
@click.option("--output", type=click.Choice(TRANSLATION_OUTPUTS), default=TRANSLATE.output, show_default=True, help="final x0, or the code's x0-prediction at t~359 (cosine).")
@click.option("--seed", type=int, default=TRANSLATE.seed, show_default=True, help="Image k uses seed (seed, k) at any batch size.")
@click.option("--batch-size", type=int, default=TRANSLATE.batch_size, show_default=True)
@DEVICE_OPTION
def translate(model, input_, **values):
    """Translate source-domain images with MODEL (a run; phasic: its content fusion and structure guidance; other
    methods: the same guided partial denoising with their UNet), keeping file names."""
    from . import api

    result = api.translate(TranslateConfig(model=model, input=input_, **values), progress=True)
    click.echo(f"translations: {result.folder} ({result.count} images, {result.count / max(result.seconds, 1e-9):.1f} img/s)\ngrid: {result.grid}")


DEMO = DemoConfig()


@main.command()
@click.option("--source", default=DEMO.source, show_default=True, help="Source model.")
@click.option("--target", default=DEMO.target, show_default=True, help="Target shots: folder or emoji:STYLE.")
@click.option("--steps", type=int, default=DEMO.train.steps, show_default=True, help="Adaptation steps.")
@click.option("--n", type=int, default=DEMO.n, show_default=True, help="Images to sample.")
@click.option("--seed", type=int, default=DEMO.train.seed, show_default=True)
@click.option("--out", default="", help="Run folder (default runs/demo-DATE-TIME).")
def demo(source, target, steps, n, seed, out):
    """The main job: adapt noto-32 to 10 OpenMoji shots, sample 64 images, write a grid (under 10 minutes on 2 cores)."""
    from . import api

    train = TrainConfig(**{**DEMO.train.__dict__, "steps": steps, "seed": seed})
    config = DemoConfig(source=source, target=target, out=out, n=n, train=train)
    click.echo(f"adapting {source} to {target} with {config.method} for {steps} steps, then sampling {n} images")
    result = api.demo(config)
    click.echo(f"run: {result.run} (adapted in {result.adapt_seconds:.0f} s)")
    click.echo(f"training grids: {result.run / 'samples'}")
    click.echo(f"samples: {result.samples} ({n} images in {result.sample_seconds:.0f} s)")
    click.echo(f"grid: {result.grid}")
    click.echo(f"report: {result.report}")


@main.group()
def data():
    """Datasets: render EmojiShift domains to PNG folders."""


@data.command()
@click.argument("domain")
@click.option("--size", type=int, default=32, show_default=True)
@click.option("--split", type=click.Choice(["all", "shots", "train", "reference"]), default="all", show_default=True)
@click.option("--out", required=True, help="Folder to write PNGs into.")
def render(domain, size, split, out):
    """Write the images of DOMAIN (emoji:STYLE) as PNGs named by codepoints."""
    import shutil

    from .data.domains import domain_files, is_emoji_domain
    from .data.emoji import STYLES

    if not is_emoji_domain(domain):
        raise TenshotError(f"{domain}: expected emoji:STYLE (one of {', '.join(STYLES)})")
    if ":" in domain[len("emoji:"):]:
        raise TenshotError(f"{domain}: give the split with --split, not in the domain")
    files = domain_files(f"{domain}:{split}", size)
    target = Path(out)
    if target.exists() and not target.is_dir():
        raise TenshotError(f"{target}: exists and is not a folder")
    target.mkdir(parents=True, exist_ok=True)
    for file in files:
        shutil.copyfile(file, target / file.name)
    click.echo(f"{len(files)} images: {target}")


from .config import EvaluateConfig  # noqa: E402  (kept inside the evaluate block)

EVALUATE = EvaluateConfig()


@main.command()
@click.argument("samples")
@click.option("--reference", required=True, help="Folder of real images or emoji:STYLE[:SPLIT] (default split reference).")
@click.option("--shots", default=None, help="Folder of the shots or emoji:STYLE[:SPLIT] (default split shots); adds the shot-based metrics.")
@click.option("--features", default=",".join(EVALUATE.features), show_default=True, help="Comma list of feature networks: el0, and the optional inception, clip, vgg.")
@click.option("--n", type=int, default=None, help="First N images of a folder (default all), or N samples of a model (default 1000).")
@click.option("--size", type=int, default=None, help="Size every image set is loaded at (default: the samples' size; 32 for emoji samples).")
@click.option("--steps", type=int, default=EVALUATE.steps, help="When SAMPLES is a model: " + STEPS_HELP)
@click.option("--sampler", type=click.Choice(SAMPLERS), default=EVALUATE.sampler, help="When SAMPLES is a model: " + SAMPLER_HELP)
@click.option("--seed", type=int, default=EVALUATE.seed, show_default=True, help="Sampling seed when SAMPLES is a model.")
@click.option("--batch-size", type=int, default=EVALUATE.batch_size, show_default=True)
@DEVICE_OPTION
@click.option("--out", required=True, help="metrics.json to write.")
def evaluate(samples, features, **values):
    """Score SAMPLES (image folder, emoji:STYLE[:SPLIT], or a model to sample from) with FID/KID/precision/recall
    on EL0 features, intra-cluster diversity and nearest-shot distances (with --shots), and SWD."""
    from .metrics.evaluate import evaluate as run_evaluate

    names = [name.strip() for name in features.split(",") if name.strip()]
    result = run_evaluate(EvaluateConfig(samples=samples, features=names, **values), progress=True)
    for key, value in result.metrics.items():
        click.echo(f"{key:<18} {value:>10}" if isinstance(value, int) else f"{key:<18} {value:>10.4f}")
    click.echo(f"metrics: {result.path} ({result.seconds:.0f} s)")


from .config import ReportConfig  # noqa: E402  (kept inside the report block)

REPORT = ReportConfig()


@main.command()
@click.argument("run")
@click.option("--metrics", multiple=True, metavar="FILE", help="A metrics.json to tabulate beside RUN/metrics.json (repeatable).")
@click.option("--samples", default=None, help="Folder of samples to show beside their nearest shots (default: RUN/generated/, else the last training grid, else drawn from RUN).")
@click.option("--n", type=int, default=REPORT.n, show_default=True, help="Samples shown beside their nearest shots.")
@click.option("--steps", type=int, default=REPORT.steps, show_default=True, help="DDIM steps when the samples must be drawn.")
@click.option("--seed", type=int, default=REPORT.seed, show_default=True, help="Seed when the samples must be drawn.")
@DEVICE_OPTION
def report(run, metrics, **values):
    """Write RUN/report.html: config, loss curves, training grids, metrics, samples beside their nearest shots.
    One static file (images embedded) that opens offline; pretrain, adapt, distill and demo write it too."""
    from .run_report import write_report  # api.report without api's torch import: a bad RUN fails at once

    result = write_report(ReportConfig(run=run, metrics=list(metrics), **values))
    click.echo(f"report: {result.path} ({result.seconds:.1f} s)")


if __name__ == "__main__":
    main()
