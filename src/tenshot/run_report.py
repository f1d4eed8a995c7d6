"""``tenshot report RUN``: one static HTML page per run, ``RUN/report.html`` (DESIGN.md, "Files a run writes").

The page shows
- the run's ``config.yaml`` and a summary (method, source, target, steps, time, final losses);
- one loss curve per logged key of ``log.jsonl``, drawn with matplotlib, and the memorisation
  monitor's curves where an adapt run logged them (:mod:`tenshot.metrics.memorisation`);
- the fixed-noise grids ``samples/step-N.png`` in step order;
- a table of ``metrics.json`` files (the run's own and any given), keys in DESIGN.md's order;
- for runs with target shots (``adapt``, ``demo``): the shots, and a few samples each beside its nearest
  shot by the LPIPS-style EL0 distance of the metrics (:mod:`tenshot.metrics.diversity`; DESIGN.md, Metrics).

Every image is embedded as a ``data:`` URI, so ``report.html`` alone is the whole report: it opens offline and
can be moved, archived or mailed. The samples beside the shots are, in this order, the first ``n`` images of
``samples`` (a folder the caller names), of ``RUN/generated/`` (where ``tenshot demo`` samples to), the cells
of the run's last training grid (EMA weights through the method's own sampler, already drawn: free), or
``n`` drawn from the run. Without drawing, a report takes about 2 s on 2 CPU cores (the EL0 network and the
features of 16 samples and 10 shots); this module is named ``run_report`` so that ``tenshot.report`` stays
the function of the Python API.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .cache import replace_file
from .config import ReportConfig
from .errors import TenshotError
from .runs import RUN_CONFIG, read_run_config
from .train.loop import COPY_STOP_KEY

REPORT_FILE = "report.html"
GRID_NAME = re.compile(r"^step-(\d+)\.png$")
NOT_LOSSES = ("step", "lr", "seconds")
MONITOR_PREFIX = "monitor/"
GRID_DISPLAY_WIDTH = 280  # CSS pixels a training grid is scaled towards (by a whole factor)
PAIR_DISPLAY_SIZE = 96  # CSS pixels a sample or shot is scaled towards (by a whole factor)
SHOWN_SHOTS = 40  # target images shown in the shots row (all of them are searched for the nearest)
FEATURE_BATCH = 64  # images per EL0 pass: bounded memory whatever the target's size


@dataclass
class ReportResult:
    """Where the report went and what it shows."""

    path: Path
    seconds: float
    grids: int
    loss_keys: list[str] = field(default_factory=list)
    pairs: int = 0  # samples shown beside their nearest shot
    samples_source: str = ""


@dataclass
class Pairing:
    """Samples, the shots, and for each sample the index of its nearest shot and their distance."""

    samples: np.ndarray
    shots: np.ndarray
    shot_names: list[str]
    nearest: np.ndarray
    distances: np.ndarray
    source: str


# --- reading a run ---------------------------------------------------------------------------------


def read_config_text(run: Path) -> tuple[dict, str]:
    """The run's ``config.yaml`` as a mapping and as text."""
    values = read_run_config(run, required=True)
    return values, (run / RUN_CONFIG).read_text()


def read_log(path: Path) -> tuple[list[dict], int]:
    """The records of ``log.jsonl`` and how many lines were not JSON objects (a hard kill can cut the last one)."""
    if not path.is_file():
        return [], 0
    records, skipped = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), (int, float)):
            records.append(record)
        else:
            skipped += 1
    return records, skipped


def loss_series(records: list[dict], monitor: bool = False) -> dict[str, tuple[list[float], list[float]]]:
    """``key -> (steps, values)`` for every numeric logged key but step, lr and seconds; ``total`` first. The
    memorisation monitor's keys (``monitor/...``, :mod:`tenshot.metrics.memorisation`) alone with ``monitor``."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    for record in records:
        for key, value in record.items():
            if key in NOT_LOSSES or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if key.startswith(MONITOR_PREFIX) != monitor:
                continue
            steps, values = series.setdefault(key, ([], []))
            steps.append(float(record["step"]))
            values.append(float(value))
    return dict(sorted(series.items(), key=lambda item: item[0] != "total"))


def training_grids(run: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``samples/step-N.png``, in step order."""
    folder = run / "samples"
    if not folder.is_dir():
        return []
    grids = [(int(match.group(1)), path) for path in folder.iterdir() if (match := GRID_NAME.match(path.name))]
    return sorted(grids)


def read_metrics(paths: list[tuple[Path, str]]) -> list[tuple[str, dict]]:
    """``(label, metrics)`` of each ``(metrics.json, label)``; a missing or malformed file is an error."""
    tables = []
    for path, label in paths:
        if not path.is_file():
            raise TenshotError(f"{path}: no such metrics file")
        try:
            values = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise TenshotError(f"{path}: not a metrics.json ({error})") from None
        if not isinstance(values, dict):
            raise TenshotError(f"{path}: not a metrics.json (expected a JSON object)")
        tables.append((label or str(path), values))
    return tables


# --- samples and their nearest shots ---------------------------------------------------------------


def _first_images(folder: Path, n: int) -> np.ndarray:
    from .data.images import list_images, load_image, load_images

    files = list_images(folder)[:n]
    size = min(load_image(files[0]).shape[:2])
    return load_images(files, size)


def report_samples(run: Path, run_config: dict, config: ReportConfig) -> tuple[np.ndarray | None, str]:
    """Up to ``config.n`` samples of the run as uint8 ``(N, S, S, 3)`` and where they came from (see the module)."""
    from .data.images import load_image, split_grid

    if config.samples:
        return _first_images(Path(config.samples), config.n), f"the first images of {config.samples}"
    generated = run / "generated"
    if generated.is_dir() and any(generated.iterdir()):
        return _first_images(generated, config.n), f"the first images of {generated.name}/"
    grids = training_grids(run)
    count = (run_config.get("train") or {}).get("preview_count")
    if grids and isinstance(count, int) and count > 0:
        step, path = grids[-1]
        try:
            cells = split_grid(load_image(path), count)
        except ValueError:
            cells = None
        if cells is not None:
            seed = run_config["train"].get("seed", 0)
            return cells[: config.n], f"the last training grid, samples/{path.name} (step {step}: EMA weights, the method's sampler, seed {seed})"
    if (run / "model").is_dir():
        import torch

        from .sampling import generate, load_for_sampling, resolve_device

        method = load_for_sampling(run, resolve_device(config.device))
        with torch.no_grad():
            images = generate(method, config.n, steps=config.steps, seed=config.seed, batch_size=config.n)
        return images, f"{config.n} images drawn from the run ({config.steps} DDIM steps, seed {config.seed})"
    return None, "the run has no samples yet (no generated/, training grid or model/)"


def nearest_shots(samples: np.ndarray, shots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each sample's nearest shot (index) and its distance, by the LPIPS-style EL0 distance of the metrics
    (Zhang et al. 2018, eq. 1 with unit weights; :func:`tenshot.metrics.diversity.lpips_vectors`)."""
    from .metrics.evaluate import EL0Runner

    runner = EL0Runner(batch_size=FEATURE_BATCH, progress=False)
    # the shots' vectors (1.4 MB each at 224 px) are compared batch by batch, never held all at once
    _, shots_to_samples = runner.pooled_and_distances(shots, runner.vectors(samples), "shots")
    distances = shots_to_samples.T
    nearest = distances.argmin(axis=1)
    return nearest, distances[np.arange(len(samples)), nearest]


def pair_with_shots(run: Path, run_config: dict, config: ReportConfig) -> tuple[Pairing | None, str]:
    """The samples beside their nearest shots, or None and why not."""
    from .data.domains import domain_files
    from .data.images import load_images

    target = run_config.get("target")
    if not target:
        return None, ""
    samples, source = report_samples(run, run_config, config)
    if samples is None:
        return None, source
    try:
        files = domain_files(target, samples.shape[1], default_split="shots")
        shots = load_images(files, samples.shape[1])
    except TenshotError as error:
        return None, f"the shots could not be loaded: {error}"
    nearest, distances = nearest_shots(samples, shots)
    return Pairing(samples, shots, [file.stem for file in files], nearest, distances, source), ""


# --- HTML ------------------------------------------------------------------------------------------

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1180px; padding: 0 16px; color: #222; }
h1 { font-size: 24px; margin-bottom: 4px; } h2 { font-size: 19px; margin-top: 32px; border-bottom: 1px solid #ddd; }
nav a { margin-right: 14px; } .note { color: #666; } pre { background: #f6f6f6; padding: 10px; overflow-x: auto; }
table { border-collapse: collapse; } td, th { padding: 3px 10px; border-bottom: 1px solid #eee; text-align: left; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
.row { display: flex; flex-wrap: wrap; gap: 14px; } figure { margin: 0; } figcaption { font-size: 13px; color: #555; }
img.pixels { image-rendering: pixelated; } .pair { display: flex; gap: 4px; align-items: flex-start; }
figcaption { overflow-wrap: anywhere; }
"""


def data_uri(image: np.ndarray | Image.Image) -> str:
    """A PNG ``data:`` URI of a uint8 ``(H, W, 3)`` array or a PIL image."""
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buffer, format="PNG")
    return _png_uri(buffer.getvalue())


def _png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img(image: np.ndarray | Image.Image, alt: str, width: int, height: int) -> str:
    return f'<img class="pixels" src="{data_uri(image)}" alt="{html.escape(alt)}" width="{width}" height="{height}">'


def _scaled(image: np.ndarray, target: int) -> tuple[int, int]:
    """CSS size of ``image`` scaled by the whole factor that brings its width nearest ``target``."""
    factor = max(1, round(target / image.shape[1]))
    return image.shape[1] * factor, image.shape[0] * factor


def _number(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return html.escape(str(value))
    return str(value) if isinstance(value, int) else f"{value:.4g}"


def _summary(run: Path, run_config: dict, records: list[dict]) -> str:
    rows = [("run", str(run.resolve()))]
    for key in ("method", "source", "target", "data", "preset", "size"):
        if key in run_config:
            rows.append((key, str(run_config[key])))
    if run_config.get("options"):
        rows.append(("options", ", ".join(f"{k}={v}" for k, v in run_config["options"].items())))
    if records:
        last = records[-1]
        planned = (run_config.get("train") or {}).get("steps")
        rows.append(("steps", f"{last['step']}" + (f" of {planned}" if planned else "")))
        if "seconds" in last:
            rows.append(("training time", f"{float(last['seconds']):.0f} s (the whole run, resumed parts included, from log.jsonl)"))
        losses = {k: v for k, v in last.items() if k not in NOT_LOSSES and not k.startswith(MONITOR_PREFIX) and k != COPY_STOP_KEY}
        rows.append(("last logged losses", ", ".join(f"{k} {_number(v)}" for k, v in losses.items())))
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


SMOOTH_ABOVE = 50  # more logged values than this: the raw series faint, a centred running mean on top
CURVE_SIZE = (5.2, 2.6)  # inches at 100 dpi: the CSS size of each curve
CURVE_DPI = 200  # drawn at twice its CSS size, sharp on high-density screens


def uses_log_scale(values) -> bool:
    """A log y axis for positive values spanning at least a decade (max / min >= 10)."""
    values = np.asarray(values, dtype=float)
    return bool(len(values) and values.min() > 0 and values.max() / values.min() >= 10.0)


def running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Centred running mean: each value averaged with its neighbours in a ``window`` wide span (shorter at
    the ends), so that the mean does not lag behind a falling loss."""
    sums = np.cumsum(np.concatenate([[0.0], values]))
    index = np.arange(len(values))
    starts = np.maximum(0, index - window // 2)
    ends = np.minimum(len(values), index - window // 2 + window)
    return (sums[ends] - sums[starts]) / (ends - starts)


def curve_figure(steps, values, title: str):
    """A matplotlib figure of ``values`` against ``steps``: log y axis by :func:`uses_log_scale`, and above
    ``SMOOTH_ABOVE`` points the raw series faint under its running mean."""
    from matplotlib.figure import Figure  # no pyplot: a figure alone renders with Agg, whatever the backend

    x, y = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or len(x) == 0:
        raise ValueError(f"expected two equal non-empty 1-d series, got {x.shape} and {y.shape}")
    figure = Figure(figsize=CURVE_SIZE, dpi=100, layout="constrained")
    axes = figure.add_subplot()
    caption = title
    if len(y) > SMOOTH_ABOVE:
        window = max(2, len(y) // 25)
        axes.plot(x, y, color="#9ecae1", linewidth=1)
        axes.plot(x, running_mean(y, window), color="#08519c", linewidth=2)
        caption += f"; dark: running mean of {window} logged values"
    else:
        axes.plot(x, y, color="#08519c", linewidth=2, marker="o" if len(y) == 1 else None)
    if uses_log_scale(y):
        axes.set_yscale("log")
        caption += " (log scale)"
    axes.set_title(caption, fontsize=10, loc="left")
    axes.set_xlabel("step")
    axes.grid(color="#e6e6e6")
    return figure


def _figure_img(figure, alt: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=CURVE_DPI)
    width, height = (round(inches * 100) for inches in CURVE_SIZE)
    return f'<img src="{_png_uri(buffer.getvalue())}" alt="{html.escape(alt)}" width="{width}" height="{height}">'


def _curves(series: dict, what: str) -> str:
    figures = [f"<figure>{_figure_img(curve_figure(steps, values, key), f'{key} {what}')}</figure>" for key, (steps, values) in series.items()]
    return f'<div class="row">{"".join(figures)}</div>'


def _losses_section(series: dict, skipped: int) -> str:
    if not series:
        return '<p class="note">No losses logged (no log.jsonl).</p>'
    note = f'<p class="note">{skipped} unreadable line(s) of log.jsonl skipped.</p>' if skipped else ""
    return _curves(series, "loss curve") + note


def _monitor_section(records: list[dict]) -> str:
    stops = [record for record in records if isinstance(record.get(COPY_STOP_KEY), dict)]
    note = (
        "Each preview scored against the shots (tenshot.metrics.memorisation): the mean distance of a sample to its "
        "nearest shot, and the share of samples nearer to a shot than the two closest shots are to each other."
    )
    if stops:
        stop = stops[-1]
        note += f" Training stopped on copies at step {stop['step']}; the model is the EMA of step {stop[COPY_STOP_KEY].get('kept-step')}."
    return _curves(loss_series(records, monitor=True), "monitor curve") + f'<p class="note">{html.escape(note)}</p>'


def _grids_section(grids: list[tuple[int, Path]]) -> str:
    from .data.images import load_image

    if not grids:
        return '<p class="note">No training grids (samples/step-N.png).</p>'
    figures = []
    for step, path in grids:
        image = load_image(path)
        width, height = _scaled(image, GRID_DISPLAY_WIDTH)
        figures.append(f"<figure>{_img(image, f'samples at step {step}', width, height)}<figcaption>step {step}</figcaption></figure>")
    note = '<p class="note">The same noise at every step: the EMA weights through the method\'s sampler.</p>'
    return f'{note}<div class="row">{"".join(figures)}</div>'


def _metrics_section(tables: list[tuple[str, dict]]) -> str:
    from .metrics.evaluate import KEY_ORDER

    if not tables:
        return '<p class="note">No metrics.json: run <code>tenshot evaluate</code>, or pass files with <code>--metrics</code>.</p>'
    keys = [key for key in KEY_ORDER if any(key in values for _, values in tables)]
    keys += sorted({key for _, values in tables for key in values if key not in keys and key != "settings"})
    head = "".join(f"<th>{html.escape(label)}</th>" for label, _ in tables)
    rows = "".join(
        f"<tr><th>{html.escape(key)}</th>" + "".join(f'<td class="number">{_number(values[key]) if key in values else ""}</td>' for _, values in tables) + "</tr>"
        for key in keys
    )
    settings = "".join(
        f"<details><summary>settings of {html.escape(label)}</summary><table>"
        + "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_number(v)}</td></tr>" for k, v in values["settings"].items())
        + "</table></details>"
        for label, values in tables
        if isinstance(values.get("settings"), dict)
    )
    return f"<table><tr><th>metric</th>{head}</tr>{rows}</table>{settings}"


def _shots_section(pairing: Pairing) -> str:
    """The shots (the first ``SHOWN_SHOTS`` and every one nearest to a sample) and the samples beside theirs."""
    counts = np.bincount(pairing.nearest, minlength=len(pairing.shots))
    width, height = _scaled(pairing.shots[0], PAIR_DISPLAY_SIZE)
    shown = [i for i in range(len(pairing.shots)) if i < SHOWN_SHOTS or counts[i]]
    shots = "".join(
        f'<figure style="width: {width}px">{_img(pairing.shots[i], f"shot {pairing.shot_names[i]}", width, height)}'
        f"<figcaption>{html.escape(pairing.shot_names[i])}: nearest to {counts[i]}</figcaption></figure>"
        for i in shown
    )
    hidden = len(pairing.shots) - len(shown)
    more = f" Not shown: {hidden} more, nearest to none of them." if hidden else ""
    pairs = "".join(
        f'<figure style="width: {2 * width + 4}px"><div class="pair">{_img(sample, f"sample {index}", width, height)}{_img(pairing.shots[shot], f"nearest shot {pairing.shot_names[shot]}", width, height)}</div>'
        f"<figcaption>sample {index} · {html.escape(pairing.shot_names[shot])} · d {distance:.3f}</figcaption></figure>"
        for index, (sample, shot, distance) in enumerate(zip(pairing.samples, pairing.nearest, pairing.distances))
    )
    return (
        f"<h3>The {len(pairing.shots)} shots</h3><p class=\"note\">Under each: how many of the samples below are nearest to it.{more}</p>"
        f'<div class="row">{shots}</div>'
        f"<h3>Samples beside their nearest shot</h3><p class=\"note\">Samples: {html.escape(pairing.source)}. "
        "Distance: LPIPS-style on EfficientNet-Lite0 stages (unit weights), the distance of the nearest-shot and "
        "intra-cluster metrics; a sample that repeats its shot is a memorised copy.</p>"
        f'<div class="row">{pairs}</div>'
    )


def render_html(run: Path, run_config: dict, config_text: str, records: list[dict], skipped: int, grids, tables, pairing: Pairing | None, pairing_note: str) -> str:
    """The whole page as one string."""
    title = f"tenshot run {run.resolve().name}"
    sections = [
        ("summary", "Summary", _summary(run, run_config, records)),
        ("losses", "Loss curves", _losses_section(loss_series(records), skipped)),
        *([("monitor", "Memorisation monitor", _monitor_section(records))] if loss_series(records, monitor=True) else []),
        ("grids", "Samples over training", _grids_section(grids)),
        ("metrics", "Metrics", _metrics_section(tables)),
    ]
    if pairing is not None:
        sections.append(("shots", "Shots and nearest samples", _shots_section(pairing)))
    elif pairing_note:
        sections.append(("shots", "Shots and nearest samples", f'<p class="note">Not shown: {html.escape(pairing_note)}</p>'))
    sections.append(("config", "config.yaml", f"<pre>{html.escape(config_text)}</pre>"))
    nav = "".join(f'<a href="#{anchor}">{html.escape(heading)}</a>' for anchor, heading, _ in sections)
    body = "".join(f'<h2 id="{anchor}">{html.escape(heading)}</h2>{content}' for anchor, heading, content in sections)
    written = time.strftime("%Y-%m-%d %H:%M")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>'
        f'<body><h1>{html.escape(title)}</h1><p class="note">Written by tenshot report on {written}.</p>'
        f"<nav>{nav}</nav>{body}</body></html>\n"
    )


def write_report(config: ReportConfig) -> ReportResult:
    """Write ``report.html`` in the run folder ``config.run`` (see the module) and say what it shows."""
    config.validate()
    started = time.perf_counter()
    run = Path(config.run)
    run_config, config_text = read_config_text(run)
    records, skipped = read_log(run / "log.jsonl")
    grids = training_grids(run)
    own = run / "metrics.json"
    given = [(Path(path), "") for path in config.metrics if Path(path).resolve() != own.resolve()]
    tables = read_metrics(([(own, "metrics.json (this run)")] if own.is_file() else []) + given)
    pairing, pairing_note = pair_with_shots(run, run_config, config)
    page = render_html(run, run_config, config_text, records, skipped, grids, tables, pairing, pairing_note)
    out = run / REPORT_FILE
    replace_file(out, lambda staging: staging.write_text(page, encoding="utf-8"))
    return ReportResult(
        path=out,
        seconds=time.perf_counter() - started,
        grids=len(grids),
        loss_keys=list(loss_series(records)),
        pairs=0 if pairing is None else len(pairing.samples),
        samples_source="" if pairing is None else pairing.source,
    )
