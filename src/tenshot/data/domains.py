"""Domain arguments: a folder of images, or ``emoji:STYLE[:SPLIT]`` for an EmojiShift domain."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import TenshotError
from . import emoji
from .images import ImageFiles, list_images, load_images

EMOJI_PREFIX = "emoji:"


def is_emoji_domain(argument: str) -> bool:
    return str(argument).startswith(EMOJI_PREFIX)


def parse_emoji_domain(argument: str, default_split: str) -> tuple[str, str]:
    """``emoji:openmoji:shots`` -> ``("openmoji", "shots")``; the split defaults to ``default_split``."""
    parts = str(argument)[len(EMOJI_PREFIX):].split(":")
    if len(parts) > 2 or not parts[0]:
        raise TenshotError(f"{argument}: expected emoji:STYLE or emoji:STYLE:SPLIT")
    style, split = parts[0], parts[1] if len(parts) == 2 else default_split
    if style not in emoji.STYLES:
        raise TenshotError(f"{argument}: unknown emoji style {style!r}, choose one of {', '.join(emoji.STYLES)}")
    if split not in emoji.SPLITS:
        raise TenshotError(f"{argument}: unknown split {split!r}, choose one of {', '.join(emoji.SPLITS)}")
    return style, split


def domain_files(argument: str | Path, size: int, default_split: str = "all") -> list[Path]:
    """The image files a domain argument names, in a fixed order (emoji domains are rendered at ``size``)."""
    if is_emoji_domain(str(argument)):
        style, split = parse_emoji_domain(str(argument), default_split)
        return emoji.split_files(style, size, split)
    return list_images(argument)


def load_domain(argument: str | Path, size: int, default_split: str = "all", minimum: int = 1, stream_above: int | None = None) -> np.ndarray | ImageFiles:
    """All images of a domain as uint8 ``(N, size, size, 3)``, validated; at least ``minimum`` of them. With
    ``stream_above`` (bytes), a domain whose decoded images would take more is :class:`ImageFiles` instead, read
    from disk batch by batch, its headers checked now."""
    files = domain_files(argument, size, default_split)
    if len(files) < minimum:
        raise TenshotError(f"{argument}: {len(files)} images, at least {minimum} needed")
    if stream_above is not None and len(files) * size * size * 3 > stream_above:
        return ImageFiles.checked(files, size)
    return load_images(files, size)
