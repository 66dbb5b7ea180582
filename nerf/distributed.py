"""Data-parallel training over ``torch.distributed``: which process this is, and the few collectives the trainer
uses (one all-reduce of the gradients per step, broadcasts of the occupancy grid and the run folder).

``torchrun --nproc_per_node N -m nerf.cli DATA`` (or ``nerf-train --gpus N DATA``) starts N processes (ranks)
that read the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``) and join one process group: ``nccl`` on CUDA devices, ``gloo`` on the CPU. Without that
environment everything here is a no-op on the single-process :data:`SINGLE` world.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the data-parallel ranks."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0  # the GPU of this rank on its machine

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes the run folder, checkpoints and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def share(self, total: int) -> int:
        """This rank's part of ``total`` items split over the ranks (the first ``total % size`` get one more)."""
        return total // self.size + (1 if self.rank < total % self.size else 0)


SINGLE = World()


def env_world() -> World:
    """The world torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) describes, known before the
    process group is joined; :data:`SINGLE` outside torchrun."""
    env = os.environ
    return World(int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_RANK", "0")))


def current_world() -> World:
    """The world of the initialised default process group, else :data:`SINGLE`."""
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    rank = dist.get_rank()
    return World(rank, dist.get_world_size(), int(os.environ.get("LOCAL_RANK", rank)))


def init_world(device_type: str) -> World:
    """Join the process group described by torchrun's environment (``nccl`` when ``device_type`` is cuda, else
    ``gloo``); :data:`SINGLE` when ``WORLD_SIZE`` is unset or 1. Idempotent."""
    if dist.is_available() and dist.is_initialized():
        return current_world()
    if not env_world().distributed:
        return SINGLE
    if device_type == "cuda":
        torch.cuda.set_device(env_world().local_rank)
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return current_world()


def shutdown(world: World, together: bool = False) -> None:
    """Leave the process group (a no-op for a single process); ``together``: once every rank has come here (a
    barrier), so that no rank exits, and tears down gloo's connections, while another still uses them."""
    if world.distributed and dist.is_initialized():
        if together:
            dist.barrier()
        dist.destroy_process_group()


def rank_device(device: torch.device, world: World) -> torch.device:
    """``cuda`` without an index means this rank's own GPU (``cuda:LOCAL_RANK``) in a distributed run."""
    if device.type == "cuda" and device.index is None and world.distributed:
        return torch.device("cuda", world.local_rank)
    return device


def all_reduce_gradients(params: list[torch.Tensor], weight: float, extra: torch.Tensor, world: World) -> torch.Tensor:
    """Replace every ``param.grad`` by the sum over the ranks of ``weight * grad`` (a missing grad counts as
    zero) and return the sum over the ranks of ``extra`` ``(K,)`` (not weighted), in one all-reduce.

    With ``weight`` = this rank's share of the global batch, the result is the gradient of the whole batch's
    mean loss. A single process returns ``extra`` and leaves the gradients alone (its weight is 1).
    """
    if not world.distributed:
        return extra
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads] + [extra.to(grads[0].dtype)])
    n_grad = flat.numel() - extra.numel()
    flat[:n_grad].mul_(weight)
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        p.grad = flat[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
    return flat[n_grad:]


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on at least one."""
    return bool(max_over_ranks(float(flag), world, device))


def max_over_ranks(value: float, world: World, device: torch.device) -> float:
    """The largest rank's ``value``, on every rank."""
    if not world.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def broadcast_object(obj: Any, world: World) -> Any:
    """Rank 0's ``obj`` on every rank (picklable objects)."""
    if not world.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any, world: World) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not world.distributed:
        return [obj]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def broadcast_tensors_(tensors: list[torch.Tensor], world: World) -> None:
    """Overwrite ``tensors`` in place with rank 0's (bool tensors travel as bytes)."""
    if not world.distributed:
        return
    for t in tensors:
        t = t.detach()  # same storage, outside autograd
        dist.broadcast(t.view(torch.uint8) if t.dtype == torch.bool else t, src=0)
