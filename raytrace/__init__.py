"""Whitted-style raytracer that renders known scenes into NeRF-synthetic ("Blender") datasets."""
