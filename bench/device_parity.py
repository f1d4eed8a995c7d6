"""Does a machine render EmojiShift and sample a model as this one does?

The samplers table, drawn and scored on a lent H200 (``samplers.md``), gives the unadapted ``noto-32`` kid-el0 0.067
and swd 64 at DDIM-25 against noto's reference half, where the CPU gives 0.016 (``samplers-cpu-check.md``, 200
samples, and the model card's 0.0159): either the device renders the reference differently or it samples
differently. This script tells the two apart in a few seconds:

- **rendering**: per style, a SHA-256 over the file names and RGBA pixels of every 32 px rendering (what
  ``tenshot evaluate --reference emoji:STYLE`` reads), and the mean of each channel; ``--expect`` compares them with
  another machine's file of the same kind (``bench/results/device-parity-cpu.json``, made here);
- **sampling**: with ``--device``, the same ``--n`` images of ``noto-32`` (DDIM-25, seed 0, batch 16) drawn on that
  device and on the CPU in this process, and their mean and largest absolute pixel difference (0-255).

    .venv/bin/python bench/device_parity.py --out bench/results/device-parity-cpu.json
    python bench/device_parity.py --device cuda --expect bench/results/device-parity-cpu.json --out bench/results/gpu-parity.json
"""

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

STYLES = ("noto", "openmoji")
SIZE = 32


def rendering(style: str) -> dict:
    """SHA-256 over (name, RGBA pixels) of every rendering of ``style`` at ``SIZE`` px, their count and channel means."""
    from tenshot.data.emoji import rendered_folder

    digest, total, count = hashlib.sha256(), np.zeros(4), 0
    for path in sorted(rendered_folder(style, SIZE).glob("*.png")):
        pixels = np.asarray(Image.open(path).convert("RGBA"))
        digest.update(path.name.encode() + b"\0" + pixels.tobytes())
        total += pixels.reshape(-1, 4).mean(axis=0)
        count += 1
    return {"files": count, "sha256": digest.hexdigest(), "channel-means": [round(float(v), 3) for v in total / max(count, 1)]}


def sampled(device: str, n: int, out: Path) -> np.ndarray:
    """``n`` DDIM-25 samples of ``noto-32`` drawn on ``device`` into ``out``, as one int16 array."""
    from tenshot import api
    from tenshot.config import SampleConfig

    api.sample(SampleConfig(model="noto-32", out=str(out), n=n, steps=25, sampler="ddim", seed=0, batch_size=16, device=device))
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(out.glob("*.png"))]).astype(np.int16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", help="Also sample noto-32 on this device and on the CPU, and compare (e.g. cuda).")
    parser.add_argument("--n", type=int, default=64, help="Samples per device.")
    parser.add_argument("--expect", help="Another machine's output of this script: say whether each rendering matches it.")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    import torch

    report = {"torch": torch.__version__, "pillow": Image.__version__, "rendering": {style: rendering(style) for style in STYLES}}
    if args.expect:
        expected = json.loads(Path(args.expect).read_text())["rendering"]
        report["rendering-matches"] = {style: report["rendering"][style]["sha256"] == expected[style]["sha256"] for style in STYLES}
    if args.device:
        with tempfile.TemporaryDirectory() as work:
            on_device, on_cpu = sampled(args.device, args.n, Path(work, "device")), sampled("cpu", args.n, Path(work, "cpu"))
        difference = np.abs(on_device - on_cpu)
        report["sampling"] = {"device": args.device, "n": args.n, "mean-abs-difference": round(float(difference.mean()), 3),
                              "max-abs-difference": int(difference.max()),
                              "images-differing-by-over-8": int((difference.reshape(args.n, -1).max(axis=1) > 8).sum())}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    json.dump(report, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
