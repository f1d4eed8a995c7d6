"""The EL0 feature path and the optional backends' errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tenshot.errors import TenshotError
from tenshot.models import features
from tenshot.models.features import IMAGENET_MEAN, IMAGENET_STD, EfficientNetLite0, optional_backend, preprocess


@pytest.fixture(scope="module")
def el0():
    return EfficientNetLite0()


def test_preprocess_resizes_to_224_and_applies_imagenet_statistics():
    images = np.full((2, 32, 32, 3), 200, np.uint8)  # bicubic keeps a constant image constant
    x = preprocess(images)
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32
    for channel in range(3):
        expected = (200 / 255 - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel]
        assert torch.allclose(x[:, channel], torch.full((2, 224, 224), expected), atol=1e-6)


def test_el0_gives_pooled_features_and_five_stages(el0):
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    pooled, stages = el0(preprocess(images), stages=True)
    assert pooled.shape == (3, 1280)
    assert [tuple(s.shape[1:]) for s in stages] == [(16, 112, 112), (24, 56, 56), (40, 28, 28), (112, 14, 14), (320, 7, 7)]
    assert torch.equal(el0(preprocess(images))[0], pooled)  # deterministic, same with or without stages
    alone = el0(preprocess(images[1:2]))[0]
    assert torch.allclose(alone, pooled[1:2], atol=1e-4)  # eval mode: a sample does not depend on its batch
    assert el0.train().training is False


def test_el0_has_the_imagenet_weights(el0):
    # Noto's guitar at 224 px is an electric guitar (ImageNet class 546) to the real network.
    from PIL import ImageFont

    from tenshot.data import emoji

    font = ImageFont.truetype(str(emoji.noto_font_path()), emoji.NOTO_FONT_SIZE)
    image = np.asarray(emoji.finish(emoji._glyph_canvas(font, "\U0001f3b8"), 224))[None]
    logits = el0.net(preprocess(image))
    assert int(logits.argmax()) == 546


def test_optional_backend_without_package_or_weights_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(features.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TenshotError) as error:
        optional_backend("inception")
    message = str(error.value)
    assert "\n" not in message
    assert "pip install torch-fidelity" in message
    assert "weights-inception-2015-12-05-6726825d.pth" in message and "download_url_to_file" in message


def test_optional_backend_with_package_but_no_weights_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(features.importlib.util, "find_spec", lambda name: object())
    with pytest.raises(TenshotError) as error:
        optional_backend("vgg")
    message = str(error.value)
    assert "pip install" not in message
    assert str(tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth") in message


def test_unknown_feature_network_is_an_error():
    with pytest.raises(TenshotError, match="unknown feature network"):
        optional_backend("resnet")
