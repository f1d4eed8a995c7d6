"""The Python API: every command is a function taking its config dataclass and returning a small result."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .cache import replace_folder
from .config import AdaptConfig, ConvertConfig, DemoConfig, DistillConfig, ExportConfig, PretrainConfig, ReportConfig, SampleConfig, TrainConfig, TranslateConfig
from .errors import TenshotError
from .runs import RUN_CONFIG, occupied, prepare_run, read_run_config, write_weights
from .sampling import default_sample_batch, generate, load_for_sampling, resolve_device, sampler_choice, translate_images, write_samples


# pretrain reads a domain whose decoded images would take more than this from disk, batch by batch
STREAM_ABOVE_BYTES = 256 * 2**20


@dataclass
class RunResult:
    """Where a training command wrote its results, and what it measured."""

    run: Path
    model: Path
    steps: int
    seconds: float
    final_losses: dict[str, float] = field(default_factory=dict)
    report: Path | None = None  # report.html, written by the main process
    stopped: object | None = None  # a tenshot.train.loop.CopyStop when stop_on_copies ended the run


@dataclass
class SampleResult:
    folder: Path
    grid: Path
    count: int
    seconds: float


def _train_and_export(method, images: np.ndarray, train: TrainConfig, out: Path, resume: bool, monitor=None, stop_on_copies: float | None = None) -> RunResult:
    from .train.loop import Trainer

    trainer = Trainer(method, images, train, out, resume=resume, monitor=monitor, stop_on_copies=stop_on_copies)
    result = trainer.train()
    if trainer.is_main:
        result.ema.copy_to(method.averaged_module())
        write_weights(method, out)
    page = report(ReportConfig(run=str(out))).path if trainer.is_main else None
    trainer.accelerator.wait_for_everyone()
    return RunResult(run=out, model=out / "model", steps=result.steps, seconds=result.seconds, final_losses=result.final_losses, report=page, stopped=result.stopped)


def export(config: ExportConfig) -> Path:
    """Write ``config.out``: a copy of the run's ``config.yaml`` and the weights of its checkpoint at ``config.step``,
    its trainable parameters and EMA loaded into the run's method and exported as :func:`_train_and_export`
    exports the last step (``model/`` and ``method.safetensors``). A run's EMA at step N equals the final weights
    of the same run trained for N steps when nothing in it depends on the total (adapt's constant learning rate
    after warm-up 0): one long run gives a budget curve."""
    from .models.ema import EMA
    from .train.checkpoint import list_checkpoints, load_checkpoint

    config.validate()
    run, out = Path(config.run), Path(config.out)
    steps = dict(list_checkpoints(run / "checkpoints"))
    if config.step not in steps:
        raise TenshotError(f"{run}: no checkpoint of step {config.step} (checkpoints: {', '.join(map(str, sorted(steps))) or 'none'})")
    if occupied(out):
        raise TenshotError(f"{out}: folder exists and is not empty; choose another --out")
    method = load_for_sampling(run, keep_adapters=True)
    state = load_checkpoint(steps[config.step])
    tensors = dict(method.named_parameters()) | dict(method.named_buffers())  # a checkpoint's trainable state holds both
    with torch.no_grad():
        for name, value in state["trainable"].items():
            if name in tensors:
                tensors[name].copy_(value)
    ema = EMA(method.averaged_module())
    try:
        ema.load_state_dict(state["ema"])
    except (KeyError, ValueError) as error:
        raise TenshotError(f"{steps[config.step]}: checkpoint does not match the run's method ({error})") from None
    ema.copy_to(method.averaged_module())

    def write(staging: Path) -> None:
        shutil.copyfile(run / RUN_CONFIG, staging / RUN_CONFIG)
        write_weights(method, staging)

    replace_folder(out, write)
    return out


def convert(config: ConvertConfig) -> tuple[Path, str]:
    """Write ``config.out``: a guided-diffusion / improved-diffusion (ADM) state dict or a denoising-diffusion-pytorch
    checkpoint ``config.source`` as a diffusers pipeline folder with a model card naming where it came from
    (:mod:`tenshot.models.checkpoints`). Returns the folder and a line on what it holds."""
    from .models.checkpoints import write_converted

    source, out = Path(config.source), Path(config.out)
    if not source.is_file():
        raise TenshotError(f"{source}: no such checkpoint file")
    if occupied(out):
        raise TenshotError(f"{out}: folder exists and is not empty; choose another --out")
    summary, _ = write_converted(source, out, config.settings, config.lucidrains)
    return out, summary


def pretrain(config: PretrainConfig, resume: bool = False) -> RunResult:
    """Train a UNet preset from scratch on ``config.data`` (the source model of later adaptations)."""
    from .data import load_domain
    from .methods.finetune import FineTune, FineTuneOptions
    from .models.unet import new_model

    config.validate()
    out = Path(config.out)
    images = load_domain(config.data, config.size, default_split="all", minimum=1, stream_above=STREAM_ABOVE_BYTES)
    torch.manual_seed(config.train.seed)
    model = new_model(config.preset, config.size, config.prediction_type)
    prepare_run(out, config, resume)
    method = FineTune(model, FineTuneOptions(snr_gamma=config.snr_gamma))
    return _train_and_export(method, images, config.train, out, resume)


def adapt(config: AdaptConfig, resume: bool = False) -> RunResult:
    """Adapt ``config.source`` to the images of ``config.target`` with ``config.method``."""
    from .data import load_domain
    from .data.images import to_tensor
    from .methods import build_method, is_one_step, method_options
    from .models.text_to_image import TextToImageModel
    from .models.unet import load_model

    config.validate()
    prompted = "prompt" in config.options  # a text-to-image run (--prompt)
    if prompted and not str(config.options["prompt"] or "").strip():
        raise TenshotError("--prompt is empty: give the target images' prompt, e.g. 'a [V] house'")
    method_options(config.method, config.options, text=prompted)  # a bad method or option fails before any work
    out = Path(config.out)
    model = load_model(config.source)
    if isinstance(model, TextToImageModel) != prompted:
        raise TenshotError(
            f"{config.source}: a text-to-image pipeline; adapt it with --prompt (and --class-prompt)" if not prompted
            else f"--prompt is for text-to-image sources (a Stable Diffusion pipeline folder); {config.source} is unconditional"
        )  # fmt: skip
    if is_one_step(model.unet):
        raise TenshotError(f"{config.source}: a one-step generator (tenshot distill), not a diffusion model; adapt its teacher instead")
    images = load_domain(config.target, model.size, default_split="shots", minimum=1)
    if config.stop_on_copies is not None and len(images) < 2:
        raise TenshotError(f"{config.target}: --stop-on-copies compares samples with the spacing of the shots; it needs at least 2 images")
    torch.manual_seed(config.train.seed)  # a method's random initial state (CRDI's embeddings) follows --seed
    method = build_method(config.method, model, config.options)
    source = None
    if method.needs_source_images:
        from .source_images import load_source_images

        source = load_source_images(config.source_data, config.source, model, method.needs_source_images)
        method.source_images = to_tensor(source)
    elif config.source_data:
        raise TenshotError(f"--source-data is for methods that use source images (phasic); {config.method} does not")
    method.setup(to_tensor(images))
    prepare_run(out, config, resume)
    if method.needs_class_images:
        method.class_pixels = to_tensor(_class_images(model, method.options))
    initialisation = method.initialisation()
    if initialisation is not None:
        initialised_alone = _initialise(method, initialisation, source, config, out, resume)
        if initialised_alone is not None:
            return initialised_alone
    monitor = _copy_monitor(images, config)
    return _train_and_export(method, images, config.train, out, resume, monitor, config.stop_on_copies)


def _class_images(model, options) -> np.ndarray:
    """A text-to-image run's class images (:func:`tenshot.source_images.prompt_samples`): drawn once by the main
    process on the training device and cached, then read from the cache by every process."""
    from .source_images import prompt_samples
    from .train.loop import distributed_state

    state = distributed_state()
    draw = (model, options.class_prompt, options.class_images, options.class_steps, options.guidance_scale)
    if state.is_main_process:
        prompt_samples(*draw, device=state.device)
    state.wait_for_everyone()
    return prompt_samples(*draw, device=state.device)


def _refuse_text_to_image(model, reference: str, command: str) -> None:
    from .models.text_to_image import TextToImageModel

    if isinstance(model, TextToImageModel):
        raise TenshotError(f"{reference}: a text-to-image pipeline; {command} takes unconditional models (adapt, sample and evaluate take both)")


def _copy_monitor(shots: np.ndarray, config: AdaptConfig):
    """The memorisation monitor of an adapt run (:mod:`tenshot.metrics.memorisation`), on the main process
    whenever the run previews."""
    from .metrics.memorisation import CopyMonitor
    from .train.loop import distributed_state

    if config.train.preview_count == 0 or not distributed_state().is_main_process:
        return None
    return CopyMonitor(shots)


TEACHER_FOLDER = "teacher"


def _adapt_run_shots(reference: str) -> str:
    """The target domain an adapt run was trained on (its ``config.yaml``), for ``distill --data shots``."""
    target = (read_run_config(reference) or {}).get("target")
    if not target:
        raise TenshotError(f"--data shots: {reference} is not an adapt run whose config.yaml names its target; give the shots as a folder")
    return str(target)


def _teacher_samples(config: DistillConfig, out: Path, size: int) -> np.ndarray:
    """``config.teacher_samples`` images of the teacher's own sampler, drawn once into ``out/teacher`` (by the
    main process; a resumed run reads them back, the same pixels)."""
    from .data import load_domain
    from .data.images import list_images
    from .train.loop import distributed_state

    folder = out / TEACHER_FOLDER
    state = distributed_state()
    if state.is_main_process and not folder.is_dir():
        teacher = load_for_sampling(config.model, state.device)
        with torch.no_grad():
            images = generate(teacher, config.teacher_samples, steps=config.teacher_steps, seed=config.train.seed, progress=True)
        write_samples(images, folder)
    state.wait_for_everyone()
    count = len(list_images(folder))
    if count != config.teacher_samples:
        raise TenshotError(f"{folder}: {count} images, the run draws {config.teacher_samples}; delete the folder to draw them again")
    return load_domain(folder, size)


def distill(config: DistillConfig, resume: bool = False) -> RunResult:
    """Distil ``config.model`` into a one-step generator with GDD (:mod:`tenshot.methods.gdd`) on ``config.data``."""
    import dataclasses

    from .data import load_domain
    from .methods import build_method, method_options
    from .models.unet import load_model

    config.validate()
    method_options(config.method, config.options)
    out = Path(config.out)
    model = load_model(config.model)
    _refuse_text_to_image(model, config.model, "distill")
    teacher = config.data in ("teacher", "teacher+shots")
    if config.data in ("shots", "teacher+shots"):
        given = load_domain(_adapt_run_shots(config.model), model.size, default_split="shots")
    elif not teacher:
        given = load_domain(config.data, model.size, default_split="all")
    else:
        given = None
    prepare_run(out, config, resume)
    parts = [_teacher_samples(config, out, model.size)] if teacher else []
    images = np.concatenate(parts + ([given] if given is not None else []))
    torch.manual_seed(config.train.seed)
    method = build_method(config.method, model, config.options)
    train = dataclasses.replace(config.train, ema_beta=config.ema_beta())
    return _train_and_export(method, images, train, out, resume)


def _initialise(method, initialisation, source: np.ndarray, config: AdaptConfig, out: Path, resume: bool) -> RunResult | None:
    """Run or load the method's initialisation stage (:mod:`tenshot.train.initialisation`) in ``out/NAME``, or in
    ``out`` when the run is that stage alone; then the result of such a run, else None."""
    from .source_images import model_fingerprint
    from .train.initialisation import initialise
    from .train.loop import distributed_state

    folder = out if initialisation.alone else out / initialisation.name
    done = initialise(method, initialisation, source, model_fingerprint(method.model), config.train, folder, resume)
    if not initialisation.alone:
        return None
    if distributed_state().is_main_process:
        write_weights(method, out)
    return RunResult(run=out, model=out / "model", steps=done.steps, seconds=done.seconds, final_losses=done.final_losses)


def sample(config: SampleConfig, progress: bool = False) -> SampleResult:
    """Draw ``config.n`` images from a model or run into ``config.out``."""
    import time


    config.validate()
    out = Path(config.out)
    if occupied(out):
        raise TenshotError(f"{out}: folder exists and is not empty; choose another --out")
    source = _run_source(config.model) if config.from_source else None
    device = resolve_device(config.device)
    method = load_for_sampling(config.model, device)
    if hasattr(method, "prompted"):
        if source is not None:
            raise TenshotError(f"--from-source translates unconditional samples; {config.model} is a text-to-image model")
        method.prompted(config.prompt, config.guidance_scale)
    elif config.prompt is not None or config.guidance_scale is not None:
        raise TenshotError(f"--prompt and --guidance-scale are for text-to-image models; {config.model} is unconditional")
    started = time.perf_counter()
    with torch.no_grad():
        if source is None:
            sampler, steps = sampler_choice(method, config.sampler, config.steps, config.eta)
            images = generate(method, config.n, steps=steps, sampler=sampler, eta=config.eta, seed=config.seed, batch_size=config.batch_size, progress=progress)
        else:
            images = _translated_source_samples(method, source, config, device, progress)
    seconds = time.perf_counter() - started
    folder, grid = write_samples(images, out)
    return SampleResult(folder=folder, grid=grid, count=len(images), seconds=seconds)


def _run_source(run: str, required: bool = True) -> str | None:
    """The source model an adapt run was made from (its ``config.yaml``): for ``sample --from-source``, which
    requires one, and ``translate --encode source`` (None for a model that is not a run)."""
    source = (read_run_config(run, required=required) or {}).get("source")
    if not source and required:
        raise TenshotError(f"{run}: --from-source needs a run made by tenshot adapt (its config.yaml names no source model)")
    return str(source) if source else None


def _translated_source_samples(method, source: str, config: SampleConfig, device, progress: bool) -> np.ndarray:
    """``sample --from-source``: ``config.n`` samples of ``source`` (``config``'s steps, sampler, eta and seed)
    translated by the run with the same seed through :func:`~tenshot.config.generation_translation`, as ``tenshot
    sample SOURCE`` then ``tenshot translate RUN --encode noise --eta 1`` would: the Phasic paper's protocol, which
    generates by translating source-domain samples."""
    from .config import generation_translation

    settings = generation_translation()
    settings.check(method.model.size)
    source_model = load_for_sampling(source, device)
    _refuse_text_to_image(source_model.model, source, "sample --from-source")
    if source_model.model.size != method.model.size:
        raise TenshotError(f"{source}: {source_model.model.size} px, the run {config.model} is {method.model.size} px")
    sampler, steps = sampler_choice(source_model, config.sampler, config.steps, config.eta)
    inputs = generate(source_model, config.n, steps=steps, sampler=sampler, eta=config.eta, seed=config.seed, batch_size=config.batch_size, progress=progress)
    batch_size = config.batch_size or default_sample_batch(device, method.model)
    return translate_images(method, inputs, settings, seed=config.seed, batch_size=batch_size, progress=progress)


def report(config: ReportConfig):
    """Write ``report.html`` in the run folder ``config.run``: config, loss curves, training grids, metrics,
    and samples beside their nearest shots (:mod:`tenshot.run_report`). Returns a ``ReportResult``."""
    from .run_report import write_report

    return write_report(config)


@dataclass
class DemoResult:
    run: Path
    samples: Path
    grid: Path
    adapt_seconds: float
    sample_seconds: float
    report: Path | None = None


def demo(config: DemoConfig) -> DemoResult:
    """Adapt ``config.source`` to the shots of ``config.target``, then sample ``config.n`` images from the run."""
    import time

    out = Path(config.out or time.strftime("runs/demo-%Y%m%d-%H%M%S"))
    adapted = adapt(AdaptConfig(source=config.source, target=config.target, method=config.method, out=str(out), train=config.train))
    result = sample(SampleConfig(model=str(out), out=str(out / "generated"), n=config.n, steps=config.sample_steps, seed=config.train.seed), progress=True)
    page = report(ReportConfig(run=str(out))).path  # again, now with the generated samples beside the shots
    return DemoResult(run=out, samples=result.folder, grid=result.grid, adapt_seconds=adapted.seconds, sample_seconds=result.seconds, report=page)


@dataclass
class TranslateResult:
    folder: Path
    grid: Path
    count: int
    seconds: float


def _output_names(argument: str, files: list[Path]) -> list[Path]:
    """Where each input's translation goes: its path inside the input folder (its name for an emoji domain),
    as ``.png``; two inputs that would share an output are an error."""
    from .data.domains import is_emoji_domain

    root = None if is_emoji_domain(argument) else Path(argument)
    names = [(Path(file.name) if root is None else file.relative_to(root)).with_suffix(".png") for file in files]
    seen: dict[Path, Path] = {}
    for name, file in zip(names, files):
        if name in seen:
            raise TenshotError(f"{seen[name]} and {file} would both be translated to {name}; rename one")
        seen[name] = file
    return names


def _source_encoder(run: str, method, device):
    """``translate --encode source``: the denoiser of the model the run was adapted from (its ``config.yaml``), which
    encodes each input (DDIB); a model that is not a run encodes its inputs itself."""
    from .models.unet import load_model

    source = _run_source(run, required=False)
    if source is None:
        return method.model.denoiser()
    try:
        model = load_model(source, device)
    except (TenshotError, OSError) as error:
        raise TenshotError(f"{run}: --encode source needs the run's source model {source}, which did not load ({str(error).splitlines()[0]}); use --encode noise") from None
    if model.size != method.model.size:
        raise TenshotError(f"{source}: {model.size} px, the run {run} is {method.model.size} px; use --encode noise")
    return model.denoiser()


def translate(config: TranslateConfig, progress: bool = False) -> TranslateResult:
    """Translate the source-domain images of ``config.input`` with the run ``config.model`` into ``config.out``,
    keeping each input's file name (DESIGN.md: a translation can be scored against the true rendering of the
    same emoji in the target style); the grid of the first 64 goes to ``OUT.png``."""
    import time

    from .data.domains import domain_files
    from .data.images import load_images

    config.validate()
    out = Path(config.out)
    if occupied(out):
        raise TenshotError(f"{out}: folder exists and is not empty; choose another --out")
    device = resolve_device(config.device)
    method = load_for_sampling(config.model, device)
    _refuse_text_to_image(method.model, config.model, "translate")
    config.check(method.model.size)
    files = domain_files(config.input, method.model.size, default_split="all")[: config.n]
    names = _output_names(config.input, files)
    encoder = _source_encoder(config.model, method, device) if config.encode == "source" else None
    started = time.perf_counter()
    translated = translate_images(method, load_images(files, method.model.size), config, encoder=encoder, seed=config.seed, batch_size=config.batch_size, progress=progress)
    seconds = time.perf_counter() - started
    _, grid = write_samples(translated, out, names)
    return TranslateResult(folder=out, grid=grid, count=len(translated), seconds=seconds)
