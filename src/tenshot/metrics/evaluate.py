"""``tenshot evaluate``: the metrics of DESIGN.md ("Metrics") for one set of samples, in one call.

Samples, reference and shots are read at one size; every feature goes through one path
(:mod:`tenshot.models.features`). Sample and reference sets given as folders or EmojiShift domains are read from
disk batch by batch (:class:`~tenshot.data.images.ImageFiles`, their headers checked first), so memory holds
their features (1,280 floats an image), not their pixels; samples drawn from a model are held in memory.
Reference features are cached by content hash under ``<cache>/metrics`` so that scoring many sample sets against
one reference extracts it once.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..cache import cache_root, content_key, replace_file
from ..config import EVALUATE_MIN_IMAGES as MIN_IMAGES, EvaluateConfig
from ..errors import TenshotError

KEY_ORDER = (
    "fid-el0", "kid-el0", "kid-el0-std", "precision-el0", "recall-el0",
    "intra-lpips-el0", "small-clusters", "nearest-shot-el0", "near-copy-share", "swd",
)  # fmt: skip
OPTIONAL_KEYS = {"inception": "fid-inception", "clip": "fid-clip", "vgg": "intra-lpips-vgg"}
DEFAULT_SAMPLES = 1000
KID_SUBSETS, KID_SUBSET_SIZE, KID_SEED = 100, 1000, 0
PR_K = 3
CLUSTER_CAP, CLUSTER_SEED = 50, 0
NEAR_COPY_PERCENTILE = 1.0
SWD_SEED = 0
CACHE_VERSION = "el0-path-1"


@dataclass
class EvaluateResult:
    """The metrics (flat, in :data:`KEY_ORDER`, optional backends after), the settings, and where they went."""

    metrics: dict[str, float]
    settings: dict
    path: Path | None
    seconds: float

    def as_json(self) -> dict:
        return {**self.metrics, "settings": self.settings}


# --- image sets ------------------------------------------------------------------------------------


def _first(files: list[Path], n: int | None, argument: str) -> list[Path]:
    if n is not None and len(files) < n:
        raise TenshotError(f"{argument}: {len(files)} images, fewer than the {n} asked for with --n")
    return files if n is None else files[:n]


def _is_model_folder(path: Path) -> bool:
    from ..models.unet import resolve_model_folder

    try:
        resolve_model_folder(path)
    except TenshotError:
        return False
    return True


def load_samples(config: EvaluateConfig, progress: bool = False) -> tuple[np.ndarray, dict]:
    """The samples as uint8 ``(N, S, S, 3)`` (read from disk when indexed, for a folder or an EmojiShift domain)
    and settings describing where they came from."""
    from ..data.domains import domain_files, is_emoji_domain
    from ..data.images import ImageFiles, list_images, load_image

    source = config.samples
    if is_emoji_domain(source):
        size = config.size or 32
        return ImageFiles.checked(_first(domain_files(source, size, "all"), config.n, source), size), {}
    path = Path(source)
    if path.is_dir() and not _is_model_folder(path):
        files = _first(list_images(path), config.n, source)
        size = config.size or min(load_image(files[0]).shape[:2])
        return ImageFiles.checked(files, size), {}
    from ..models.unet import resolve_model_folder

    resolve_model_folder(source)  # a bad reference fails here, before diffusers is imported
    from ..sampling import generate, load_for_sampling, resolve_device, sampler_choice

    method = load_for_sampling(source, resolve_device(config.device))
    if hasattr(method, "prompted"):  # a text-to-image model samples from its run's prompt; none is one clear error
        method.prompted(None, None)
    size = method.model.size
    if config.size not in (None, size):
        raise TenshotError(f"{source}: the model makes {size} px images; drop --size {config.size} or set it to {size}")
    count = config.n or DEFAULT_SAMPLES
    sampler, steps = sampler_choice(method, config.sampler, config.steps)
    with torch.no_grad():
        images = generate(method, count, steps=steps, sampler=sampler, seed=config.seed, batch_size=config.batch_size, progress=progress)
    return images, {"sampler": sampler, "sampling-steps": steps, "sampling-seed": config.seed}


# --- cache -----------------------------------------------------------------------------------------


def _cache_file(key: str) -> Path:
    return cache_root() / "metrics" / f"{key}.npy"


def _cache_load(key: str) -> np.ndarray | None:
    path = _cache_file(key)
    try:
        return np.load(path, allow_pickle=False) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _cache_save(key: str, array: np.ndarray) -> None:
    replace_file(_cache_file(key), lambda staging: np.save(staging, array, allow_pickle=False))


# --- EL0 -------------------------------------------------------------------------------------------


class EL0Runner:
    """Batched EL0 passes: pooled features, LPIPS-style vectors, distances to the shots."""

    def __init__(self, batch_size: int, progress: bool, device: str | torch.device = "cpu"):
        from ..models.features import EfficientNetLite0

        self.device = torch.device(device)
        self.net = EfficientNetLite0().to(self.device)
        self.batch_size = batch_size
        self.progress = progress

    def _batches(self, images: np.ndarray, label: str):
        from tqdm.auto import tqdm

        from ..models.features import preprocess

        with tqdm(total=len(images), disable=not (self.progress and label), desc=f"el0 {label}", unit="img", dynamic_ncols=True) as bar:
            for start in range(0, len(images), self.batch_size):
                batch = images[start : start + self.batch_size]
                yield preprocess(batch).to(self.device)
                bar.update(len(batch))

    def vectors(self, images: np.ndarray, label: str = "") -> torch.Tensor:
        from .diversity import lpips_vectors

        return torch.cat([lpips_vectors(self.net(x, stages=True)[1]).cpu() for x in self._batches(images, label)])

    def pooled_and_distances(self, images: np.ndarray, shots: torch.Tensor | None, label: str) -> tuple[np.ndarray, np.ndarray | None]:
        """Pooled 1280-d features, and with ``shots`` (vectors) the LPIPS-style distance of each image to each shot.

        Both are allocated whole at the first batch and filled in place: per-batch arrays kept alive between
        the batches' large transient activations fragment the heap, and the process keeps growing with the
        image count (``bench/README.md``, Scale)."""
        from .diversity import lpips_vectors, squared_distances

        pooled = distances = None
        start = 0
        for x in self._batches(images, label):
            features, stages = self.net(x, stages=shots is not None)
            batch = features.cpu().numpy()
            if pooled is None:
                pooled = np.empty((len(images), batch.shape[1]), batch.dtype)
                distances = np.empty((len(images), len(shots))) if shots is not None else None
            end = start + len(x)
            pooled[start:end] = batch
            if shots is not None:
                distances[start:end] = squared_distances(lpips_vectors(stages).cpu(), shots)
            start = end
        return pooled, distances


def _el0_metrics(el0: EL0Runner, samples, reference, shots) -> tuple[dict, dict]:
    from .diversity import intra_cluster_diversity, near_copy_share, squared_distances
    from .fid import fid_from_features
    from .kid import kernel_distance
    from .precision_recall import precision_recall

    shot_vectors = el0.vectors(shots, "shots") if shots is not None else None
    reference_key = content_key(CACHE_VERSION, "el0-pooled", reference)
    shots_key = content_key(CACHE_VERSION, "el0-to-shots", reference, shots) if shots is not None else None
    reference_pooled = _cache_load(reference_key)
    reference_to_shots = _cache_load(shots_key) if shots_key else None
    if reference_pooled is None or (shots_key and reference_to_shots is None):
        reference_pooled, reference_to_shots = el0.pooled_and_distances(reference, shot_vectors, "reference")
        _cache_save(reference_key, reference_pooled)
        if shots_key:
            _cache_save(shots_key, reference_to_shots)
    sample_pooled, sample_to_shots = el0.pooled_and_distances(samples, shot_vectors, "samples")

    kid, kid_std = kernel_distance(sample_pooled, reference_pooled, KID_SUBSETS, KID_SUBSET_SIZE, KID_SEED)
    precision, recall = precision_recall(reference_pooled, sample_pooled, PR_K)
    metrics = {"fid-el0": fid_from_features(sample_pooled, reference_pooled), "kid-el0": kid, "kid-el0-std": kid_std,
               "precision-el0": precision, "recall-el0": recall}  # fmt: skip
    settings = {
        "kid-subsets": KID_SUBSETS,
        "kid-subset-size": min(KID_SUBSET_SIZE, len(samples), len(reference)),
        "kid-seed": KID_SEED,
        "kid-kernel": "(x.y/d + 1)^3",
        "precision-recall-k": PR_K,
    }
    if shots is not None:

        def pairwise(members: np.ndarray) -> np.ndarray:
            vectors = el0.vectors(samples[members])
            return squared_distances(vectors, vectors)

        diversity, small = intra_cluster_diversity(sample_to_shots, pairwise, CLUSTER_CAP, CLUSTER_SEED)
        nearest = sample_to_shots.min(axis=1)
        share, threshold = near_copy_share(nearest, reference_to_shots.min(axis=1), NEAR_COPY_PERCENTILE)
        metrics.update({"intra-lpips-el0": diversity, "small-clusters": small, "nearest-shot-el0": float(nearest.mean()), "near-copy-share": share})
        settings.update({
            "distance": "LPIPS-style: unit weights on EL0 stages at strides 2, 4, 8, 16, 32",
            "cluster-cap": CLUSTER_CAP,
            "cluster-seed": CLUSTER_SEED,
            "near-copy-percentile": NEAR_COPY_PERCENTILE,
            "near-copy-threshold": threshold,
        })  # fmt: skip
    return metrics, settings


# --- optional backends -----------------------------------------------------------------------------


def _optional_metric(name: str, samples, reference, shots, batch_size: int) -> float:
    from ..models.features import OptionalFeatures, VGGLPIPS
    from .diversity import intra_cluster_diversity
    from .fid import fid_from_features

    if name in ("inception", "clip"):
        network = OptionalFeatures(name)
        key = content_key(CACHE_VERSION, f"{name}-pooled", reference)
        reference_features = _cache_load(key)
        if reference_features is None:
            reference_features = network(reference, batch_size)
            _cache_save(key, reference_features)
        return fid_from_features(network(samples, batch_size), reference_features)
    lpips = VGGLPIPS()

    def to_shot(shot: np.ndarray) -> np.ndarray:
        batches = (samples[start : start + batch_size] for start in range(0, len(samples), batch_size))
        return np.concatenate([lpips(batch, np.repeat(shot[None], len(batch), axis=0)) for batch in batches])

    to_shots = np.stack([to_shot(shot) for shot in shots], axis=1)

    def pairwise(members: np.ndarray) -> np.ndarray:
        first, second = np.triu_indices(len(members), k=1)
        matrix = np.zeros((len(members), len(members)))
        matrix[first, second] = lpips(samples[members[first]], samples[members[second]])
        return matrix + matrix.T

    return intra_cluster_diversity(to_shots, pairwise, CLUSTER_CAP, CLUSTER_SEED)[0]


# --- the command -----------------------------------------------------------------------------------


def evaluate(config: EvaluateConfig, progress: bool = False) -> EvaluateResult:
    """Score ``config.samples`` against ``config.reference`` (and ``config.shots``); write ``config.out``."""
    from ..models.features import EL0_NAME, INPUT_SIZE, optional_backend
    from ..data.domains import load_domain
    from .swd import MAX_IMAGES as SWD_MAX_IMAGES, pyramid_sizes, swd

    config.validate()
    for name in config.features:
        if name != "el0":
            optional_backend(name)  # a missing backend fails before any long work
    if config.out and Path(config.out).is_dir():
        raise TenshotError(f"{config.out}: is a folder; --out names the JSON file to write")
    started = time.perf_counter()
    samples, sample_settings = load_samples(config, progress)
    size = samples.shape[1]
    if size < 16:
        raise TenshotError(f"{config.samples}: images are {size} px; evaluate needs at least 16 px")
    if len(samples) < MIN_IMAGES:
        raise TenshotError(f"{config.samples}: {len(samples)} images, at least {MIN_IMAGES} needed")
    reference = load_domain(config.reference, size, default_split="reference", minimum=MIN_IMAGES, stream_above=0)  # read from disk
    shots = load_domain(config.shots, size, default_split="shots", minimum=1) if config.shots else None

    metrics: dict[str, float] = {}
    settings = {
        "samples": len(samples),
        "reference": len(reference),
        **({"shots": len(shots)} if shots is not None else {}),
        "size": size,
        "samples-source": str(config.samples),
        "reference-source": str(config.reference),
        **({"shots-source": str(config.shots)} if config.shots else {}),
        **sample_settings,
    }
    if "el0" in config.features:
        from ..sampling import resolve_device

        settings.update({"network": EL0_NAME, "resize": f"PIL bicubic {size} -> {INPUT_SIZE} px", "normalisation": "ImageNet mean/std"})
        el0_metrics, el0_settings = _el0_metrics(EL0Runner(config.batch_size, progress, resolve_device(config.device)), samples, reference, shots)
        metrics.update(el0_metrics)
        settings.update(el0_settings)
    metrics["swd"] = swd(samples, reference, SWD_SEED)
    settings.update({"swd-levels": pyramid_sizes(size), "swd-images": min(len(samples), len(reference), SWD_MAX_IMAGES), "swd-seed": SWD_SEED})
    metrics = {key: metrics[key] for key in KEY_ORDER if key in metrics}
    for name in config.features:
        if name != "el0":
            metrics[OPTIONAL_KEYS[name]] = _optional_metric(name, samples, reference, shots, config.batch_size)
    settings["features"] = list(config.features)
    result = EvaluateResult(metrics=metrics, settings=settings, path=Path(config.out) if config.out else None, seconds=time.perf_counter() - started)
    if result.path:
        replace_file(result.path, lambda staging: staging.write_text(json.dumps(result.as_json(), indent=2) + "\n"))
    return result
