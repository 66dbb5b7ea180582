"""The CUDA kernels' build on first use (nerf.cuda_build): the cache, the progress line, a failure as one line and
the fallback to the reference said once. A real build needs a GPU and a CUDA torch; here CMake runs and fails as it
does on a machine whose torch has no CUDA."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from nerf import backends, cuda_build


def test_a_cached_library_is_used_without_building(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cached = tmp_path / "nerfkit" / f"cuda-sm86-{cuda_build.build_key('86')}" / cuda_build.LIBRARY_NAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert cuda_build.cuda_library("86") == cached
    assert capsys.readouterr().err == ""
    assert cuda_build.build_key("86") != cuda_build.build_key("90")


def test_a_failed_build_is_one_line_with_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    if torch.version.cuda is not None:
        pytest.skip("this torch has CUDA: the build would not fail")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(cuda_build.CudaBuildError) as failure:
        cuda_build.cuda_library("90")
    message = str(failure.value)
    assert "\n" not in message and message.startswith("building the CUDA kernels")
    assert "CUDA torch" in message or "CMake" in message  # what was missing
    if "log: " in message:
        assert Path(message.rsplit("log: ", 1)[1].rstrip(")")).is_file()
        assert "building the CUDA kernels for sm_90" in capsys.readouterr().err  # the progress line
    assert not list((tmp_path / "nerfkit").rglob(cuda_build.LIBRARY_NAME))


def test_auto_falls_back_to_the_reference_saying_so_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """A GPU whose kernels fail to build: ``auto`` runs the reference, with one warning however often it is asked;
    ``native`` is an error of one line."""
    if backends._native_load_error() is not None:
        pytest.skip(backends._native_load_error())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(backends, "CUDA_LIBRARY", tmp_path / "absent.so")
    why = "building the CUDA kernels failed: nvcc broke (log: x)"

    def failing_build(arch: str) -> Path:
        raise cuda_build.CudaBuildError(why)

    monkeypatch.setattr(backends, "cuda_library", failing_build)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: (9, 0))
    backends._cuda_load_error.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="nerf.backends"):
            assert [backends.resolve_backend("auto", "cuda") for _ in range(3)] == [backends.TORCH] * 3
        said = [r.getMessage() for r in caplog.records]
        assert said == [f"hash grid: using the PyTorch reference on cuda; {why}"]
        with pytest.raises(backends.BackendUnavailable, match=r"^hash-grid backend 'native' on cuda: building"):
            backends.resolve_backend("native", "cuda")
    finally:
        backends._cuda_load_error.cache_clear()
        backends._WARNED.clear()
