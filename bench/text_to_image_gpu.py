"""Text-to-image DomainStudio at Stable Diffusion's resolution on a GPU (issue: the papers' own source models,
item 4): memory and step time of the code path, on a tiny random pipeline (Stable Diffusion's weights cannot be
downloaded here).

The pipeline is ``tests/tiny_pipeline.py``'s at ``--pixels`` (512: a VAE of factor 8, so 64x64 latents as Stable
Diffusion's). The target: the 10 ``emoji:openmoji`` shots, rendered at that size. In one process, through the
Python API: ``adapt --method domainstudio --prompt "a [v] emoji" --class-prompt "an emoji"`` (the class images
drawn first by the source, then ``--steps`` steps of batch 4 + 4, gradient checkpointing and ``--mixed-precision
auto``, so bf16 on a GPU), then ``sample`` of 4 images with guidance. For each: wall seconds and the CUDA peak; for
adapt also the seconds per step from the run's ``log.jsonl`` (the last logged interval, past the warm-up). On CUDA
each asserts it made CUDA allocations (``gpu_check.measured``).

    python bench/text_to_image_gpu.py                                          # on the GPU: about a minute
    .venv/bin/python bench/text_to_image_gpu.py --device cpu --pixels 64 --steps 2 --class-images 4 --name t2i-dry

Writes ``bench/results/NAME.json`` and ``.md`` (default ``text-to-image-gpu``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
sys.path.insert(0, str(REPO / "tests"))

from gpu_check import measured  # noqa: E402
from tiny_pipeline import build_tiny_pipeline  # noqa: E402


def run(work: Path, args) -> list[dict]:
    from tenshot import api
    from tenshot.config import AdaptConfig, SampleConfig, adapt_train_defaults

    on_cuda = args.device.startswith("cuda")
    pipeline = build_tiny_pipeline(work / "pipeline", args.pixels, vae_levels=4)
    options = {"prompt": "a [v] emoji", "class_prompt": "an emoji", "class_images": args.class_images}
    train = adapt_train_defaults("domainstudio", options)
    train.steps, train.log_every, train.preview_count = args.steps, max(1, args.steps // 4), 0
    train.checkpoint_every = train.preview_every = args.steps
    run_folder = work / "adapt"
    adapt = AdaptConfig(source=str(pipeline), target="emoji:openmoji:shots", method="domainstudio", options=options, out=str(run_folder), train=train)
    rows = [measured("adapt", lambda: api.adapt(adapt), on_cuda)]
    steps = [json.loads(line) for line in (run_folder / "log.jsonl").read_text().splitlines() if '"step"' in line and '"seconds"' in line]
    if len(steps) >= 2:
        rows[0]["seconds_per_step"] = round((steps[-1]["seconds"] - steps[-2]["seconds"]) / (steps[-1]["step"] - steps[-2]["step"]), 3)
    sample = SampleConfig(model=str(run_folder), out=str(work / "samples"), n=4, prompt="a [v] emoji", guidance_scale=7.5, device=args.device)
    rows.append(measured("sample 4 (guided)", lambda: api.sample(sample), on_cuda))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--pixels", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--class-images", type=int, default=16)
    parser.add_argument("--name", default="text-to-image-gpu")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --device cpu for a dry run")
    with tempfile.TemporaryDirectory(prefix="tenshot-t2i-") as tmp:
        rows = run(Path(tmp), args)
    header = {"date": time.strftime("%Y-%m-%d"), "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
              "torch": torch.__version__, "command": "python bench/text_to_image_gpu.py " + " ".join(sys.argv[1:])}  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({**header, "pixels": args.pixels, "rows": rows}, indent=2) + "\n")
    lines = [f"Text-to-image DomainStudio on a tiny random pipeline at {args.pixels} px ({args.pixels // 8}x{args.pixels // 8} latents), "
             f"{header['device']} (torch {header['torch']}), {header['date']}, `{header['command']}`.", "",
             "| command | wall s | s/step | CUDA peak MiB |", "|---|---:|---:|---:|"]  # fmt: skip
    lines += [f"| {r['command']} | {r['seconds']} | {r.get('seconds_per_step', '')} | {r.get('cuda_peak_mib', '')} |" for r in rows]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
