"""Metrics against independent computations (closed forms, scipy, naive loops) and ``tenshot evaluate`` end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.linalg
import scipy.spatial
from click.testing import CliRunner
from PIL import Image

from tenshot.cli import main
from tenshot.config import EvaluateConfig
from tenshot.metrics.diversity import intra_cluster_diversity, lpips_vectors, near_copy_share, squared_distances
from tenshot.metrics.evaluate import KEY_ORDER, evaluate
from tenshot.metrics.fid import fid_from_features, frechet_distance
from tenshot.metrics.kid import kernel_distance
from tenshot.metrics.precision_recall import precision_recall
from tenshot.metrics import swd as swd_module
from tenshot.metrics.swd import laplacian_pyramid, pyramid_sizes, sliced_wasserstein, swd

# --- Frechet distance ------------------------------------------------------------------------------


def random_spd(rng, dim, rank=None):
    factor = rng.standard_normal((dim, rank or dim))
    return factor @ factor.T / dim


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    # For diagonal covariances, d^2 = |mu1 - mu2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    a, b = rng.uniform(0.1, 3.0, 6), rng.uniform(0.1, 3.0, 6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_matches_scipy_sqrtm_for_full_covariances():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.standard_normal(20), rng.standard_normal(20)
    s1, s2 = random_spd(rng, 20), random_spd(rng, 20)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real  # pytorch-fid's computation
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_with_singular_covariances_matches_scipy():
    # Fewer samples than dimensions: rank-deficient covariances, as with 1000 images and 1280 features.
    rng = np.random.default_rng(2)
    a = rng.standard_normal((30, 50))
    b = rng.standard_normal((30, 50)) * 1.5 + 0.3
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert fid_from_features(a, b) == pytest.approx(expected, rel=1e-6)


def test_fid_of_samples_converges_to_the_gaussians_distance():
    rng = np.random.default_rng(3)
    s1, s2 = random_spd(rng, 4) + 0.1 * np.eye(4), random_spd(rng, 4) + 0.1 * np.eye(4)
    mu1, mu2 = np.zeros(4), np.full(4, 0.5)
    a = rng.multivariate_normal(mu1, s1, 200_000)
    b = rng.multivariate_normal(mu2, s2, 200_000)
    assert fid_from_features(a, b) == pytest.approx(frechet_distance(mu1, s1, mu2, s2), rel=0.02)


def test_fid_reads_features_in_chunks_and_matches_the_whole_set_at_once(monkeypatch):
    """The mean and the QR factor are built CHUNK rows at a time (memory bounded by the chunk); with chunks that
    cross the row count, the distance is that of numpy's covariances of the whole sets."""
    from tenshot.metrics import fid

    rng = np.random.default_rng(5)
    a = rng.standard_normal((61, 6)).astype(np.float32)
    b = (rng.standard_normal((45, 6)) * 1.3 + 0.2).astype(np.float32)
    expected = frechet_distance(a.mean(0, dtype=np.float64), np.cov(a.astype(np.float64), rowvar=False),
                                b.mean(0, dtype=np.float64), np.cov(b.astype(np.float64), rowvar=False))  # fmt: skip
    monkeypatch.setattr(fid, "CHUNK", 7)
    assert fid_from_features(a, b) == pytest.approx(expected, rel=1e-9)
    mean, factor = fid.covariance_factor(a)
    np.testing.assert_allclose(factor @ factor.T, np.cov(a.astype(np.float64), rowvar=False), atol=1e-12)


def test_fid_of_a_set_against_itself_is_zero():
    features = np.random.default_rng(4).standard_normal((100, 64))
    assert fid_from_features(features, features) == pytest.approx(0.0, abs=1e-8)


# --- KID -------------------------------------------------------------------------------------------


def naive_kid(x, y):
    """Unbiased MMD^2 with k(a, b) = (a.b/d + 1)^3, written out pair by pair."""
    d = x.shape[1]

    def k(a, b):
        return (float(np.dot(a, b)) / d + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_matches_naive_pairwise_computation():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((25, 8))
    y = rng.standard_normal((25, 8)) + 0.4
    mean, std = kernel_distance(x, y, subsets=3, subset_size=1000)
    assert mean == pytest.approx(naive_kid(x, y), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)  # every subset is the whole set


def test_kid_subsets_are_unbiased_and_separate_distributions():
    rng = np.random.default_rng(6)
    x, same, other = rng.standard_normal((3, 400, 16))
    other = other + 0.5
    same_mean, same_std = kernel_distance(x, same, subsets=100, subset_size=100)
    other_mean, _ = kernel_distance(x, other, subsets=100, subset_size=100)
    assert same_std > 0
    assert abs(same_mean) < 3 * same_std
    assert other_mean > 10 * same_std


# --- precision / recall ----------------------------------------------------------------------------


def brute_force_precision(real, fake, k):
    tree = scipy.spatial.cKDTree(real)
    radii = tree.query(real, k=k + 1)[0][:, k]
    inside = [np.any(np.linalg.norm(real - f, axis=1) <= radii) for f in fake]
    return float(np.mean(inside))


def test_precision_recall_match_a_kd_tree_computation():
    rng = np.random.default_rng(7)
    real = rng.standard_normal((300, 3))
    fake = rng.standard_normal((250, 3)) * 0.7 + 0.8
    precision, recall = precision_recall(real, fake, k=3)
    assert precision == pytest.approx(brute_force_precision(real, fake, 3))
    assert recall == pytest.approx(brute_force_precision(fake, real, 3))


def test_precision_recall_chunks_both_sides_and_match_brute_force(monkeypatch):
    """Distances are computed in CHUNK x CHUNK blocks (memory bounded whatever the sets' sizes); sizes that cross
    the block edges give the brute-force radii and coverage."""
    from tenshot.metrics import precision_recall as module

    monkeypatch.setattr(module, "CHUNK", 7)
    rng = np.random.default_rng(1)
    real, fake = rng.standard_normal((50, 5)), rng.standard_normal((33, 5)) + 0.3
    radii = np.sort(((real[:, None] - real[None]) ** 2).sum(-1), axis=1)[:, 3]
    np.testing.assert_allclose(module.knn_radii(real, 3), radii, rtol=1e-12, atol=1e-12)
    inside = (((fake[:, None] - real[None]) ** 2).sum(-1) <= radii[None] + 1e-12).any(1)
    assert module.manifold_coverage(real, radii, fake) == float(inside.mean())


def test_precision_recall_on_half_overlapping_squares():
    # Real fills [0, 1]^2, fake [0.5, 1.5] x [0, 1]: half of each lies in the other's support.
    rng = np.random.default_rng(8)
    real = rng.uniform(0, 1, (3000, 2))
    fake = rng.uniform(0, 1, (3000, 2)) + [0.5, 0.0]
    precision, recall = precision_recall(real, fake, k=3)
    assert precision == pytest.approx(0.5, abs=0.03)
    assert recall == pytest.approx(0.5, abs=0.03)


def test_precision_recall_extremes():
    rng = np.random.default_rng(9)
    real = rng.standard_normal((200, 4))
    assert precision_recall(real, real.copy()) == (1.0, 1.0)
    assert precision_recall(real, real + 100.0) == (0.0, 0.0)


# --- LPIPS-style distance, clusters, memorisation --------------------------------------------------


def test_lpips_vectors_reproduce_the_lpips_formula():
    import torch

    generator = torch.Generator().manual_seed(0)
    shapes = [(3, 4, 8, 8), (3, 6, 4, 4), (3, 5, 2, 2)]
    stages = [torch.randn(shape, generator=generator) for shape in shapes]
    stages[0][1, :, 0, 0] = 0.0  # a zero feature vector stays zero after normalisation
    vectors = lpips_vectors(stages)
    got = squared_distances(vectors, vectors)
    for i in range(3):
        for j in range(3):
            expected = 0.0
            for stage in stages:
                a, b = stage[i].double(), stage[j].double()
                a = a / (a.pow(2).sum(0, keepdim=True).sqrt() + 1e-10)
                b = b / (b.pow(2).sum(0, keepdim=True).sqrt() + 1e-10)
                expected += (a - b).pow(2).sum(0).mean().item()
            assert got[i, j] == pytest.approx(expected, abs=1e-6)


def test_intra_cluster_diversity_on_hand_made_clusters():
    points = np.array([0.0, 1.0, 2.0, 10.0, 14.0])  # two clusters; the third shot gets nobody
    shots = np.array([0.5, 11.0, 100.0])
    to_shots = np.abs(points[:, None] - shots[None, :])

    def pairwise(members):
        return np.abs(points[members, None] - points[None, members])

    diversity, small = intra_cluster_diversity(to_shots, pairwise)
    assert small == 1
    assert diversity == pytest.approx((4 / 3 + 4 + 0) / 3)


def test_intra_cluster_diversity_caps_members_with_a_fixed_seed():
    points = np.arange(120, dtype=float)
    to_shots = np.stack([np.zeros(120), np.ones(120)], axis=1)  # all in cluster 0; cluster 1 empty
    seen = []

    def pairwise(members):
        seen.append(members)
        return np.abs(points[members, None] - points[None, members])

    first = intra_cluster_diversity(to_shots, pairwise, cap=50, seed=0)
    second = intra_cluster_diversity(to_shots, pairwise, cap=50, seed=0)
    assert first == second
    assert len(seen[0]) == 50 and len(set(seen[0])) == 50
    np.testing.assert_array_equal(seen[0], seen[1])
    assert first[1] == 1


def test_near_copy_share_uses_the_first_percentile_of_reference_distances():
    reference = np.arange(1.0, 101.0)  # the 1st percentile (linear) is 1.99
    share, threshold = near_copy_share(np.array([0.5, 1.5, 3.0, 50.0]), reference)
    assert threshold == pytest.approx(1.99)
    assert share == 0.5


# --- SWD -------------------------------------------------------------------------------------------


def test_pyramid_sizes_go_down_to_16_px():
    assert pyramid_sizes(64) == [64, 32, 16]
    assert pyramid_sizes(32) == [32, 16]
    assert pyramid_sizes(24) == [24]


def test_laplacian_pyramid_reconstructs_the_image():
    from tenshot.metrics.swd import _pyr_up

    images = np.random.default_rng(10).uniform(0, 255, (2, 3, 32, 32)).astype(np.float32)
    pyramid = laplacian_pyramid(images, 3)
    assert [level.shape[-1] for level in pyramid] == [32, 16, 8]
    rebuilt = pyramid[-1]
    for level in reversed(pyramid[:-1]):
        rebuilt = level + _pyr_up(rebuilt, level.shape)
    np.testing.assert_allclose(rebuilt, images, atol=1e-3)


def test_sliced_wasserstein_of_a_shift_matches_the_expected_projection():
    # Shifting every point by c*u moves each 1-D projection by c*(u.theta): W1 = c * E|theta_1|.
    dim, shift = 8, 2.0
    rng = np.random.default_rng(11)
    a = rng.standard_normal((500, dim))
    b = a + shift * np.eye(dim)[0]
    expected = shift * math.gamma(dim / 2) / (math.sqrt(math.pi) * math.gamma((dim + 1) / 2))
    assert sliced_wasserstein(a, b, np.random.default_rng(0)) == pytest.approx(expected, rel=0.1)


def test_sliced_wasserstein_in_direction_chunks_equals_all_directions_at_once():
    rng = np.random.default_rng(13)
    a, b = rng.standard_normal((300, 147)), rng.standard_normal((300, 147)) + 0.1
    draws = np.random.default_rng(5)
    whole = []
    for _ in range(swd_module.REPEATS):
        directions = draws.standard_normal((147, swd_module.DIRECTIONS))
        directions /= np.linalg.norm(directions, axis=0, keepdims=True)
        whole.append(np.abs(np.sort(a @ directions, axis=0) - np.sort(b @ directions, axis=0)).mean())
    assert swd_module.DIRECTION_CHUNK < swd_module.DIRECTIONS
    assert sliced_wasserstein(a, b, np.random.default_rng(5)) == pytest.approx(float(np.mean(whole)), rel=1e-12)


def test_swd_is_smaller_within_a_distribution_than_across():
    rng = np.random.default_rng(12)

    def smooth(count, scale):
        low = rng.uniform(0, 255, (count, 4, 4, 3))
        return np.stack([np.asarray(Image.fromarray(x.astype(np.uint8)).resize((32, 32), scale)) for x in low])

    a, b, c = smooth(40, Image.BILINEAR), smooth(40, Image.BILINEAR), smooth(40, Image.NEAREST)
    assert swd(a, b) < swd(a, c)
    assert swd(a, b) == swd(a, b)


# --- tenshot evaluate ------------------------------------------------------------------------------


def write_set(folder, count, seed, size=32, blocky=False):
    """``count`` PNGs: smooth colour fields, or nearest-upsampled blocks (another 'style')."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        low = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(low).resize((size, size), Image.NEAREST if blocky else Image.BICUBIC).save(folder / f"{index:03d}.png")
    return folder


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    return {
        "samples": write_set(root / "samples", 8, 0),
        "reference": write_set(root / "reference", 8, 1),
        "other": write_set(root / "other", 8, 2, blocky=True),
        "shots": write_set(root / "shots", 3, 3),
    }


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSHOT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_evaluate_cli_writes_every_key_in_order(sets, tmp_path):
    out = tmp_path / "metrics.json"
    args = [str(sets["samples"]), "--reference", str(sets["reference"]), "--shots", str(sets["shots"]), "--out", str(out)]
    result = CliRunner().invoke(main, ["evaluate", *args])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert list(data) == [*KEY_ORDER, "settings"]
    assert all(isinstance(data[key], (int, float)) and math.isfinite(data[key]) for key in KEY_ORDER)
    assert isinstance(data["small-clusters"], int) and 0 <= data["small-clusters"] <= 3
    assert not any("fid" in key or "intra" in key for key in data["settings"])
    assert data["settings"]["samples"] == 8 and data["settings"]["shots"] == 3
    for key in KEY_ORDER:
        assert key in result.stdout


def test_evaluate_without_shots_omits_shot_keys_and_uses_the_cache(sets, tmp_path, cache, monkeypatch):
    from tenshot.metrics import evaluate as module

    config = EvaluateConfig(samples=str(sets["samples"]), reference=str(sets["reference"]), out=str(tmp_path / "m.json"))
    first = evaluate(config)
    assert list(first.metrics) == ["fid-el0", "kid-el0", "kid-el0-std", "precision-el0", "recall-el0", "swd"]
    assert list((cache / "metrics").glob("*.npy"))

    original = module.EL0Runner.pooled_and_distances

    def samples_only(self, images, shots, label):
        assert label != "reference", "reference features should come from the cache"
        return original(self, images, shots, label)

    monkeypatch.setattr(module.EL0Runner, "pooled_and_distances", samples_only)
    assert evaluate(config).metrics == first.metrics


def test_a_set_against_itself_scores_zero(sets):
    same = evaluate(EvaluateConfig(samples=str(sets["reference"]), reference=str(sets["reference"])))
    other = evaluate(EvaluateConfig(samples=str(sets["other"]), reference=str(sets["reference"])))
    assert same.metrics["fid-el0"] == pytest.approx(0.0, abs=1e-6)
    assert abs(same.metrics["kid-el0"]) < 0.05 * other.metrics["kid-el0"]
    assert same.metrics["precision-el0"] == same.metrics["recall-el0"] == 1.0
    assert other.metrics["fid-el0"] > 10


def test_evaluate_takes_the_first_n_images_of_a_folder_read_from_disk(sets):
    from tenshot.data.images import ImageFiles, list_images, load_images
    from tenshot.metrics.evaluate import load_samples

    images, _ = load_samples(EvaluateConfig(samples=str(sets["samples"]), n=5))
    assert isinstance(images, ImageFiles) and images.shape == (5, 32, 32, 3)
    np.testing.assert_array_equal(images[:], load_images(list_images(sets["samples"])[:5], 32))


def test_sets_read_from_disk_score_and_key_as_the_loaded_arrays(sets, monkeypatch):
    """Streaming is only a way of reading: swd (its subsets included), the content key and every EL0 metric
    equal those of the same images held in memory."""
    from tenshot.cache import content_key
    from tenshot.data.images import ImageFiles, list_images, load_images
    from tenshot.metrics import evaluate, swd

    files = {name: list_images(sets[name]) for name in ("samples", "reference")}
    lazy = {name: ImageFiles(paths, 32) for name, paths in files.items()}
    loaded = {name: load_images(paths, 32) for name, paths in files.items()}
    assert content_key("v", lazy["reference"]) == content_key("v", loaded["reference"])
    monkeypatch.setattr(swd, "MAX_IMAGES", 7)  # both sets cut to a seeded subset
    assert swd.swd(lazy["samples"], lazy["reference"]) == swd.swd(loaded["samples"], loaded["reference"])
    monkeypatch.setattr(evaluate, "_cache_load", lambda key: None)  # both compute their reference features
    runner = evaluate.EL0Runner(4, False)
    shots = loaded["reference"][:3]
    from_disk, _ = evaluate._el0_metrics(runner, lazy["samples"], lazy["reference"], shots)
    in_memory, _ = evaluate._el0_metrics(runner, loaded["samples"], loaded["reference"], shots)
    assert from_disk == in_memory


BAD_CASES = {
    "missing samples": ["{root}/nope", "--reference", "{ref}"],
    "missing reference": ["{samples}", "--reference", "{root}/nope"],
    "too few samples": ["{root}/few", "--reference", "{ref}"],
    "n above count": ["{samples}", "--reference", "{ref}", "--n", "50"],
    "n below 4": ["{samples}", "--reference", "{ref}", "--n", "2"],
    "non-image file": ["{samples}", "--reference", "{root}/text"],
    "corrupt image": ["{root}/corrupt", "--reference", "{ref}"],
    "reference smaller than samples": ["{samples}", "--reference", "{root}/small"],
    "images below 16 px": ["{root}/small", "--reference", "{ref}"],
    "unknown network": ["{samples}", "--reference", "{ref}", "--features", "el0,resnet"],
    "absent backend": ["{samples}", "--reference", "{ref}", "--features", "el0,inception"],
    "vgg without shots": ["{samples}", "--reference", "{ref}", "--features", "vgg"],
    "unknown emoji split": ["{samples}", "--reference", "emoji:noto:test"],
    "out is a folder": ["{samples}", "--reference", "{ref}", "--out", "{root}/outdir"],
}


def write_bad_inputs(root):
    write_set(root / "few", 2, 4)
    write_set(root / "text", 5, 5)
    (root / "text" / "notes.txt").write_text("not an image")
    write_set(root / "corrupt", 5, 6)
    (root / "corrupt" / "000.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    write_set(root / "small", 5, 7, size=8)
    (root / "outdir").mkdir()


@pytest.mark.parametrize("case", BAD_CASES)
def test_evaluate_bad_input_exits_2_with_one_line(case, sets, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no optional weights
    write_bad_inputs(tmp_path)
    args = [arg.format(root=tmp_path, samples=sets["samples"], ref=sets["reference"]) for arg in BAD_CASES[case]]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "m.json")]
    result = CliRunner().invoke(main, ["evaluate", *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert not (tmp_path / "m.json").exists()


def test_evaluate_samples_a_model_first(sets, tmp_path):
    import torch

    from tenshot.api import generate
    from tenshot.methods.finetune import FineTune
    from tenshot.metrics.evaluate import load_samples
    from tenshot.models.unet import load_model, new_model, save_model

    torch.manual_seed(0)
    folder = save_model(new_model("tiny", 16), tmp_path / "model")
    config = EvaluateConfig(samples=str(folder), reference=str(sets["reference"]), n=4, steps=2, seed=3)
    images, settings = load_samples(config)
    with torch.no_grad():
        expected = generate(FineTune(load_model(folder)), 4, steps=2, sampler="dpm++", seed=3)
    np.testing.assert_array_equal(images, expected)
    assert settings == {"sampler": "dpm++", "sampling-steps": 2, "sampling-seed": 3}  # sample's default sampler
    result = evaluate(config)
    assert result.settings["samples"] == 4 and result.settings["size"] == 16


def test_copies_of_the_shots_are_near_copies(sets, tmp_path):
    import shutil

    copies = tmp_path / "copies"
    copies.mkdir()
    for index, shot in enumerate(sorted(sets["shots"].iterdir()) * 2):
        shutil.copyfile(shot, copies / f"{index:03d}.png")
    result = evaluate(EvaluateConfig(samples=str(copies), reference=str(sets["reference"]), shots=str(sets["shots"])))
    assert result.settings["near-copy-threshold"] > 0
    assert result.metrics["near-copy-share"] == 1.0
    assert result.metrics["nearest-shot-el0"] == pytest.approx(0.0, abs=1e-6)
    assert result.metrics["small-clusters"] == 0
    assert result.metrics["intra-lpips-el0"] == pytest.approx(0.0, abs=1e-6)
