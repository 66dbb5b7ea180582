"""tinycudann's HashGrid against the reference: the same table layout and the same function.

Runs only on a CUDA machine with tinycudann installed; skipped (saying why) everywhere else.
"""

from __future__ import annotations

import pytest
import torch

from nerf.backends import _tcnn_encoding, _tcnn_error, tcnn_hash_encode
from nerf.hashgrid import HashGridConfig, hash_encode, param_count

from .test_native_hashgrid import CONFIGS, make_points, make_table


@pytest.fixture
def tcnn_device(cuda_device: torch.device) -> torch.device:
    err = _tcnn_error(cuda_device)
    if err is not None:
        pytest.skip(err)
    return cuda_device


def assert_close_to_rounding(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """tcnn fuses ``p * s + 0.5`` and computes ``s`` with the GPU's exp2f: an ulp of ``s ~ 2048`` moves the
    interpolation weights by ~1e-4, so agreement is to 1e-3 of the largest magnitude."""
    atol = 1e-3 * float(expected.abs().max())
    torch.testing.assert_close(actual, expected, rtol=1e-3, atol=atol, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("name", CONFIGS)
def test_tcnn_parameters_are_our_table(name: str, tcnn_device: torch.device) -> None:
    cfg: HashGridConfig = CONFIGS[name]
    assert _tcnn_encoding(cfg).params.numel() == param_count(cfg)


@pytest.mark.parametrize("name", CONFIGS)
def test_tcnn_matches_reference(name: str, tcnn_device: torch.device, gen: torch.Generator) -> None:
    cfg = CONFIGS[name]
    x, table = make_points(cfg, 4096, gen), make_table(cfg, gen)
    grad_out = torch.randn(x.shape[0], cfg.output_dim, generator=gen)

    ref_table = table.double().requires_grad_()
    expected = hash_encode(x.double(), ref_table, cfg)
    expected.backward(grad_out.double())

    tcnn_table = table.to(tcnn_device).requires_grad_()
    actual = tcnn_hash_encode(x.to(tcnn_device), tcnn_table, cfg)
    actual.backward(grad_out.to(tcnn_device))

    assert_close_to_rounding(actual.double().cpu(), expected.detach(), "values")
    assert_close_to_rounding(tcnn_table.grad.double().cpu(), ref_table.grad, "dL/dtable")
