"""Training step time and peak memory per method, sampling throughput per sampler, at 32 and 64 px.

Cases (DESIGN.md: speed is measured inside the process from a loaded model; whole-process time beside it):
- ``train``: every method registered in ``tenshot.methods.METHODS`` when this runs, with its default options,
  set up on the target shots as ``tenshot adapt`` does (``method.setup``), then trained by the real
  :class:`tenshot.train.loop.Trainer`: Accelerate, the method's losses (and phases), backward, gradient clip,
  AdamW, EMA update, data stream; the defaults of ``adapt`` (of ``distill`` for GDD), the method's own batch
  unless ``--batch-size`` is given, mixed precision ``auto``, no previews or checkpoints. Wall seconds per
  optimiser step come from the trainer's own ``log.jsonl`` (logged every step); the first ``--warmup`` steps
  are dropped; the table gives the median and the minimum (the figure least disturbed by other processes on a
  shared machine), and the CPU seconds of the process per step over the whole loop (all threads; warm-up included), which other load disturbs less than wall time.
- ``sample``: images per second of DDIM and of ancestral DDPM at 25 steps through the plain UNet (what
  ``tenshot sample`` does for a fine-tuned run: ``tenshot.api.generate``), and of each method's own
  ``sample()`` where a method overrides it (CRDI's guidance, GDD's one-step generator, ...), after one
  short untimed call; the median over ``--repeats`` calls of ``--sample-batch`` images, and the UNet evaluations
  per image those calls made (counted by a hook: one for GDD's generator whatever ``--sample-steps``).
- Models: the shipped ``noto-32`` (small preset) at 32 px, a fresh ``base`` preset at 64 px (compute does
  not depend on the weights). Target: ``emoji:openmoji`` shots at the case's size; phasic's source images
  come from ``emoji:noto``, as adapt's ``--source-data`` would give them.

Peak memory: every case runs in a fresh Python process, and ``peak_rss_mib`` is that process's resident-set
high-water mark (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) when the case ends: Python, torch, the model,
the method and the work itself, everything the operating system had to provide. ``setup_rss_mib`` is the
resident set after loading the model and setting up the method, just before the timed work, so
``peak - setup`` is what training or sampling adds (activations, gradients, optimiser and EMA state).
tracemalloc would miss torch's allocations, which bypass Python's allocator. On CUDA the table adds
``torch.cuda.max_memory_allocated``.

    .venv/bin/python bench/speed.py            # everything: 14 minutes on 2 quiet CPU cores with 5 methods (2026-12-03)
    .venv/bin/python bench/speed.py --quick    # 32 px only, 5 timed steps, one sampling call: about 2 minutes
    .venv/bin/python bench/speed.py --sizes 32 --methods finetune --samplers ddim --steps 2 --warmup 1 \\
        --sample-steps 2 --sample-batch 2       # a smoke test: about a minute

Writes ``bench/results/speed.json`` and the tables as ``bench/results/speed.md`` (``speed-quick.*`` with
``--quick``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = {32: "noto-32", 64: "base"}  # size -> shipped asset or fresh preset
TARGET = "emoji:openmoji"
SOURCE_DATA = "emoji:noto"  # the source domain, for methods that use source images (phasic)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def mib(count_bytes: float) -> float:
    return round(count_bytes / 2**20, 1)


def peak_rss_bytes() -> int:
    """This process's resident-set high-water mark (ru_maxrss: KiB on Linux, bytes on macOS)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def current_rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


# --- one case, in its own process --------------------------------------------------------------------------


def load_case_model(size: int):
    import torch

    from tenshot.models.unet import PRESETS, load_model, new_model

    name = MODELS[size]
    if name in PRESETS:
        torch.manual_seed(0)
        return new_model(name, size, "v_prediction"), f"fresh {name} preset"
    return load_model(name), name


def run_train_case(case: dict) -> dict:
    import tempfile

    from tenshot.data import load_domain
    from tenshot.data.images import to_tensor
    from tenshot.methods import build_method
    from tenshot.train.loop import Trainer, resolve_mixed_precision

    model, model_name = load_case_model(case["size"])
    shots = load_domain(case["target"], case["size"], default_split="shots")
    method = build_method(case["method"], model, {})
    if method.needs_source_images:  # phasic: as adapt loads them (--source-data)
        from tenshot.source_images import load_source_images

        method.source_images = to_tensor(load_source_images(SOURCE_DATA, model_name, model, method.needs_source_images))
    method.setup(to_tensor(shots))
    train = train_defaults(case["method"])
    train.steps = case["warmup"] + case["steps"]
    train.batch_size = case["batch"] or train.batch_size
    train.log_every, train.preview_count = 1, 0
    train.checkpoint_every = train.steps + 1
    with tempfile.TemporaryDirectory(prefix="tenshot-speed-") as folder:
        trainer = Trainer(method, shots, train, Path(folder))
        trainer._checkpoint = lambda step: None  # the bench times steps; a final save would add its copies to the peak
        setup_rss = current_rss_bytes()
        cpu_started = time.process_time()
        trainer.train()
        cpu = time.process_time() - cpu_started
        records = [json.loads(line) for line in (Path(folder) / "log.jsonl").read_text().splitlines()]
    ends = [0.0] + [record["seconds"] for record in records]
    per_step = [b - a for a, b in itertools.pairwise(ends)][case["warmup"] :]
    return {
        "model": model_name,
        "batch": train.batch_size,
        "precision": resolve_mixed_precision(train.mixed_precision),
        "device": str(trainer.accelerator.device),
        "median_s": round(statistics.median(per_step), 4),
        "min_s": round(min(per_step), 4),
        "mean_s": round(statistics.fmean(per_step), 4),
        "cpu_s_per_step": round(cpu / train.steps, 4),
        "timed_steps": len(per_step),
        "setup_rss_mib": mib(setup_rss),
    }


def train_defaults(name: str):
    """The training defaults of the command that trains method ``name``: distill's for the distilled method (GDD),
    adapt's with the method's own overrides (CRDI: batch 10, no gradient clip) for the others."""
    from tenshot.config import DistillConfig, adapt_train_defaults

    distill = DistillConfig()
    return distill.train if name == distill.method else adapt_train_defaults(name)


def overrides_sample(name: str) -> bool:
    """True when method ``name`` has its own ``sample()`` (the default is DDIM/DDPM of the UNet)."""
    from tenshot.methods import METHODS, Method

    builder = METHODS[name][1]
    return not isinstance(builder, type) or builder.sample is not Method.sample


def run_sample_case(case: dict) -> dict:
    import torch

    from tenshot.api import generate
    from tenshot.data import load_domain
    from tenshot.data.images import to_tensor
    from tenshot.methods import build_method

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, model_name = load_case_model(case["size"])
    method = build_method(case["method"], model, {})
    method.setup(to_tensor(load_domain(case["target"], case["size"], default_split="shots")))
    method = method.to(device).eval()
    sampler = "ddim" if case["sampler"] == "own" else case["sampler"]
    n = case["batch"]
    setup_rss = current_rss_bytes()
    with torch.no_grad():
        generate(method, min(n, 2), steps=2, sampler=sampler, batch_size=n)  # warm-up
        rows = count_unet_rows(method)
        seconds = []
        for repeat in range(case["repeats"]):
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            generate(method, n, steps=case["steps"], sampler=sampler, seed=repeat, batch_size=n)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - started)
    median = statistics.median(seconds)
    return {
        "model": model_name,
        "device": str(device),
        "images": n,
        "median_s": round(median, 4),
        "images_per_s": round(n / median, 3),
        "s_per_image": round(median / n, 4),
        "evaluations_per_image": round(rows[0] / (n * case["repeats"]), 2),
        "setup_rss_mib": mib(setup_rss),
    }


def count_unet_rows(method) -> list[int]:
    """A one-item list that counts the batch rows every UNet2DModel inside ``method`` is called on from now: the
    network evaluations per image of a sampler, whatever its ``steps`` (one for GDD's generator, fewer than
    ``steps`` for a sampler that starts part-way)."""
    from diffusers import UNet2DModel

    rows = [0]

    def count(module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        rows[0] += sample.shape[0]

    for module in method.modules():
        if isinstance(module, UNet2DModel):
            module.register_forward_pre_hook(count, with_kwargs=True)
    return rows


def run_case(case: dict) -> dict:
    """One case in this process: its figures and the memory high-water marks."""
    import torch

    if case["threads"]:
        torch.set_num_threads(case["threads"])
    result = run_train_case(case) if case["kind"] == "train" else run_sample_case(case)
    result["peak_rss_mib"] = mib(peak_rss_bytes())
    if torch.cuda.is_available():
        result["cuda_peak_allocated_mib"] = mib(torch.cuda.max_memory_allocated())
    result["torch_threads"] = torch.get_num_threads()
    return result


# --- the driver ----------------------------------------------------------------------------------------------


def cases(args) -> list[dict]:
    from tenshot.methods import METHODS

    methods = [name.strip() for name in args.methods.split(",") if name.strip()] if args.methods else list(METHODS)
    unknown = [name for name in methods if name not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {', '.join(unknown)}: registered are {', '.join(METHODS)}")
    common = {"target": args.target, "threads": args.threads}
    found = []
    for size in args.sizes:
        for name in methods:
            found.append({"kind": "train", "size": size, "method": name, "batch": args.batch_size, "warmup": args.warmup, "steps": args.steps, **common})
        sampling = {"size": size, "batch": args.sample_batch, "steps": args.sample_steps, "repeats": args.repeats, **common}
        for sampler in args.samplers:
            found.append({"kind": "sample", "sampler": sampler, "method": "finetune", **sampling})
        for name in methods:
            if overrides_sample(name):
                found.append({"kind": "sample", "sampler": "own", "method": name, **sampling})
    return found


def run_in_subprocess(case: dict) -> dict:
    """``case`` in a fresh interpreter (its own memory high-water mark); the figures, or the error it ended with."""
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)], capture_output=True, text=True, check=False)
    seconds = round(time.perf_counter() - started, 1)
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        error = (completed.stderr.strip().splitlines() or [f"exit status {completed.returncode}"])[-1]
        return {**case, "error": error, "process_s": seconds}
    return {**case, **json.loads(lines[-1]), "process_s": seconds}


def label(case: dict) -> str:
    return case["method"] if case["kind"] == "train" else (f"{case['method']} (own)" if case["sampler"] == "own" else case["sampler"])


def markdown(results: list[dict], header: dict) -> str:
    on_cuda = any("cuda_peak_allocated_mib" in r for r in results)

    def cuda_column(r: dict | None = None) -> str:
        """The CUDA peak-allocated column, on a GPU run only (``None``: its header)."""
        if not on_cuda:
            return ""
        return " CUDA peak MiB |" if r is None else f" {r['cuda_peak_allocated_mib']:.0f} |" if "cuda_peak_allocated_mib" in r else " |"

    lines = [
        "# Speed and memory" + ("" if header.get("complete", True) else f": partial, stopped after {len(results)} cases"),
        "",
        (
            f"{header['processor']}, {header['cpu_count']} cores, {header['cuda'] + ', ' if header.get('cuda') else ''}torch {header['torch']}, "
            f"1-min load average {header['load_average_before']} before and {header['load_average_after']} after "
            "(other processes on the cores slow the wall times; CPU seconds less so). Written by `bench/speed.py`; "
            "peak RSS is each case's own process (Python and torch included), setup RSS the same process before the timed work."
        ),
        "",
        "## Training: one optimiser step (the Trainer, the defaults of adapt, or of distill for GDD)",
        "",
        "| size | model | method | batch | precision | median s/step | min s/step | CPU s/step | setup RSS MiB | peak RSS MiB | process s |" + cuda_column(),
        "|---:|---|---|---:|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if on_cuda else ""),
    ]
    for r in results:
        if r["kind"] != "train":
            continue
        if "error" in r:
            lines.append(f"| {r['size']} | {MODELS[r['size']]} | {r['method']} | {r['batch'] or 'default'} | | error: {r['error']} | | | | | {r['process_s']} |" + cuda_column(r))
            continue
        lines.append(f"| {r['size']} | {r['model']} | {r['method']} | {r['batch']} | {r['precision']} | {r['median_s']:.3f} | {r['min_s']:.3f} | "
                     f"{r['cpu_s_per_step']:.3f} | {r['setup_rss_mib']:.0f} | {r['peak_rss_mib']:.0f} | {r['process_s']:.0f} |" + cuda_column(r))
    lines += [
        "",
        "## Sampling",
        "",
        "| size | model | sampler | steps | UNet evaluations per image | images per call | images/s | s/image | setup RSS MiB | peak RSS MiB | process s |" + cuda_column(),
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if on_cuda else ""),
    ]
    for r in results:
        if r["kind"] != "sample":
            continue
        if "error" in r:
            lines.append(f"| {r['size']} | {MODELS[r['size']]} | {label(r)} | {r['steps']} | | {r['batch']} | error: {r['error']} | | | | {r['process_s']} |" + cuda_column(r))
            continue
        lines.append(f"| {r['size']} | {r['model']} | {label(r)} | {r['steps']} | {r['evaluations_per_image']:g} | {r['images']} | {r['images_per_s']:.2f} | {r['s_per_image']:.3f} | "
                     f"{r['setup_rss_mib']:.0f} | {r['peak_rss_mib']:.0f} | {r['process_s']:.0f} |" + cuda_column(r))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case and print its JSON
    parser.add_argument("--quick", action="store_true", help="32 px only, 5 timed steps after 1, one sampling call.")
    parser.add_argument("--sizes", default="32,64", help="Comma list of 32 (noto-32) and 64 (fresh base preset).")
    parser.add_argument("--methods", default="", help="Comma list (default: every registered method).")
    parser.add_argument("--samplers", default="ddim,ddpm")
    parser.add_argument("--target", default=TARGET, help="Shots each method is set up and trained on.")
    parser.add_argument("--batch-size", type=int, help="Training batch (default: each method's own, as adapt or distill sets it).")
    parser.add_argument("--warmup", type=int, default=3, help="Untimed training steps first.")
    parser.add_argument("--steps", type=int, default=20, help="Timed training steps per method.")
    parser.add_argument("--sample-steps", type=int, default=25)
    parser.add_argument("--sample-batch", type=int, default=16, help="Images per sampling call.")
    parser.add_argument("--repeats", type=int, default=2, help="Timed sampling calls per case.")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per case (0: torch's default).")
    parser.add_argument("--out", type=Path, help="Result JSON, the table beside it as .md (default bench/results/speed.json, speed-quick.json with --quick).")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return
    args.out = args.out or RESULTS / ("speed-quick.json" if args.quick else "speed.json")
    if args.quick:
        args.sizes, args.warmup, args.steps, args.repeats = "32", 1, 5, 1
    args.sizes = [int(size) for size in args.sizes.split(",")]
    if any(size not in MODELS for size in args.sizes):
        raise SystemExit(f"--sizes: choose from {', '.join(map(str, MODELS))}")
    args.samplers = [name.strip() for name in args.samplers.split(",") if name.strip()]

    import torch

    started = time.perf_counter()
    header = {
        "processor": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "load_average_before": round(os.getloadavg()[0], 2),
    }
    todo = cases(args)
    if not todo:
        raise SystemExit("no cases: give --methods or --samplers")
    print(f"{len(todo)} cases, each in its own process")
    results = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for index, case in enumerate(todo, 1):
        result = run_in_subprocess(case)
        results.append(result)
        figure = result.get("error") or (f"{result['median_s']:.3f} s/step" if case["kind"] == "train" else f"{result['images_per_s']:.2f} images/s")
        print(f"[{index}/{len(todo)}] {case['kind']} {case['size']} px {label(case)}: {figure}, peak RSS {result.get('peak_rss_mib', '?')} MiB ({result['process_s']:.0f} s)")
        header["load_average_after"] = round(os.getloadavg()[0], 2)
        header["seconds"] = round(time.perf_counter() - started, 1)
        header["complete"] = index == len(todo)  # written after every case, so a run stopped early keeps what it measured
        table = markdown(results, header)
        args.out.write_text(json.dumps({**header, "cases": results}, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(table)
    print(table)
    print(f"wrote {args.out} and {args.out.with_suffix('.md')} ({header['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
