"""Noise schedules and samplers as plain functions."""

from .samplers import (
    ddim_invert,
    ddim_sample,
    ddpm_sample,
    derive_seed,
    dpm_solver_sample,
    partial_noise,
    randn,
    sample_generators,
    sample_seed,
    timesteps_from,
)
from .schedule import NoiseSchedule, Prediction, default_scheduler_config

__all__ = [
    "NoiseSchedule",
    "Prediction",
    "ddim_invert",
    "ddim_sample",
    "ddpm_sample",
    "derive_seed",
    "dpm_solver_sample",
    "default_scheduler_config",
    "partial_noise",
    "randn",
    "sample_generators",
    "sample_seed",
    "timesteps_from",
]
