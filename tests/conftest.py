"""Shared fixtures. Qt must run offscreen before anything imports it, or pytest aborts without a display."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
import torch


def available_devices() -> list[str]:
    """The torch devices this machine really has."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


@pytest.fixture(params=available_devices())
def device(request: pytest.FixtureRequest) -> torch.device:
    """Each available torch device in turn (only the CPU on a machine without a GPU)."""
    return torch.device(request.param)


@pytest.fixture
def cuda_device() -> torch.device:
    """The CUDA device; the test is skipped where there is none."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    return torch.device("cuda")
