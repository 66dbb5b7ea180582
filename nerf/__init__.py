"""NeRF trainer: dataset reading, the hash-grid field, volume rendering, training, checkpoints and export."""
