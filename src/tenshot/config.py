"""One dataclass per command; YAML load/save; validation raises :class:`TenshotError`.

The CLI builds these from flags, the Python API takes them directly, and every run folder stores the
resolved one as ``config.yaml`` so a run can be rebuilt from it.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import TenshotError

MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
REPORT_TO = ("none", "tensorboard")  # experiment trackers, through Accelerate


@dataclass
class TrainConfig:
    """What every training command shares. ``batch_size`` is the global batch of one optimiser step."""

    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-4
    warmup_steps: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    grad_accum: int = 1
    mixed_precision: str = "auto"
    ema_beta: float = 0.999
    seed: int = 0
    flip: bool = True
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    preview_every: int = 500
    preview_count: int = 16
    preview_steps: int = 25
    log_every: int = 10
    report_to: str = "none"

    def validate(self) -> None:
        positive = ("steps", "batch_size", "grad_accum", "checkpoint_every", "keep_checkpoints", "preview_every", "log_every", "preview_steps")
        for name in positive:
            if getattr(self, name) < 1:
                raise TenshotError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise TenshotError(f"lr must be positive, got {self.lr}")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.grad_clip < 0 or self.preview_count < 0:
            raise TenshotError("warmup-steps, weight-decay, grad-clip and preview-count must not be negative")
        if not 0.0 <= self.ema_beta < 1.0:
            raise TenshotError(f"ema-beta must be in [0, 1), got {self.ema_beta}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise TenshotError(f"mixed-precision must be one of {', '.join(MIXED_PRECISION)}, got {self.mixed_precision!r}")
        if self.batch_size % self.grad_accum:
            raise TenshotError(f"batch-size {self.batch_size} is not divisible by grad-accum {self.grad_accum}")
        if self.report_to not in REPORT_TO:
            raise TenshotError(f"report-to must be one of {', '.join(REPORT_TO)}, got {self.report_to!r}")
        if self.report_to == "tensorboard" and not _tensorboard_available():
            raise TenshotError("--report-to tensorboard needs tensorboardX or tensorboard: pip install 'tenshot[tensorboard]'")


def _tensorboard_available() -> bool:
    import importlib.util

    return any(importlib.util.find_spec(name) is not None for name in ("tensorboardX", "tensorboard"))


@dataclass
class PretrainConfig:
    """``tenshot pretrain``: train a UNet preset from scratch on a domain."""

    data: str = "emoji:noto"
    out: str = "runs/pretrain"
    size: int = 32
    preset: str = "small"
    prediction_type: str = "v_prediction"
    snr_gamma: float = 5.0
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=20000, lr=1e-3, warmup_steps=200, checkpoint_every=1000, preview_every=2000)
    )

    def validate(self) -> None:
        from .diffusion.schedule import PREDICTION_TYPES
        from .models.unet import PRESETS

        self.train.validate()
        if self.preset not in PRESETS:
            raise TenshotError(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise TenshotError(f"prediction-type must be one of {', '.join(PREDICTION_TYPES)}")
        if not 8 <= self.size <= 512:
            raise TenshotError(f"size must be between 8 and 512, got {self.size}")


# The training settings a method needs instead of adapt's own (METHODS.md rule 3: each default fits about
# 10 minutes at 32 px on 2 cores). They apply wherever the user does not set the value: the flags the CLI
# was not given, and ``AdaptConfig(train=None)``. See each method's module docstring for the reasons.
# A LoRA (``--method lora``, or ``--option adapter=lora``) trains at 10x fine-tuning's learning rate: the ratio
# of diffusers' text-to-image examples (full fine-tuning at 1e-5, LoRA at 1e-4), whose update starts at zero.
LORA_LR = 1e-3
METHOD_TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "lora": {"lr": LORA_LR},
    "crdi": {"steps": 1500, "batch_size": 10, "lr": 0.05, "grad_clip": 0.0, "flip": False, "checkpoint_every": 500, "preview_every": 500},
}

# A text-to-image run (a prompt given; tenshot.methods.text_to_image) trains with the DomainStudio code's README
# settings whatever the method: AdamW at lr 5e-6 with weight decay 0.01 and no gradient clipping, 4 instance
# images a step (and as many class images), 800 steps, no flips; a LoRA at 10x that learning rate, as above.
TEXT_TRAIN_DEFAULTS: dict[str, Any] = {
    "steps": 800, "batch_size": 4, "lr": 5e-6, "weight_decay": 0.01, "grad_clip": 0.0, "flip": False, "checkpoint_every": 200, "preview_every": 200,
}  # fmt: skip
TEXT_LORA_LR = 5e-5


def adapt_train_defaults(method: str, options: dict | None = None) -> TrainConfig:
    """``adapt``'s training defaults for ``method``: batch 8, lr 1e-4, 300 steps, with the method's overrides
    (and LoRA's learning rate when ``options`` ask for ``adapter=lora``; a text-to-image run's when they give a
    ``prompt``)."""
    base = TrainConfig(steps=300, batch_size=8, lr=1e-4, checkpoint_every=100, preview_every=100)
    overrides = dict(METHOD_TRAIN_DEFAULTS.get(method, {}))
    if (options or {}).get("adapter") == "lora":
        overrides["lr"] = LORA_LR
    if (options or {}).get("prompt"):
        overrides = dict(TEXT_TRAIN_DEFAULTS)
        if method == "lora" or options.get("adapter") == "lora":
            overrides["lr"] = TEXT_LORA_LR
    return dataclasses.replace(base, **overrides)


@dataclass
class AdaptConfig:
    """``tenshot adapt``: adapt a source model to a few target images with one method.

    ``train=None`` (the default) means :func:`adapt_train_defaults` of ``method`` and ``options``."""

    source: str = "noto-32"
    target: str = "emoji:openmoji"
    out: str = "runs/adapt"
    method: str = "finetune"
    options: dict[str, Any] = field(default_factory=dict)
    # source-domain images for methods that use them (phasic); None: the dataset the source model's card names,
    # else samples of the source model (tenshot.source_images)
    source_data: str | None = None
    # stop at the first preview whose share of copies of the shots exceeds this (tenshot.metrics.memorisation)
    stop_on_copies: float | None = None
    train: TrainConfig | None = None

    def __post_init__(self):
        if self.train is None:
            self.train = adapt_train_defaults(self.method, self.options)

    def validate(self) -> None:
        """The settings alone; the method and its options are checked where the method is built
        (:func:`tenshot.methods.method_options`)."""
        self.train.validate()
        if self.stop_on_copies is not None:
            if not 0.0 <= self.stop_on_copies < 1.0:
                raise TenshotError(f"stop-on-copies is a share of the previews in [0, 1), got {self.stop_on_copies}")
            if self.train.preview_count == 0:
                raise TenshotError("stop-on-copies watches the previews: give --preview-count above 0")


DISTILL_DATA = ("teacher", "shots", "teacher+shots")


@dataclass
class DistillConfig:
    """``tenshot distill``: a one-step generator from a diffusion model (GDD, ``tenshot.methods.gdd``).

    ``model`` is the teacher: any model reference, usually an adapted run. ``data`` is what the discriminator
    sees as real: ``teacher`` (``teacher_samples`` images drawn once from the teacher with its own sampler,
    ``teacher_steps`` DDIM steps, cached in the run's ``teacher/``), ``shots`` (the target of an adapt run),
    ``teacher+shots`` (both), or a domain argument (folder or ``emoji:STYLE[:SPLIT]``, default split ``all``).
    ``options`` are GDD's (``variant`` gdd-i or gdd, ...). The EMA's half-life is ``ema_half_life`` times
    ``train.steps`` (None: ``train.ema_beta``). Its decay at step i is min(beta, (1+i)/(10+i)), whose warm-up term
    (a half-life of about 7.7% of the steps done) is the smaller until about 1.3 times ``train.steps``: at the
    default 0.1 the warm-up sets the decay for the whole run, like GDD's own EMA ramp-up (METHODS.md).

    The defaults are 1,000 teacher samples at 25 DDIM steps (half the 2,000 of METHODS.md) and 750 GDD-I steps
    of batch 8: by ``bench/results/speed.md``'s sampling and step times at 32 px on 2 CPU cores, 7.8 + 17.2 = 25
    minutes, inside METHODS.md's 30 for the default run; two default runs took 21.8 and 21.9 minutes
    (``bench/results/distillation-emojify.json``, ``distillation-emojione.json``). 1,000 steps would take 31 by
    speed.md, about 27 by those runs, and were measured on openmoji alone. 750 is where the one-step generator passes
    its teacher's 4-evaluation DDIM on fid-el0 on both EmojiShift styles; at 500 it did not on emojione
    (``bench/results/distillation-emojione.md``: 129.3 against 126.2; 122.7 and 120.7 at 750, two seeds).
    """

    model: str = "noto-32"
    data: str = "teacher"
    out: str = "runs/distill"
    method: str = "gdd"
    options: dict[str, Any] = field(default_factory=dict)
    teacher_samples: int = 1000
    teacher_steps: int = 25
    ema_half_life: float | None = 0.1
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            steps=750, batch_size=8, lr=1e-4, grad_clip=0.0, flip=False, checkpoint_every=100, preview_every=100
        )
    )

    def validate(self) -> None:
        self.train.validate()
        if self.method != "gdd":
            raise TenshotError(f"distill method must be gdd, got {self.method!r}")
        if not str(self.data).strip():
            raise TenshotError(f"data must be one of {', '.join(DISTILL_DATA)} or a domain argument")
        if self.teacher_samples < 1 or self.teacher_steps < 1:
            raise TenshotError("teacher-samples and teacher-steps must be at least 1")
        if self.ema_half_life is not None and not 0 < self.ema_half_life <= 1:
            raise TenshotError(f"ema-half-life must be a fraction of the run in (0, 1], got {self.ema_half_life}")

    def ema_beta(self) -> float:
        """The EMA decay per step: half-life ``ema_half_life * steps`` steps, or ``train.ema_beta``."""
        if self.ema_half_life is None:
            return self.train.ema_beta
        return 0.5 ** (1.0 / max(1.0, self.ema_half_life * self.train.steps))


DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")  # --device: sampling.resolve_device
SAMPLERS = ("ddim", "ddpm", "dpm++")  # Method.sample's: DDIM (eta), ancestral DDPM, DPM-Solver++(2M)
DEFAULT_STEPS = {"ddim": 25, "ddpm": 25, "dpm++": 10}  # a sampler's steps when none are given: DPM-Solver++(2M) at 10 reaches DDIM-25's fid-el0 (bench/results/samplers.md)
TRANSLATION_SAMPLERS = ("ddim", "dpm++")  # translate's: DDIM with its eta, or DPM-Solver++(2M) (deterministic)


def check_sampler(sampler: str) -> None:
    if sampler not in SAMPLERS:
        raise TenshotError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")


def check_device(spec: str) -> None:
    """``--device``: auto, cpu, cuda or cuda:N (whether it is there is :func:`tenshot.sampling.resolve_device`'s)."""
    if not DEVICE_PATTERN.match(spec):
        raise TenshotError(f"device must be auto, cpu, cuda or cuda:N, got {spec!r}")


@dataclass
class SampleConfig:
    """``tenshot sample``: draw images from a model or run."""

    model: str = "noto-32"
    out: str = "samples"
    n: int = 64
    steps: int | None = None  # None: DEFAULT_STEPS of the sampler
    sampler: str | None = None  # None: the model's default (Method.default_sampler, dpm++ for a plain UNet)
    eta: float = 0.0
    seed: int = 0
    batch_size: int | None = None  # None: sampling.default_sample_batch of the model's device
    device: str = "auto"
    # text-to-image models: the prompt and classifier-free guidance scale (None: a run's own)
    prompt: str | None = None
    guidance_scale: float | None = None
    # draw from the run's source model and translate with the run (translate's defaults)
    from_source: bool = False

    def validate(self) -> None:
        check_device(self.device)
        if self.n < 1 or (self.steps is not None and self.steps < 1) or (self.batch_size is not None and self.batch_size < 1):
            raise TenshotError("n, steps and batch-size must be at least 1")
        if self.sampler is not None:
            check_sampler(self.sampler)
        if self.guidance_scale is not None and not self.guidance_scale >= 0:
            raise TenshotError(f"guidance-scale must be a number >= 0, got {self.guidance_scale}")
        if not 0.0 <= self.eta <= 1.0:
            raise TenshotError(f"eta must be in [0, 1], got {self.eta}")


TRANSLATION_OUTPUTS = ("final", "intermediate")
TRANSLATION_ENCODINGS = ("source", "noise")  # x^A brought to t by the source model's DDIM encoding (DDIB), or by q(x_t | x^A)
PAPER_RESOLUTION, PAPER_FILTER_FACTOR = 256, 8


def default_filter_factor(size: int) -> int:
    """N for ``size`` px: the code's 8 at 256 px scaled with resolution, at least 1: 32 px -> 1, 64 px -> 2,
    128 px -> 4. At 32 px N = 1 was chosen by test over 2, 4, 8 and no guidance: it keeps the most of the input
    and lands nearest the true target renderings on both public targets (``bench/README.md``,
    "translation-100-guidance"). With N = 1 each guided step takes the reference whole, so
    the structure comes from the one-step translated input down to ``guidance_end`` and the model is free below
    it."""
    return max(1, round(PAPER_FILTER_FACTOR * size / PAPER_RESOLUTION))


@dataclass
class TranslationSettings:
    """How :func:`tenshot.methods.translation.structure_guided_translation` runs (that module's docstring).
    ``start`` and ``guidance_end`` are times of the Phasic paper's cosine schedule, mapped to the model's by equal
    noise level; ``filter_factor`` None scales the code's 8 at 256 px with the image size
    (``default_filter_factor``); ``guidance_end`` >= ``start`` turns the guidance off."""

    start: int = 600
    steps: int = 25
    eta: float = 0.0
    encode: str = "source"
    guidance_end: int = 400
    filter_factor: int | None = None
    style_repeats: int = 0
    output: str = "final"
    sampler: str = "ddim"

    def check(self, size: int) -> int:
        """Raise :class:`TenshotError` on a bad setting; return the filter factor for ``size`` px images."""
        if not 0 < self.start < 1000:
            raise TenshotError(f"start must be between 1 and 999 (a time of the cosine schedule), got {self.start}")
        if not 1 <= self.steps <= self.start + 1:
            raise TenshotError(f"steps must be between 1 and start + 1 = {self.start + 1}, got {self.steps}")
        if not 0.0 <= self.eta <= 1.0:
            raise TenshotError(f"eta must be in [0, 1], got {self.eta}")
        if self.guidance_end < -1:
            raise TenshotError(f"guidance-end must be at least -1, got {self.guidance_end}")
        if self.style_repeats < 0:
            raise TenshotError(f"style-repeats must not be negative, got {self.style_repeats}")
        if self.encode not in TRANSLATION_ENCODINGS:
            raise TenshotError(f"encode must be one of {', '.join(TRANSLATION_ENCODINGS)}, got {self.encode!r}")
        if self.output not in TRANSLATION_OUTPUTS:
            raise TenshotError(f"output must be one of {', '.join(TRANSLATION_OUTPUTS)}, got {self.output!r}")
        if self.sampler not in TRANSLATION_SAMPLERS:
            raise TenshotError(f"translate's sampler must be one of {', '.join(TRANSLATION_SAMPLERS)}, got {self.sampler!r}")
        factor = default_filter_factor(size) if self.filter_factor is None else self.filter_factor
        if factor < 1 or size % factor:
            raise TenshotError(f"filter-factor must be a positive divisor of the image size {size}, got {factor}")
        return factor


def generation_translation() -> TranslationSettings:
    """Translate's settings for ``sample --from-source``, which generates: the Phasic code's own sampler, each
    source sample brought to the start by fresh noise and decoded with eta 1. ``translate`` keeps the source
    model's encoding, which lands nearer each input's own target rendering. A generator has no input whose
    likeness is at stake, only its distribution. Rule: each command defaults to the path that its own measure
    favours. Measured on both public targets from the same run and source samples at two seeds: fresh noise gives
    the better fid-el0, kid-el0 and swd, and diversity and recall go either way (``bench/README.md``,
    "phasic-from-source-encoding")."""
    return TranslationSettings(encode="noise", eta=1.0)


@dataclass
class TranslateConfig(TranslationSettings):
    """``tenshot translate``: source-domain images of ``input`` (folder or ``emoji:STYLE[:SPLIT]``, default split
    ``all``; the first ``n`` when given) translated by the run ``model`` into ``out``, keeping file names, with the
    :class:`TranslationSettings` it inherits."""

    model: str = "runs/adapt"
    input: str = "emoji:noto"
    out: str = "translations"
    n: int | None = None
    seed: int = 0
    batch_size: int = 64
    device: str = "auto"

    def validate(self) -> None:
        check_device(self.device)
        if self.n is not None and self.n < 1:
            raise TenshotError(f"n must be at least 1, got {self.n}")
        if self.batch_size < 1:
            raise TenshotError(f"batch-size must be at least 1, got {self.batch_size}")


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(cls: type, values: dict[str, Any], where: str = "config") -> Any:
    """Build a (nested) config dataclass; unknown keys are an error naming the key."""
    if not isinstance(values, dict):
        raise TenshotError(f"{where}: expected a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise TenshotError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(fields)})")
    kwargs = {}
    for name, value in values.items():
        default = cls().__getattribute__(name)
        if dataclasses.is_dataclass(default):
            kwargs[name] = from_dict(type(default), value, f"{where}.{name}")
        else:
            kwargs[name] = value
    return cls(**kwargs)


def save_yaml(config: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def load_yaml(cls: type, path: str | Path) -> Any:
    try:
        values = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise TenshotError(f"{path}: unreadable config ({error})") from None
    return from_dict(cls, values or {}, str(path))


@dataclass
class DemoConfig:
    """``tenshot demo``: adapt the shipped source model to 10 target shots, then sample a grid."""

    source: str = "noto-32"
    target: str = "emoji:openmoji"
    method: str = "finetune"
    out: str = ""
    n: int = 64
    sample_steps: int | None = None  # None: the default sampler's (SampleConfig)
    train: TrainConfig = field(default_factory=lambda: AdaptConfig().train)


FEATURE_NETWORKS = ("el0", "inception", "clip", "vgg")
EVALUATE_MIN_IMAGES = 4  # the k-NN radii of precision/recall (k = 3) need k + 1 images


@dataclass
class EvaluateConfig:
    """``tenshot evaluate``: score samples against reference images (and shots) with the metrics of DESIGN.md.

    ``samples`` is a folder of images, ``emoji:STYLE[:SPLIT]`` (split ``all`` by default) or a model to
    sample ``n`` images from (run folder, diffusers folder, asset name or hub id). ``n`` takes the first
    ``n`` images of a folder (default all) or draws ``n`` samples (default 1000). Every image set is
    loaded at ``size`` px (default: the samples' size).
    """

    samples: str = "samples"
    reference: str = "emoji:noto"
    shots: str | None = None
    features: list[str] = field(default_factory=lambda: ["el0"])
    n: int | None = None
    size: int | None = None
    steps: int | None = None  # a model's sampling, as SampleConfig's
    sampler: str | None = None
    seed: int = 0
    batch_size: int = 50
    device: str = "auto"
    out: str | None = None

    def validate(self) -> None:
        check_device(self.device)
        unknown = [name for name in self.features if name not in FEATURE_NETWORKS]
        if unknown or not self.features:
            raise TenshotError(f"features must be a comma list of {', '.join(FEATURE_NETWORKS)}, got {','.join(self.features)!r}")
        if len(set(self.features)) != len(self.features):
            raise TenshotError(f"features lists a network twice: {','.join(self.features)}")
        if "vgg" in self.features and not self.shots:
            raise TenshotError("features vgg computes intra-lpips-vgg, which needs --shots")
        if self.n is not None and self.n < EVALUATE_MIN_IMAGES:
            raise TenshotError(f"n must be at least {EVALUATE_MIN_IMAGES}, got {self.n}")
        if self.size is not None and not 16 <= self.size <= 1024:
            raise TenshotError(f"size must be between 16 and 1024, got {self.size}")
        if (self.steps is not None and self.steps < 1) or self.batch_size < 1:
            raise TenshotError("steps and batch-size must be at least 1")
        if self.sampler is not None:
            check_sampler(self.sampler)


@dataclass
class ReportConfig:
    """``tenshot report``: write ``report.html`` in the run folder ``run``.

    ``metrics`` lists metrics.json files to tabulate beside the run's own. The shots are shown beside
    ``n`` samples: the first ``n`` images of ``samples`` (a folder), else of the run's ``generated/``,
    else of its last training grid, else ``n`` drawn from the run (``steps`` DDIM steps, ``seed``).
    """

    run: str = "runs/adapt"
    metrics: list[str] = field(default_factory=list)
    samples: str | None = None
    n: int = 16
    steps: int = 25
    seed: int = 0
    device: str = "auto"

    def validate(self) -> None:
        check_device(self.device)
        if not 1 <= self.n <= 256:
            raise TenshotError(f"n must be between 1 and 256, got {self.n}")
        if self.steps < 1:
            raise TenshotError(f"steps must be at least 1, got {self.steps}")


@dataclass
class ExportConfig:
    """``tenshot export``: the weights of a run's checkpoint ``checkpoints/step-N`` (its EMA, as ``model/`` holds at
    the end of a run) as a run folder ``out`` that ``sample``, ``evaluate`` and ``translate`` take."""

    run: str = "runs/adapt"
    step: int = 0
    out: str = "runs/export"

    def validate(self) -> None:
        if self.step < 1:
            raise TenshotError(f"step must be at least 1, got {self.step}")



def _adm_settings():
    from .models.convert import ADMSettings

    return ADMSettings()


def _lucidrains_settings():
    from .models.convert_lucidrains import LucidrainsSettings

    return LucidrainsSettings()


@dataclass
class ConvertConfig:
    """``tenshot convert``: a guided-diffusion / improved-diffusion (ADM) ``.pt`` state dict or a
    denoising-diffusion-pytorch checkpoint as a diffusers folder ``out`` that every command takes as a model;
    ``settings`` (a :class:`tenshot.models.convert.ADMSettings`) and ``lucidrains`` (a
    :class:`tenshot.models.convert_lucidrains.LucidrainsSettings`) hold what each kind of file does not record."""

    source: str = "model.pt"
    out: str = "runs/converted"
    settings: Any = field(default_factory=_adm_settings)
    lucidrains: Any = field(default_factory=_lucidrains_settings)
