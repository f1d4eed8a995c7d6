"""The training loop, checkpoints and previews."""
