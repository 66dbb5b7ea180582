"""The native kernels' part of the setuptools build: CMake as build_ext (see tools/nerfkit_build.py, the backend)."""

from nerfkit_build import EXTENSIONS, CMakeBuild
from setuptools import setup

setup(ext_modules=EXTENSIONS, cmdclass={"build_ext": CMakeBuild})
