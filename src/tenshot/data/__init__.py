"""Image folders, EmojiShift domains and domain arguments."""

from .domains import domain_files, load_domain
from .images import list_images, load_image

__all__ = ["domain_files", "list_images", "load_domain", "load_image"]
