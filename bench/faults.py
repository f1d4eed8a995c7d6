"""Fault campaign: SIGKILL at random moments of ``pretrain``, ``adapt`` and ``distill``, then ``--resume``, and
the result compared bit for bit with an uninterrupted run (issue: faults and scale, item 3).

Each command runs once uninterrupted on a tiny 16 px model (the reference), timed from the moment its run folder
has a ``config.yaml`` (interpreter start-up, which dominates under load, is not where the faults are) to its
exit. Each trial starts the same command in a fresh folder, waits for its ``config.yaml`` and kills it with SIGKILL
at a moment drawn uniformly over the reference's time from there (the draws of the campaign's seed), notes where
the kill landed from what the folder holds (nothing yet, before the
first checkpoint, during a checkpoint write: a staging folder left in ``checkpoints/``, during the final export:
a staging folder left beside ``model/``, or between checkpoints), and then runs ``--resume`` (a plain rerun
when the kill came before ``config.yaml`` existed, as a user would). The trial passes when the final
``model/`` weights and every tensor of the last checkpoint equal the reference's, and no staging folder is left.

    .venv/bin/python bench/faults.py --trials 4
    .venv/bin/python bench/faults.py --trials 2 --at writes --name faults-writes   # kills aimed at the writes

``--at writes`` aims each kill instead at the moment a staging folder appears: of a checkpoint, or of the final
``model/`` (the windows are milliseconds long, so random moments rarely land in them). Writes
``bench/results/NAME.json`` and ``NAME.md``.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
TENSHOT = str(Path(sys.executable).parent / "tenshot")
WEIGHTS = Path("model") / "unet" / "diffusion_pytorch_model.safetensors"
# long enough that training and its checkpoints, not the closing export and report, take most of a run's time
TRAIN = ["--steps", "48", "--batch-size", "4", "--checkpoint-every", "4", "--keep-checkpoints", "2", "--preview-every", "24",
         "--preview-count", "2", "--mixed-precision", "no"]  # fmt: skip


def write_images(folder: Path, count: int, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((16, 16), Image.BILINEAR).save(folder / f"{index:03d}.png")
    return folder


def commands(work: Path) -> dict[str, list[str]]:
    """The three training commands, each writing to the folder given after it (``--out`` appended)."""
    data, shots = write_images(work / "data", 8, 0), write_images(work / "shots", 4, 1)
    source = work / "source"
    if not (source / WEIGHTS).is_file():
        shutil.rmtree(source, ignore_errors=True)
        subprocess.run([TENSHOT, "pretrain", "--data", str(data), "--size", "16", "--preset", "tiny", *TRAIN, "--out", str(source)], check=True, capture_output=True)
    return {
        "pretrain": ["pretrain", "--data", str(data), "--size", "16", "--preset", "tiny", *TRAIN],
        "adapt": ["adapt", "--source", str(source), "--target", str(shots), "--method", "domainstudio", *TRAIN],
        "distill": ["distill", str(source), "--data", "teacher", "--teacher-samples", "8", "--teacher-steps", "2", *TRAIN],
    }


def run(argv: list[str], out: Path, resume: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([TENSHOT, *argv, "--out", str(out), *(["--resume"] if resume else [])], capture_output=True, text=True)


def start(argv: list[str], out: Path) -> tuple[subprocess.Popen, float]:
    """The command started in the background, once its run folder has a config.yaml: (process, that moment)."""
    process = subprocess.Popen([TENSHOT, *argv, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while not (out / "config.yaml").is_file() and process.poll() is None:
        time.sleep(0.05)
    return process, time.perf_counter()


def landed(out: Path) -> str:
    """Where a kill landed, read from what the run folder holds."""
    if not (out / "config.yaml").is_file():
        return "before the run started"
    if any(p.name.startswith(".") for p in (out / "checkpoints").glob("*")) if (out / "checkpoints").is_dir() else False:
        return "during a checkpoint write"
    if any(p.name.startswith(".model-") for p in out.iterdir()):
        return "during the final export"
    if not (out / "checkpoints").is_dir() or not any((out / "checkpoints").iterdir()):
        return "before the first checkpoint"
    if (out / WEIGHTS).is_file():
        return "after the export"
    return "between checkpoints"


def tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def identical(a: Path, b: Path) -> bool:
    """The final weights and every tensor file of the last checkpoint are equal bit for bit."""
    import torch

    files = [WEIGHTS] + sorted(p.relative_to(a) for p in (a / "checkpoints").rglob("*.safetensors"))
    for file in files:
        if not (b / file).is_file():
            return False
        first, second = tensors(a / file), tensors(b / file)
        if first.keys() != second.keys() or any(not torch.equal(first[k], second[k]) for k in first):
            return False
    return True


def staging_left(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob(".*") if p.is_dir())


def kill_and_resume(process: subprocess.Popen, argv: list[str], reference: Path, out: Path) -> dict:
    """SIGKILL ``process`` now, note where it landed, resume it (a plain rerun when it had no config.yaml yet) and
    compare the result with ``reference``."""
    finished_first = process.poll() is not None
    process.send_signal(signal.SIGKILL)
    process.wait()
    where = "after the process had ended" if finished_first else landed(out)
    resumed = run(argv, out, resume=(out / "config.yaml").is_file())
    return {
        "landed": where, "resume_status": resumed.returncode, "resume_error": resumed.stderr.strip().splitlines()[-1] if resumed.returncode else "",
        "identical": resumed.returncode == 0 and identical(reference, out), "staging_left": staging_left(out),
    }  # fmt: skip


def trial(argv: list[str], reference: Path, out: Path, seconds: float, rng: random.Random) -> dict:
    """A SIGKILL at a moment drawn uniformly over the reference's ``seconds`` after config.yaml appears."""
    delay = rng.uniform(0.0, seconds)
    process, _ = start(argv, out)
    time.sleep(delay)
    return {"kill_after_s": round(delay, 2), **kill_and_resume(process, argv, reference, out)}


def staging_appears(out: Path, where: str) -> bool:
    """A staging folder of a checkpoint (``checkpoint``) or of the final ``model/`` (``export``) exists now."""
    if where == "checkpoint":
        return (out / "checkpoints").is_dir() and any(p.name.startswith(".") for p in (out / "checkpoints").iterdir())
    return out.is_dir() and any(p.name.startswith(".model-") for p in out.iterdir())


def targeted_trial(argv: list[str], reference: Path, out: Path, where: str) -> dict:
    """A SIGKILL the moment a staging folder of ``where`` (checkpoint or export) appears, polled every millisecond."""
    process, started = start(argv, out)
    while process.poll() is None and not staging_appears(out, where):
        time.sleep(0.001)
    killed_after = round(time.perf_counter() - started, 2)
    return {"kill_after_s": killed_after, "aimed_at": where, **kill_and_resume(process, argv, reference, out)}


def markdown(results: dict) -> str:
    how = ("the moment a staging folder of a checkpoint (even trials) or of the final model/ (odd trials) appears" if results.get("at") == "writes"
           else "a moment drawn uniformly over each command's uninterrupted wall time from its config.yaml to its exit")  # fmt: skip
    lines = [f"Fault campaign: SIGKILL at {how}, then `--resume`; tiny 16 px model, 48 steps, checkpoints every 4. {results['date']}, `{results['command']}`.", ""]
    lines += ["| command | trials | identical to the uninterrupted run | no staging left | where the kills landed |", "|---|---|---|---|---|"]
    for name, trials in results["trials"].items():
        places: dict[str, int] = {}
        for each in trials:
            places[each["landed"]] = places.get(each["landed"], 0) + 1
        spread = ", ".join(f"{place} {count}" for place, count in sorted(places.items()))
        lines.append(f"| {name} | {len(trials)} | {sum(t['identical'] for t in trials)} | {sum(not t['staging_left'] for t in trials)} | {spread} |")
    failures = [(name, t) for name, trials in results["trials"].items() for t in trials if not t["identical"] or t["staging_left"]]
    lines += ["", "Failures:" if failures else "No failures."]
    lines += [f"- {name}, killed after {t['kill_after_s']} s ({t['landed']}): status {t['resume_status']} {t['resume_error']} staging {t['staging_left']}" for name, t in failures]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10, help="SIGKILLs per command.")
    parser.add_argument("--commands", default="pretrain,adapt,distill")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--at", choices=["random", "writes"], default="random",
                        help="random: kills at uniform moments; writes: each kill the moment a checkpoint's or the final model's staging folder appears.")
    parser.add_argument("--name", default="faults")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    results = {"date": time.strftime("%Y-%m-%d"), "command": "python bench/faults.py " + " ".join(sys.argv[1:]), "at": args.at, "reference_seconds": {}, "trials": {}}
    with tempfile.TemporaryDirectory(prefix="tenshot-faults-") as tmp:
        work = Path(tmp)
        every = commands(work)
        for name in args.commands.split(","):
            argv = every[name]
            reference = work / f"{name}-reference"
            process, started = start(argv, reference)
            _, stderr = process.communicate()
            seconds = time.perf_counter() - started
            if process.returncode:
                raise SystemExit(f"{name}: the uninterrupted run failed: {stderr.strip().splitlines()[-1]}")
            results["reference_seconds"][name] = round(seconds, 1)
            results["trials"][name] = []
            for index in range(args.trials):
                if args.at == "writes":  # alternately at a checkpoint write and at the final export
                    outcome = targeted_trial(argv, reference, work / f"{name}-{index}", ("checkpoint", "export")[index % 2])
                else:
                    outcome = trial(argv, reference, work / f"{name}-{index}", seconds, rng)
                results["trials"][name].append(outcome)
                print(name, index, outcome, flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
