"""``tenshot report``: the page renders in headless Chromium with every image, loss curves are drawn, samples
pair with their nearest shot, pretrain runs (no shots) work, and adapt writes the report itself."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_images
from test_cli import invoke
from tenshot import api
from tenshot.config import AdaptConfig, DemoConfig, PretrainConfig, ReportConfig, TrainConfig
from tenshot.data.images import make_grid, split_grid
from tenshot.run_report import CURVE_DPI, CURVE_SIZE, curve_figure, loss_series, nearest_shots, read_log, running_mean, uses_log_scale

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


# --- a browser ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through its WebDriver (Debian chromium and chromium-driver; `make test` installs them)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER), "install chromium and chromium-driver (make system)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


def rendered_images(browser, page: Path) -> list[dict]:
    """Open ``page`` (file://) and return every <img>'s alt text, load state and natural size, plus the headings."""
    browser.get(page.resolve().as_uri())
    return browser.execute_script(
        "return Array.from(document.images, i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}));"
    )


def headings(browser) -> list[str]:
    return browser.execute_script("return Array.from(document.querySelectorAll('h2'), h => h.textContent);")


def assert_all_loaded(images: list[dict]) -> None:
    assert images, "the page shows no images"
    broken = [image["alt"] for image in images if not (image["complete"] and image["width"] > 0 and image["height"] > 0)]
    assert not broken, f"images that did not render: {broken}"


# --- runs --------------------------------------------------------------------------------------------------


TRAIN = {"batch_size": 4, "mixed_precision": "no", "log_every": 1, "preview_count": 4, "preview_steps": 2, "checkpoint_every": 100}


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory, image_folder) -> Path:
    """A 16 px `tiny` pretrain run: 3 steps, a loss logged each step, grids at steps 2 and 3."""
    out = tmp_path_factory.mktemp("report") / "pretrain"
    train = TrainConfig(steps=3, preview_every=2, **TRAIN)
    api.pretrain(PretrainConfig(data=str(image_folder), out=str(out), size=16, preset="tiny", train=train))
    return out


@pytest.fixture(scope="module")
def adapt_run(tmp_path_factory, pretrain_run) -> tuple[Path, Path, object]:
    """domainstudio (several logged losses) adapted from the pretrain run to four 16 px shots for 2 steps."""
    root = tmp_path_factory.mktemp("report-adapt")
    shots = write_images(root / "shots", 4, 16, seed=5)
    train = TrainConfig(steps=2, preview_every=1, **TRAIN)
    result = api.adapt(AdaptConfig(source=str(pretrain_run), target=str(shots), method="domainstudio", out=str(root / "run"), train=train))
    return root / "run", shots, result


def test_pretrain_run_report_renders_without_shots(pretrain_run, browser):
    assert (pretrain_run / "report.html").is_file()  # written at the end of training
    result = api.report(ReportConfig(run=str(pretrain_run)))
    assert result.path == pretrain_run / "report.html"
    assert result.grids == 2 and result.pairs == 0 and result.loss_keys[0] == "total"
    images = rendered_images(browser, result.path)
    assert_all_loaded(images)
    alts = [image["alt"] for image in images]
    assert alts == [f"{key} loss curve" for key in result.loss_keys] + ["samples at step 2", "samples at step 3"]
    assert "Shots and nearest samples" not in headings(browser)
    loss = images[0]
    assert (loss["width"], loss["height"]) == tuple(round(inches * CURVE_DPI) for inches in CURVE_SIZE)
    assert images[1]["width"] == 2 * (16 + 2) + 2  # the 4-image grid at its own size
    text = result.path.read_text()
    assert "http://" not in text and "https://" not in text and "<script" not in text  # static and offline


def test_adapt_writes_a_report_with_samples_beside_their_nearest_shots(adapt_run, browser):
    run, _, result = adapt_run
    assert result.report == run / "report.html" and result.report.is_file()
    images = rendered_images(browser, result.report)
    assert_all_loaded(images)
    alts = [image["alt"] for image in images]
    keys = loss_series(read_log(run / "log.jsonl")[0])
    assert len(keys) > 1 and alts[: len(keys)] == [f"{key} loss curve" for key in keys]
    assert alts.count("samples at step 1") == alts.count("samples at step 2") == 1
    assert [alt for alt in alts if alt.startswith("shot ")] == [f"shot {i:03d}" for i in range(4)]
    # the last training grid (4 previews) gives the samples, each shown beside a shot
    assert sum(alt.startswith("sample ") for alt in alts) == 4
    assert sum(alt.startswith("nearest shot ") for alt in alts) == 4
    assert "Shots and nearest samples" in headings(browser)
    assert "samples/step-2.png" in result.report.read_text()


def test_report_prefers_generated_samples_and_tabulates_metrics(adapt_run, tmp_path, browser):
    run, shots, _ = adapt_run
    generated = run / "generated"
    # the shots themselves as "samples": each must pair with itself at distance 0
    for path in sorted(shots.iterdir()):
        generated.mkdir(exist_ok=True)
        shutil.copyfile(path, generated / path.name)
    metrics = tmp_path / "other.json"
    metrics.write_text(json.dumps({"fid-el0": 12.3456789, "small-clusters": 3, "settings": {"network": "el0"}}))
    (run / "metrics.json").write_text(json.dumps({"fid-el0": 50.0, "swd": 0.25, "settings": {"samples": 4}}))
    try:
        status, stdout, stderr = invoke(["report", run, "--metrics", metrics])
        assert status == 0, stderr
        assert str(run / "report.html") in stdout
        images = rendered_images(browser, run / "report.html")
        assert_all_loaded(images)
        text = (run / "report.html").read_text()
        assert "the first images of generated/" in text
        captions = browser.execute_script("return Array.from(document.querySelectorAll('#shots ~ div figcaption'), f => f.textContent);")
        pairs = [caption for caption in captions if caption.startswith("sample ")]
        assert pairs == [f"sample {i} · {i:03d} · d 0.000" for i in range(4)]
        table = browser.execute_script("return Array.from(document.querySelectorAll('table tr'), r => r.textContent);")
        assert "fid-el05012.35" in table and "swd0.25" in table and "small-clusters3" in table
    finally:
        shutil.rmtree(generated)
        (run / "metrics.json").unlink()


def test_demo_writes_a_report_of_its_generated_samples(pretrain_run, tmp_path, browser):
    shots = write_images(tmp_path / "shots", 4, 16, seed=7)
    train = TrainConfig(steps=1, **TRAIN)
    result = api.demo(DemoConfig(source=str(pretrain_run), target=str(shots), out=str(tmp_path / "demo"), n=3, sample_steps=2, train=train))
    assert result.report == result.run / "report.html" and len(list(result.samples.glob("*.png"))) == 3
    images = rendered_images(browser, result.report)
    assert_all_loaded(images)
    assert "the first images of generated/" in result.report.read_text()  # written again after sampling
    assert sum(image["alt"].startswith("sample ") for image in images) == 3


def test_report_of_a_folder_that_is_not_a_run_is_one_line(tmp_path):
    status, _, stderr = invoke(["report", tmp_path])
    assert status == 2 and stderr == f"error: {tmp_path}: not a run folder (no config.yaml)\n"
    (tmp_path / "config.yaml").write_text("method: finetune\n")
    status, _, stderr = invoke(["report", tmp_path, "--metrics", tmp_path / "missing.json"])
    assert status == 2 and stderr == f"error: {tmp_path / 'missing.json'}: no such metrics file\n"
    assert not (tmp_path / "report.html").exists()


# --- nearest shots -----------------------------------------------------------------------------------------


def _patterns(size: int = 32) -> np.ndarray:
    """Four unlike images: horizontal stripes, vertical stripes, a disc, a checkerboard, in different colours."""
    yy, xx = np.mgrid[:size, :size]
    masks = [(yy // 4) % 2 == 0, (xx // 4) % 2 == 0, (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2, ((yy // 8) + (xx // 8)) % 2 == 0]
    colours = [(220, 30, 30), (30, 160, 40), (40, 60, 220), (230, 180, 20)]
    images = np.full((4, size, size, 3), 255, np.uint8)
    for image, mask, colour in zip(images, masks, colours):
        image[mask] = colour
    return images


def _lpips_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    """DESIGN.md's distance from the stage outputs, written out: unit-normalise each position's channel vector,
    squared difference, mean over space, sum over the five stages."""
    from tenshot.models.features import EfficientNetLite0, preprocess

    _, stages = EfficientNetLite0()(preprocess(np.stack([a, b])), stages=True)
    total = 0.0
    for stage in stages:
        unit = stage / stage.norm(dim=1, keepdim=True)
        total += float((unit[0] - unit[1]).pow(2).sum(dim=0).mean())
    return total


def test_each_sample_pairs_with_its_nearest_shot():
    shots = _patterns()
    rng = np.random.default_rng(0)
    order = np.array([2, 0, 3, 1, 1, 2])
    noisy = shots[order].astype(np.int16) + rng.integers(-25, 26, (len(order), 32, 32, 3))
    samples = np.clip(noisy, 0, 255).astype(np.uint8)
    samples[4] = samples[4][::-1]  # vertical stripes upside down are the same stripes
    with torch.no_grad():
        nearest, distances = nearest_shots(samples, shots)
    assert nearest.tolist() == order.tolist()
    assert distances[0] == pytest.approx(_lpips_by_hand(samples[0], shots[2]), rel=1e-4)
    assert distances[0] < _lpips_by_hand(samples[0], shots[0])
    same, zero = nearest_shots(shots[[3]], shots)
    assert same.tolist() == [3] and zero[0] == pytest.approx(0.0, abs=1e-6)


def test_nearest_shots_in_small_batches_match_and_a_large_target_shows_a_bounded_row(monkeypatch):
    from tenshot import run_report

    shots = _patterns()
    samples = np.clip(shots[[1, 3, 0]].astype(np.int16) + 7, 0, 255).astype(np.uint8)
    with torch.no_grad():
        whole = nearest_shots(samples, shots)
        monkeypatch.setattr(run_report, "FEATURE_BATCH", 2)  # batches straddle the samples/shots boundary
        batched = nearest_shots(samples, shots)
    assert whole[0].tolist() == batched[0].tolist() == [1, 3, 0]
    assert np.allclose(whole[1], batched[1], rtol=1e-5, atol=1e-6)
    # a target folder of many images (an oracle's): the row shows the first SHOWN_SHOTS and every nearest one
    monkeypatch.setattr(run_report, "SHOWN_SHOTS", 2)
    many = np.concatenate([shots] * 3)
    nearest = np.array([0, 9, 9])
    pairing = run_report.Pairing(samples, many, [f"s{i}" for i in range(len(many))], nearest, np.zeros(3), "test")
    page = run_report._shots_section(pairing)
    row = page.split("<h3>Samples beside")[0]
    assert row.count("<figure") == 3 and ">s9: nearest to 2<" in row and "Not shown: 9 more" in row


# --- pieces ------------------------------------------------------------------------------------------------


def test_split_grid_inverts_make_grid():
    rng = np.random.default_rng(1)
    for count, height, width in ((16, 32, 32), (5, 8, 8), (1, 16, 16), (7, 6, 10)):
        images = rng.integers(0, 256, (count, height, width, 3), dtype=np.uint8)
        np.testing.assert_array_equal(split_grid(make_grid(images), count), images)
    with pytest.raises(ValueError):
        split_grid(np.zeros((37, 38, 3), np.uint8), 4)


def test_log_scale_only_for_positive_values_spanning_a_decade():
    assert uses_log_scale([2.0, 0.1]) and not uses_log_scale([0.5, 0.06]) and not uses_log_scale([1.0, 0.0, 20.0])


def test_running_mean_is_centred():
    values = np.array([0.0, 0.0, 3.0, 0.0, 0.0])
    np.testing.assert_allclose(running_mean(values, 3), [0.0, 1.0, 1.0, 1.0, 0.0])
    np.testing.assert_allclose(running_mean(np.arange(6.0), 1), np.arange(6.0))


def test_loss_curve_plots_the_values_and_picks_its_axis():
    steps = np.arange(1, 41)
    falling = 1.0 - steps / 50.0  # 0.98 down to 0.2: linear axis
    axes = curve_figure(steps, falling, "total").axes[0]
    (line,) = axes.get_lines()
    np.testing.assert_array_equal(line.get_xdata(), steps)
    np.testing.assert_array_equal(line.get_ydata(), falling)
    assert axes.get_yscale() == "linear" and axes.get_title(loc="left") == "total"
    decay = 10.0 ** (-steps / 20.0)  # two decades: logarithmic
    assert curve_figure(steps, decay, "total").axes[0].get_yscale() == "log"
    many = np.linspace(1.0, 0.5, 200)
    raw, mean = curve_figure(np.arange(200), many, "total").axes[0].get_lines()
    np.testing.assert_array_equal(raw.get_ydata(), many)
    np.testing.assert_allclose(mean.get_ydata(), running_mean(many, 8))
    with pytest.raises(ValueError):
        curve_figure([1, 2], [1.0], "total")
