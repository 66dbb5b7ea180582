"""The names a config's string fields choose from, kept free of torch so that :mod:`nerf.config` loads without it."""

BACKENDS = ("auto", "torch", "native", "tcnn")
"""Hash-grid backends (with their marching and compositing); ``auto`` takes the fastest available."""
CONTRACTIONS = ("none", "mipnerf360")
"""Scene contractions (see :mod:`nerf.contraction`)."""
MODELS = ("ngp", "nerf")
LOSSES = ("huber", "mse")
PRESET_NAMES = ("auto", "cpu", "gpu")
