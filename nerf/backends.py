"""Backends: the hash encoding, the marching and the compositing of one implementation, chosen once per device
into a :class:`Backend` bundle that :func:`nerf.model.build_model` consumes.

- ``torch``: :func:`nerf.hashgrid.hash_encode`, the reference; runs everywhere.
- ``native``: the C++ (OpenMP) and CUDA kernels of ``nerf/csrc`` (``torch.ops.nerf_native``), built at install
  (``pip install``, see ``tools/nerfkit_build.py``) into ``nerf/_native/``: ``libnerf_native.so`` (the ops, CPU)
  and, where torch had CUDA and nvcc was found, ``libnerf_native_cuda.so``; else that one is built on first CUDA
  use by :mod:`nerf.cuda_build`. Same function, same table: values equal the reference to float32 rounding,
  checkpoints move freely between ``torch`` and ``native``. dL/dtable is bit-reproducible on the CPU (one thread
  per level, points in order) but not on CUDA (float ``atomicAdd``).
- ``tcnn``: ``tinycudann.Encoding`` (otype HashGrid, same L, F, log2 T, N_min, per-level scale b) on CUDA. The
  reference follows tcnn's function and layout (see :mod:`nerf.hashgrid`), so tcnn's parameter vector *is* our
  table flattened row-major: a checkpoint moves between all three backends. tcnn agrees to float32 rounding
  (it fuses ``p * s + 0.5`` and computes ``s`` on the GPU); never picked by ``auto``, since ``native`` is ours.

Importing this module loads nothing: the native library and tinycudann are loaded on first use.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

from nerf.cuda_build import CudaBuildError, cuda_library
from nerf.hashgrid import EncodeFn, GridLayout, HashGridConfig, grid_layout, hash_encode, param_count, table_rows
from nerf.marching import CandidatesFn, RaySpans, Samples, StepRule, march_candidates
from nerf.names import BACKENDS
from nerf.occupancy import OccupancyGrid
from nerf.volume import CompositeFn, composite, finish_composite

NATIVE_LIBRARY = Path(__file__).with_name("_native") / "libnerf_native.so"
CUDA_LIBRARY = NATIVE_LIBRARY.with_name("libnerf_native_cuda.so")
BUILD_HINT = "reinstall nerfkit where a C++ compiler is found (pip install <checkout>)"

_log = logging.getLogger(__name__)
_WARNED: set[tuple[str, str]] = set()
"""The fallbacks to the reference already said: (device type, why)."""


class BackendUnavailable(RuntimeError):
    """A backend asked for by name cannot run here; the message is one line saying why and what to do."""


@functools.cache
def _native_load_error() -> str | None:
    """Load the native library once; ``None`` when loaded, else why not (one line)."""
    if not NATIVE_LIBRARY.is_file():
        return f"native kernels not built at install ({NATIVE_LIBRARY} missing): {BUILD_HINT}"
    err = _load(NATIVE_LIBRARY)
    if err is None:
        _register_fakes()
    return err


def _load(library: Path) -> str | None:
    try:
        torch.ops.load_library(str(library))
    except (OSError, RuntimeError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"native library {library} does not load ({first_line}): {BUILD_HINT} against this torch"
    return None


@functools.cache
def _cuda_load_error() -> str | None:
    """Load the CUDA kernels once: the installed library, else one built now for the first GPU (cached); ``None``
    when loaded, else why not (one line)."""
    err = _native_load_error()
    if err is not None:
        return err
    library = CUDA_LIBRARY
    if not library.is_file():
        major, minor = torch.cuda.get_device_capability(0)
        try:
            library = cuda_library(f"{major}{minor}")
        except CudaBuildError as build_err:
            return str(build_err)
    return _load(library)


def _register_fakes() -> None:
    """Fake (Meta) kernels of the native ops that have none in C++, so that ``torch.compile`` and CUDA-graph-friendly
    tracing see their output shapes (``hash_encode_*`` have C++ Meta kernels)."""
    lib = "nerf_native::"

    @torch.library.register_fake(lib + "composite_forward")
    def _(sigmas, rgbs, t_starts, t_ends, ray_indices, n_rays: int) -> tuple[torch.Tensor, ...]:
        return (torch.empty_like(sigmas), torch.empty_like(sigmas), sigmas.new_empty(n_rays, 3),
                sigmas.new_empty(n_rays), sigmas.new_empty(n_rays))

    @torch.library.register_fake(lib + "composite_backward")
    def _(grad_weights, grad_rgb, grad_depth, grad_opacity, sigmas, rgbs, *rest) -> tuple[torch.Tensor, ...]:
        return torch.empty_like(sigmas), torch.empty_like(rgbs)

    @torch.library.register_fake(lib + "march_samples")
    def _(o, d, t0, t_far, counts, mask, grid_aabb, grid_contracted: bool, step_size: float, cone_angle: float,
          max_step: float, contract_aabb, first_ray: int) -> tuple[torch.Tensor, ...]:
        total = torch.library.get_ctx().new_dynamic_size()  # data-dependent: the kept samples
        return counts.new_empty(total), o.new_empty(total), o.new_empty(total)


def _native_error(device: torch.device) -> str | None:
    err = _native_load_error()
    if err is not None:
        return err
    if device.type == "cpu":
        return None
    if device.type == "cuda":
        return _cuda_load_error() if torch.cuda.is_available() else "no CUDA device"
    return f"the native kernels run on the CPU and CUDA devices, not {device.type}"


def _tcnn_error(device: torch.device) -> str | None:
    if device.type != "cuda":
        return "tinycudann runs on CUDA devices only"
    try:
        import tinycudann  # noqa: F401
    except (ImportError, OSError, RuntimeError) as err:  # OSError: tcnn's "unknown compute capability"
        return f"tinycudann is not usable ({type(err).__name__}: {str(err).strip()[:200]})"
    return None


def available_backends(device: torch.device | str) -> list[str]:
    """The concrete backends that run on ``device``, the one ``auto`` picks first."""
    device = torch.device(device)
    names = []
    if _native_error(device) is None:
        names.append("native")
    names.append("torch")
    if _tcnn_error(device) is None:
        names.append("tcnn")
    return names


@dataclass(frozen=True)
class Backend:
    """One backend's kernels: the hash encoding, the marching of candidates and the compositing."""

    name: str
    encode: EncodeFn
    march_candidates: CandidatesFn
    composite: CompositeFn


def resolve_backend(name: str, device: torch.device | str, cfg: HashGridConfig | None = None) -> Backend:
    """``name`` in ``BACKENDS`` -> the :class:`Backend` that runs on ``device``; raises :class:`BackendUnavailable`.

    ``auto`` is ``native`` where it is built for ``device``, else ``torch`` (saying so in one log line). With
    ``cfg``, ``tcnn`` is also checked to lay out ``cfg``'s table as we do. ``native`` marches and composites with
    its own kernels; ``torch`` and ``tcnn`` with the references.
    """
    device = torch.device(device)
    if name not in BACKENDS:
        raise BackendUnavailable(f"unknown hash-grid backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "auto":
        err = _native_error(device)
        if err is None:
            return NATIVE
        if (device.type, err) not in _WARNED:  # said once
            _WARNED.add((device.type, err))
            _log.warning("hash grid: using the PyTorch reference on %s; %s", device, err)
        return TORCH
    if name == "torch":
        return TORCH
    if name == "native":
        err = _native_error(device)
        if err is not None:
            raise BackendUnavailable(f"hash-grid backend 'native' on {device}: {err}")
        return NATIVE
    err = _tcnn_error(device)
    if err is not None:
        raise BackendUnavailable(f"hash-grid backend 'tcnn' on {device}: {err}")
    if cfg is not None:
        _tcnn_encoding(cfg)
    return TCNN


class _NativeHashEncode(torch.autograd.Function):
    """The native encoding. Where ``x`` needs a gradient on the CPU, the forward also returns ``dy_dx`` ``(N, L*F,
    3)`` (each output's derivative along each axis, computed while the table rows are at hand) and the input
    gradient is ``grad_out @ dy_dx``, with no second pass over the table; on CUDA the backward computes it from
    the table."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, table: torch.Tensor, offsets: torch.Tensor, scales: torch.Tensor,
                table_size: int) -> torch.Tensor:
        ctx.table_size = table_size
        if ctx.needs_input_grad[0] and x.device.type == "cpu":
            out, dy_dx = torch.ops.nerf_native.hash_encode_forward_dx(x, table, offsets, scales, table_size)
        else:
            out, dy_dx = torch.ops.nerf_native.hash_encode_forward(x, table, offsets, scales, table_size), None
        ctx.save_for_backward(x, table, offsets, scales, dy_dx)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, table, offsets, scales, dy_dx = ctx.saved_tensors
        want_x, want_table = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_table, grad_x = torch.ops.nerf_native.hash_encode_backward(
            grad_out, x, table, offsets, scales, ctx.table_size, want_x and dy_dx is None
        )
        if want_x and dy_dx is not None:
            grad_x = torch.bmm(grad_out.to(dy_dx.dtype)[:, None], dy_dx)[:, 0]
        return (grad_x if want_x else None), (grad_table if want_table else None), None, None, None


def native_hash_encode(x: torch.Tensor, table: torch.Tensor, cfg: HashGridConfig) -> torch.Tensor:
    """:func:`nerf.hashgrid.hash_encode` on the native kernels.

    ``x`` ``(N, 3)``, float32 ``table`` ``(rows, F)`` -> ``(N, levels * F)``; differentiable (once) in both.
    """
    err = None if torch.compiler.is_compiling() else _native_error(x.device)  # checked before tracing
    if err is not None:
        raise BackendUnavailable(f"hash-grid backend 'native' on {x.device}: {err}")
    if x.dim() != 2 or x.shape[-1] != 3:
        raise ValueError(f"x must be (N, 3), got {tuple(x.shape)}")
    rows = table_rows(cfg)
    if table.shape != (rows, cfg.features):
        raise ValueError(f"table must be ({rows}, {cfg.features}), got {tuple(table.shape)}")
    if table.dtype != torch.float32:
        raise ValueError(f"the native kernels take a float32 table, got {table.dtype}")
    layout = _LAYOUTS.get(cfg)
    if layout is None:  # made (and validated) on the first, eager call; a constant when torch.compile traces
        layout = _LAYOUTS[cfg] = grid_layout(cfg)
    return _NativeHashEncode.apply(x.to(table.dtype).contiguous(), table.contiguous(), layout.offsets,
                                   layout.scales, layout.table_size)


_LAYOUTS: dict[HashGridConfig, GridLayout] = {}
"""The native encoding's layout tensors per config."""


def tcnn_encoding_config(cfg: HashGridConfig) -> dict[str, object]:
    """The tinycudann ``encoding_config`` with our hyper-parameters."""
    return {
        "otype": "HashGrid",
        "n_levels": cfg.levels,
        "n_features_per_level": cfg.features,
        "log2_hashmap_size": cfg.log2_table_size,
        "base_resolution": cfg.base_resolution,
        "per_level_scale": cfg.growth,
    }


@functools.cache
def _tcnn_encoding(cfg: HashGridConfig) -> torch.nn.Module:
    import tinycudann

    enc = tinycudann.Encoding(3, tcnn_encoding_config(cfg), dtype=torch.float32)
    if enc.params.numel() != param_count(cfg):  # a tcnn whose layout differs from the one we follow
        raise BackendUnavailable(
            f"tinycudann's HashGrid has {enc.params.numel()} parameters for this config, ours {param_count(cfg)}: "
            "its table layout changed; use --backend native or torch"
        )
    return enc


def tcnn_hash_encode(x: torch.Tensor, table: torch.Tensor, cfg: HashGridConfig) -> torch.Tensor:
    """:func:`nerf.hashgrid.hash_encode` on tinycudann: ``x`` ``(N, 3)``, float32 CUDA ``table`` ``(rows, F)``
    -> ``(N, levels * F)``; differentiable in ``table`` and ``x``."""
    from tinycudann.modules import _C, _module_function

    enc = _tcnn_encoding(cfg)
    rows = table_rows(cfg)
    if table.shape != (rows, cfg.features):
        raise ValueError(f"table must be ({rows}, {cfg.features}), got {tuple(table.shape)}")
    n = x.shape[0]
    granularity = int(_C.batch_size_granularity())
    padded = (n + granularity - 1) // granularity * granularity
    x_in = torch.nn.functional.pad(x.float().clamp(0.0, 1.0), [0, 0, 0, padded - n]).contiguous()
    out = _module_function.apply(enc.native_tcnn_module, x_in, table.reshape(-1).contiguous(), enc.loss_scale)
    return out[:n, : cfg.output_dim].to(table.dtype)


class _NativeComposite(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        sigmas: torch.Tensor,
        rgbs: torch.Tensor,
        t_starts: torch.Tensor,
        t_ends: torch.Tensor,
        ray_indices: torch.Tensor,
        n_rays: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        weights, trans, rgb, depth_sum, opacity = torch.ops.nerf_native.composite_forward(
            sigmas, rgbs, t_starts, t_ends, ray_indices, n_rays
        )
        ctx.save_for_backward(sigmas, rgbs, t_starts, t_ends, ray_indices, weights, trans)
        return weights, rgb, depth_sum, opacity

    @staticmethod
    @once_differentiable
    def backward(
        ctx,
        grad_weights: torch.Tensor,
        grad_rgb: torch.Tensor,
        grad_depth: torch.Tensor,
        grad_opacity: torch.Tensor,
    ) -> tuple[torch.Tensor | None, ...]:
        saved = ctx.saved_tensors  # sigmas, rgbs, t_starts, t_ends, ray_indices, weights, transmittance
        grad_sigmas, grad_rgbs = torch.ops.nerf_native.composite_backward(
            grad_weights, grad_rgb, grad_depth, grad_opacity, *saved
        )
        return grad_sigmas, grad_rgbs, None, None, None, None


def native_composite(
    sigmas: torch.Tensor,
    rgbs: torch.Tensor,
    t_starts: torch.Tensor,
    t_ends: torch.Tensor,
    ray_indices: torch.Tensor,
    n_rays: int,
    background: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """:func:`nerf.volume.composite` on the native kernels: same inputs and outputs (``rgb (n_rays, 3)``,
    ``depth``, ``opacity`` ``(n_rays,)``, ``weights (S,)``); float32, differentiable (once) in ``sigmas`` and
    ``rgbs`` but not in ``t_starts``/``t_ends``."""
    err = None if torch.compiler.is_compiling() else _native_error(sigmas.device)
    if err is not None:
        raise BackendUnavailable(f"native compositing on {sigmas.device}: {err}")
    weights, rgb, depth_sum, opacity = _NativeComposite.apply(
        sigmas, rgbs, t_starts, t_ends, ray_indices.long(), n_rays
    )
    rgb, depth = finish_composite(rgb, depth_sum, opacity, background)
    return {"rgb": rgb, "depth": depth, "opacity": opacity, "weights": weights}


def native_march_candidates(spans: RaySpans, rule: StepRule, grid: OccupancyGrid | None) -> Samples:
    """:func:`nerf.marching.march_candidates` on the native kernels (float32 rays): the same samples, bit for
    bit, without materialising the rejected candidates."""
    o = spans.o
    err = _native_error(o.device)
    if err is not None:
        raise BackendUnavailable(f"native marching on {o.device}: {err}")
    ray_indices, t_starts, t_ends = torch.ops.nerf_native.march_samples(
        o,
        spans.d,
        spans.t0,
        spans.t_far,
        spans.counts,
        None if grid is None else grid.mask,
        o.new_zeros(2, 3) if grid is None else grid.aabb,
        grid is not None and grid.contracted,
        rule.step,
        rule.cone_angle,
        rule.max_step,
        rule.contract_aabb,
        spans.first,
    )
    return Samples(ray_indices, t_starts, t_ends)


TORCH = Backend("torch", hash_encode, march_candidates, composite)
NATIVE = Backend("native", native_hash_encode, native_march_candidates, native_composite)
TCNN = Backend("tcnn", tcnn_hash_encode, march_candidates, composite)
