"""Photographs and video into a dataset (``nerf-process``): frames and downscaled copies (:mod:`.frames`),
structure from motion with pycolmap (:mod:`.sfm`), instant-ngp's ``transforms.json`` (:mod:`.ngp`) and the
command (:mod:`.cli`). pycolmap is imported only by :mod:`.sfm` (the ``capture`` extra)."""
