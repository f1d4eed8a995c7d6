"""The one training loop: Accelerate (devices, mixed precision, DDP), EMA, checkpoints, previews, logs.

Determinism: every random draw of step ``i`` on rank ``r`` (data order, flips, noise, timesteps) comes from
generators seeded by ``(seed, i, r)`` and per-epoch permutations seeded by ``(seed, epoch)``, so resuming
from a checkpoint replays exactly what an uninterrupted run would have done.

Methods with several parameter groups (:meth:`Method.parameter_groups`, e.g. GAN generator and discriminator)
get one AdamW per group; each step runs the groups in their declared order, each on its own losses, with the
group's gradients accumulated, clipped and stepped, then every gradient cleared. All phases of a step see
the same micro-batches, and one generator per micro-batch serves the phases in turn.

A ``monitor`` (:class:`tenshot.metrics.memorisation.CopyMonitor`: a callable from uint8 images to named figures,
``share_key`` naming its copy share) scores every preview against the shots and logs its figures in that step's
record (a preview step is always logged); with ``stop_on_copies`` the run stops at the first preview whose copy
share exceeds it and exports the EMA weights of the last preview at or below it (the source model's, if none was).
"""

from __future__ import annotations

import json
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import TrainConfig
from ..data.images import make_grid, save_png, to_tensor, to_uint8
from ..diffusion.samplers import derive_seed, randn, sample_generators
from ..errors import Interrupted, TenshotError
from ..methods.base import Batch, Method, ParameterGroup
from ..models.ema import EMA
from .checkpoint import list_checkpoints, load_newest_readable, save_checkpoint


COPY_STOP_KEY = "stopped-on-copies"  # the log record of the step that stop_on_copies ended a run at


@dataclass
class CopyStop:
    """Where ``stop_on_copies`` ended a run: the step whose preview crossed, its copy share, and the step whose
    EMA weights were kept."""

    step: int
    share: float
    kept_step: int


@dataclass
class TrainResult:
    steps: int
    seconds: float  # the training loop's, summed over the parts of a resumed run
    final_losses: dict[str, float]
    ema: EMA
    stopped: CopyStop | None = None


class _StopFlag:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps (restored on exit)."""

    def __init__(self):
        self.raised = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.raised = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def resolve_mixed_precision(choice: str) -> str:
    """``auto``: bf16 on CUDA and on CPUs with AMX-BF16 (about twice as fast there), fp32 elsewhere.

    Without AMX (e.g. AMD EPYC), CPU bf16 autocast measured 10-20 times slower than fp32.
    """
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if cpu_has_amx_bf16() else "no"


def cpu_only() -> bool:
    """True where torch sees no accelerator device (GPU, XPU, ...).

    Accelerate sets up multi-process CPU training (gloo) under ``torchrun``/``accelerate launch`` only when
    told ``cpu=True``; without it every process of a CPU launch trains alone on the whole batch and all of
    them write the same run folder.
    """
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        return not accelerator.is_available()
    return not torch.cuda.is_available()


def distributed_state():
    """Accelerate's process state (rank, world size, barriers), set up for this machine's devices."""
    from accelerate import PartialState

    return PartialState(cpu=cpu_only())


def _forget_single_process_precision(precision: str) -> None:
    """Let one Python process train several runs at different precisions (the API in a notebook).

    Accelerate keeps its state in a process-wide singleton and refuses a second ``Accelerator`` with another
    ``mixed_precision``. In a single-process run nothing else holds that state between runs, so it is reset
    (keeping the process state); a launched multi-process run trains once per process and is left alone.
    """
    from accelerate.state import AcceleratorState, DistributedType

    shared = AcceleratorState._shared_state
    if shared and shared.get("_mixed_precision") != precision and shared.get("distributed_type") == DistributedType.NO:
        AcceleratorState._reset_state(reset_partial_state=False)


def cpu_has_amx_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as info:
            return any(line.startswith("flags") and " amx_bf16" in line for line in info)
    except OSError:
        return False


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up over ``warmup_steps`` optimiser steps, then constant."""
    if config.warmup_steps <= 0:
        return config.lr
    return config.lr * min(1.0, (step + 1) / config.warmup_steps)


class BatchStream:
    """Position ``p`` of the infinite data stream is image ``perm_{p // N}[p % N]``, ``perm_e`` seeded by (seed, e).
    ``images`` is a uint8 array or :class:`tenshot.data.images.ImageFiles` (read from disk as indexed); either way
    only the batch taken is converted to floats."""

    def __init__(self, images, seed: int):
        self.images = images
        self.seed = seed
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, 1, epoch))
            self._perms = {epoch: torch.randperm(len(self.images), generator=generator)}
        return self._perms[epoch]

    def take(self, start: int, count: int) -> torch.Tensor:
        count_images = len(self.images)
        indices = [int(self._perm(p // count_images)[p % count_images]) for p in range(start, start + count)]
        return to_tensor(self.images[indices])


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint a run resumes from (a hard kill leaves some behind)."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if json.loads(line).get("step", 0) <= step]
    if len(kept) != len(lines):
        path.write_text("".join(kept))


def _copy_stop_record(path: Path) -> dict | None:
    """The log record of a run that ``stop_on_copies`` ended, if any."""
    if not path.is_file():
        return None
    for line in path.read_text().splitlines():
        if f'"{COPY_STOP_KEY}"' in line:
            return json.loads(line)
    return None


def _flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    mask = torch.rand(images.shape[0], generator=generator) < 0.5
    return torch.where(mask[:, None, None, None], images.flip(-1), images)


def _checked_groups(method: Method) -> list[ParameterGroup]:
    """The method's parameter groups: named uniquely, non-empty, disjoint, and only trainable parameters."""
    groups = method.parameter_groups()
    if not groups or not any(group.parameters for group in groups):
        raise TenshotError(f"method {method.name} has no trainable parameters")
    names = [group.name for group in groups]
    if len(set(names)) != len(names) or any(not group.parameters for group in groups):
        raise ValueError(f"method {method.name}: parameter groups must have distinct names and parameters ({names})")
    seen: set[int] = set()
    for group in groups:
        ids = {id(p) for p in group.parameters}
        if ids & seen or any(not p.requires_grad for p in group.parameters):
            raise ValueError(f"method {method.name}: group {group.name} shares parameters or holds frozen ones")
        seen |= ids
    return groups


class Trainer:
    """Runs a :class:`Method` for ``config.steps`` optimiser steps on ``images`` and writes into ``run``."""

    def __init__(
        self, method: Method, images: np.ndarray, config: TrainConfig, run: Path, resume: bool = False,
        monitor: Callable[[np.ndarray], dict[str, float]] | None = None, stop_on_copies: float | None = None,
    ):  # fmt: skip
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        config.validate()
        self.config = config
        self.run = Path(run)
        self.method = method
        precision = resolve_mixed_precision(config.mixed_precision)
        _forget_single_process_precision(precision)
        # a phase of a method with several parameter groups leaves the other groups' parameters without
        # gradients (a GAN's generator in the discriminator's phase): DDP must look for unused parameters
        unused = method.some_parameters_unused or len(method.parameter_groups()) > 1
        tracking = config.report_to != "none"
        self.accelerator = Accelerator(
            mixed_precision=precision,
            gradient_accumulation_steps=config.grad_accum,
            cpu=cpu_only(),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=unused)],
            log_with=config.report_to if tracking else None,
            project_dir=str(self.run) if tracking else None,
        )
        if tracking:  # logs go to RUN/tensorboard/RUN-NAME, hyperparameters from the training config
            hyperparameters = {key: value for key, value in vars(config).items() if isinstance(value, (int, float, str, bool))}
            self.accelerator.init_trackers("tensorboard", config=hyperparameters)
        world = self.accelerator.num_processes
        micro = config.batch_size // config.grad_accum
        if micro % world:
            raise TenshotError(f"batch-size {config.batch_size} / grad-accum {config.grad_accum} is not divisible by {world} processes")
        self.micro_batch = micro
        self.rank_batch = micro // world
        self.stream = BatchStream(images, config.seed)
        self.ema = EMA(method.averaged_module(), config.ema_beta).to(self.accelerator.device)
        self.groups = _checked_groups(method)
        optimizers = [
            torch.optim.AdamW(group.parameters, lr=config.lr * group.lr_scale, betas=group.betas, weight_decay=config.weight_decay)
            for group in self.groups
        ]
        self.wrapped, *self.optimizers = self.accelerator.prepare(method, *optimizers)
        self.optimizer = self.optimizers[0]
        self.start_step, self.seconds_before = 0, 0.0  # where a resumed run goes on from: its step and training seconds
        if resume:
            self._resume()
        self.monitor = monitor
        self.stop_on_copies = stop_on_copies
        self.kept = (self.start_step, self._ema_copy())  # the last preview at or below stop_on_copies

    def _finish_trackers(self) -> None:
        """Flush and close the experiment trackers (``--report-to``). Not ``Accelerator.end_training``, which also
        destroys the process group that the export after training still waits on."""
        for tracker in self.accelerator.trackers:
            tracker.finish()

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        """Trainable parameters and the method's training buffers: what a checkpoint restores besides the EMA."""
        state = {name: p.detach() for name, p in self.method.named_parameters() if p.requires_grad}
        return {**state, **{name: b.detach() for name, b in self.method.training_buffers().items()}}

    def _optimizer_state(self) -> dict:
        """One optimizer's state dict, or ``{group name: state dict}`` for several groups (checkpoint layout)."""
        if len(self.groups) == 1:
            return self.optimizer.state_dict()
        return {group.name: optimizer.state_dict() for group, optimizer in zip(self.groups, self.optimizers)}

    def _load_optimizer_state(self, state: dict) -> None:
        if len(self.groups) == 1:
            self.optimizer.load_state_dict(state)
            return
        names = [group.name for group in self.groups]
        if "param_groups" in state or sorted(state) != sorted(names):
            raise ValueError(f"optimizers of groups {', '.join(names)} expected")
        for name, optimizer in zip(names, self.optimizers):
            optimizer.load_state_dict(state[name])

    def _resume(self) -> None:
        stopped = _copy_stop_record(self.run / "log.jsonl")
        if stopped is not None:
            raise TenshotError(
                f"{self.run}: stopped on copies at step {stopped['step']} and exported the EMA of step "
                f"{stopped[COPY_STOP_KEY]['kept-step']}; start a new run to train further"
            )
        if not list_checkpoints(self.run / "checkpoints"):  # stopped before its first checkpoint: start again at step 0
            if self.is_main:
                _truncate_log(self.run / "log.jsonl", 0)
            return
        step, path, state = load_newest_readable(self.run / "checkpoints")
        trainable = self._trainable_state()
        if set(state["trainable"]) != set(trainable):
            raise TenshotError(f"{path}: checkpoint does not match this method's trainable parameters")
        for name, value in trainable.items():
            if state["trainable"][name].shape != value.shape:
                raise TenshotError(
                    f"{path}: checkpoint does not match this method's trainable parameters "
                    f"({name} is {tuple(state['trainable'][name].shape)}, the model's {tuple(value.shape)})"
                )
        try:
            self.ema.load_state_dict(state["ema"])
            self._load_optimizer_state(state["optimizer"])
        except (KeyError, ValueError, RuntimeError) as error:
            raise TenshotError(f"{path}: checkpoint does not match this run ({error})") from None
        with torch.no_grad():
            for name, value in trainable.items():
                value.copy_(state["trainable"][name])
        self.start_step = step
        self.seconds_before = float(state["trainer"].get("seconds", 0.0))
        if self.is_main:
            _truncate_log(self.run / "log.jsonl", step)

    def _checkpoint(self, step: int) -> Path:
        path = self.run / "checkpoints" / f"step-{step}"
        if self.is_main:
            path = save_checkpoint(
                self.run / "checkpoints",
                step,
                self._trainable_state(),
                self.ema.state_dict(),
                self._optimizer_state(),
                {"config": self.config.__dict__, "seconds": round(time.perf_counter() - self.started, 3)},
                self.config.keep_checkpoints,
            )
        self.accelerator.wait_for_everyone()
        return path

    def _batch(self, step: int, micro: int) -> Batch:
        rank = self.accelerator.process_index
        position = (step * self.config.grad_accum + micro) * self.micro_batch + rank * self.rank_batch
        images = self.stream.take(position, self.rank_batch)
        generator = torch.Generator().manual_seed(derive_seed(self.config.seed, 2, step, micro, rank))
        if self.config.flip:
            images = _flip(images, generator)
        return Batch(images=images.to(self.accelerator.device), generator=generator)

    def _ema_copy(self) -> dict[str, torch.Tensor] | None:
        """The EMA state when ``stop_on_copies`` may need it back, on the CPU."""
        if self.stop_on_copies is None:
            return None
        return {name: value.detach().cpu().clone() for name, value in self.ema.state_dict().items()}

    def preview(self, step: int) -> np.ndarray | None:
        """A fixed-noise grid at ``samples/step-N.png``: the method's own sampler (``preview_steps``) with the
        EMA weights swapped into the averaged module for the duration. Returns its images (uint8)."""
        if not self.is_main or self.config.preview_count == 0:
            return None
        method = self.method
        device = self.accelerator.device
        generators = sample_generators(self.config.seed, range(self.config.preview_count))
        noise = randn((self.config.preview_count, *method.model.noise_shape), generators, device)
        module = method.averaged_module()
        current = {name: value.clone() for name, value in module.state_dict().items()}
        self.ema.copy_to(module)
        method.eval()
        try:
            with self.accelerator.autocast():
                images = method.sample(noise, steps=self.config.preview_steps, generators=generators)
        finally:
            module.load_state_dict(current)
            method.train()
        images = to_uint8(images)
        (self.run / "samples").mkdir(parents=True, exist_ok=True)
        save_png(make_grid(images), self.run / "samples" / f"step-{step}.png")
        return images

    def _watch(self, step: int, images: np.ndarray | None) -> tuple[dict, CopyStop | None]:
        """The monitor's figures of a preview (for the step's log record), and a :class:`CopyStop` when its copy
        share exceeds ``stop_on_copies``; else this step's EMA becomes the one to keep."""
        scores, stop = {}, None
        if self.monitor is not None and images is not None:
            scores = self.monitor(images)
            share = scores.get(self.monitor.share_key)
            if self.stop_on_copies is not None and share is not None and share > self.stop_on_copies:
                stop = CopyStop(step=step, share=share, kept_step=self.kept[0])
                scores[COPY_STOP_KEY] = {"kept-step": stop.kept_step, "threshold": self.stop_on_copies}
            elif self.stop_on_copies is not None:
                self.kept = (step, self._ema_copy())
        # a decision of the main process (the only one that previews) reaches every rank
        flag = torch.tensor([stop.kept_step if stop else -1, stop.step if stop else -1], dtype=torch.float64, device=self.accelerator.device)
        if self.stop_on_copies is not None and self.accelerator.num_processes > 1:
            flag = self.accelerator.reduce(flag, reduction="max")
        if flag[0] < 0:
            return scores, None
        return scores, stop or CopyStop(step=int(flag[1]), share=float("nan"), kept_step=int(flag[0]))

    def _phase_key(self, group: ParameterGroup, key: str) -> str:
        """Log name of a loss term: as the method named it for one group, ``GROUP/TERM`` for several."""
        return key if len(self.groups) == 1 else f"{group.name}/{key}"

    def _shown_losses(self) -> dict[str, str]:
        """Progress-bar label -> log key: ``loss`` for one group, each group's total for several."""
        return {"loss" if len(self.groups) == 1 else group.name: self._phase_key(group, "total") for group in self.groups}

    def _step_phases(self, batches: list[Batch], step: int, lr: float) -> dict[str, float]:
        """One optimiser step of every parameter group in order; returns the logged loss terms (mean over micro-batches)."""
        config = self.config
        sums: dict[str, float] = {}
        for group, optimizer in zip(self.groups, self.optimizers):
            for param_group in optimizer.param_groups:
                param_group["lr"] = lr * group.lr_scale
            phase = group.name if len(self.groups) > 1 else None
            for batch in batches:
                with self.accelerator.accumulate(self.wrapped):
                    terms = self.wrapped(batch, step, phase) if phase else self.wrapped(batch, step)
                    self.accelerator.backward(terms["total"])
                    if self.accelerator.sync_gradients and config.grad_clip > 0:
                        self.accelerator.clip_grad_norm_(group.parameters, config.grad_clip)
                    optimizer.step()
                    for each in self.optimizers:  # a phase's backward also reaches other groups' parameters
                        each.zero_grad(set_to_none=True)
                for key, value in terms.items():
                    name = self._phase_key(group, key)
                    sums[name] = sums.get(name, 0.0) + float(value.detach()) / config.grad_accum
        return sums

    def train(self) -> TrainResult:
        from tqdm.auto import tqdm

        config = self.config
        log_path = self.run / "log.jsonl"
        self.run.mkdir(parents=True, exist_ok=True)
        self.started = time.perf_counter() - self.seconds_before  # a resumed run's clock goes on from its checkpoint
        losses: dict[str, float] = {}
        bar = tqdm(total=config.steps, initial=self.start_step, disable=not self.is_main, desc=f"{self.method.name}", unit="step", dynamic_ncols=True)
        self.wrapped.train()
        step = self.start_step
        stopped = None  # a resumed run that had finished its steps (killed while exporting) goes straight to the export
        with _StopFlag() as stop:
            while step < config.steps:
                lr = learning_rate(step, config)
                batches = [self._batch(step, micro) for micro in range(config.grad_accum)]
                sums = self._step_phases(batches, step, lr)
                if not all(math.isfinite(v) for v in sums.values()):
                    raise TenshotError(f"loss became {sums} at step {step + 1}; lower --lr or use --mixed-precision no")
                self.ema.update(self.method.averaged_module())
                step += 1
                losses = sums
                bar.update(1)
                scores, stopped = {}, None
                if step % config.preview_every == 0 or step == config.steps:
                    scores, stopped = self._watch(step, self.preview(step))
                if step % config.log_every == 0 or step == config.steps or scores:
                    bar.set_postfix({name: f"{sums[key]:.4f}" for name, key in self._shown_losses().items()})
                    if self.is_main:
                        record = {"step": step, "lr": lr, "seconds": round(time.perf_counter() - self.started, 3), **sums, **scores}
                        with open(log_path, "a") as log:
                            log.write(json.dumps(record) + "\n")
                        if config.report_to != "none":
                            self.accelerator.log({key: value for key, value in record.items() if key != "step"}, step=step)
                path = None
                if step % config.checkpoint_every == 0 or step == config.steps:
                    path = self._checkpoint(step)
                if stop.raised:
                    self.accelerator.set_trigger()
                # every process stops at the same step (a signal may reach the ranks of a launch a step
                # apart; one rank checkpointing while another starts the next step's all-reduce would hang);
                # a signal during the last step lets the run finish and export
                if self.accelerator.check_trigger() and step < config.steps:
                    bar.close()
                    self._finish_trackers()
                    raise Interrupted(step, path or self._checkpoint(step))
                if stopped is not None:
                    self.ema.load_state_dict(self.kept[1])
                    break
        bar.close()
        self._finish_trackers()
        return TrainResult(steps=step, seconds=time.perf_counter() - self.started, final_losses=losses, ema=self.ema, stopped=stopped)
