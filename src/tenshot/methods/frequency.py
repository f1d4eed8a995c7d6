"""Frequency decompositions of images shared by the methods: DomainStudio's Haar high-frequency terms, and
the low-pass filter of Phasic's structure guidance (:func:`low_pass`).

One-level 2-D Haar wavelet transform as a depthwise, stride-2, 2x2 convolution (DDPM-PA / DomainStudio,
METHODS.md 2.2). With ``L = [1, 1] / sqrt(2)`` and ``H = [-1, 1] / sqrt(2)`` the four filters are the outer
products (rows x columns)::

    LL = L^T L = 1/2 [[ 1,  1], [ 1,  1]]
    LH = L^T H = 1/2 [[-1,  1], [-1,  1]]
    HL = H^T L = 1/2 [[-1, -1], [ 1,  1]]
    HH = H^T H = 1/2 [[ 1, -1], [-1,  1]]

They form an orthonormal basis of each 2x2 block, so the inverse is the transposed convolution with the same
filters and ``haar_idwt(*haar_dwt(x)) == x`` exactly (up to float rounding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_HAAR = (
    ((1.0, 1.0), (1.0, 1.0)),  # LL
    ((-1.0, 1.0), (-1.0, 1.0)),  # LH
    ((-1.0, -1.0), (1.0, 1.0)),  # HL
    ((1.0, -1.0), (-1.0, 1.0)),  # HH
)


def _filters(channels: int, like: torch.Tensor) -> torch.Tensor:
    """Depthwise weights ``(4C, 1, 2, 2)``: channel c gets outputs 4c..4c+3 = (LL, LH, HL, HH)."""
    bank = torch.tensor(_HAAR, dtype=like.dtype, device=like.device) * 0.5
    return bank.unsqueeze(1).repeat(channels, 1, 1, 1)


def haar_dwt(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One-level Haar transform of ``x`` ``(B, C, H, W)``, H and W even: ``(LL, LH, HL, HH)``, each
    ``(B, C, H/2, W/2)``."""
    batch, channels, height, width = x.shape
    if height % 2 or width % 2:
        raise ValueError(f"the Haar transform needs even height and width, got {height}x{width}")
    bands = F.conv2d(x, _filters(channels, x), stride=2, groups=channels)
    bands = bands.view(batch, channels, 4, height // 2, width // 2)
    return bands[:, :, 0], bands[:, :, 1], bands[:, :, 2], bands[:, :, 3]


def haar_idwt(ll: torch.Tensor, lh: torch.Tensor, hl: torch.Tensor, hh: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`haar_dwt`: the image ``(B, C, 2h, 2w)`` whose four bands are the arguments."""
    batch, channels, height, width = ll.shape
    bands = torch.stack([ll, lh, hl, hh], dim=2).reshape(batch, 4 * channels, height, width)
    return F.conv_transpose2d(bands, _filters(channels, bands), stride=2, groups=channels)


def high_frequency(x: torch.Tensor) -> torch.Tensor:
    """DDPM-PA's hf(x) = LH(x) + HL(x) + HH(x): the three detail bands summed, LL discarded (METHODS.md 2.2).

    Zero on any image that is constant on each 2x2 block."""
    _, lh, hl, hh = haar_dwt(x)
    return lh + hl + hh


def low_pass(x: torch.Tensor, factor: int) -> torch.Tensor:
    """The linear low-pass filter phi_N of ILVR (Choi et al., ICCV 2021, Sec. 3) that Phasic's structure guidance
    uses (Hu et al., ICCV 2023, Eq. 8): downsample ``(B, C, H, W)`` by ``factor`` N (bicubic, antialiased), then
    upsample back (bicubic). ILVR and the official Phasic code use a MATLAB-style cubic resizer; torch's bicubic
    is the same kernel family. ``factor`` 1 is the identity (the whole image is the low band)."""
    height, width = x.shape[-2:]
    if factor < 1 or height % factor or width % factor:
        raise ValueError(f"the low-pass factor must be a positive divisor of {height}x{width}, got {factor}")
    if factor == 1:
        return x
    small = F.interpolate(x, size=(height // factor, width // factor), mode="bicubic", align_corners=False, antialias=True)
    return F.interpolate(small, size=(height, width), mode="bicubic", align_corners=False)
