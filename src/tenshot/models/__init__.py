"""UNet presets and loading, EMA, feature networks."""

from .ema import EMA
from .unet import PRESETS, DiffusionModel, build_unet, load_model, new_model, save_model

__all__ = ["EMA", "PRESETS", "DiffusionModel", "build_unet", "load_model", "new_model", "save_model"]
