"""Data-parallel training with ``torch.distributed``, launched by ``torchrun``.

``torchrun --nproc_per_node K "$(which galforge)" train ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous variables; :func:`init_distributed` reads them and joins the
process group (NCCL on CUDA, gloo on the CPU).  Without them everything runs in one process
and nothing here touches ``torch.distributed``.

Each process takes the slice ``rank::world_size`` of the global, deterministic batch of a
step (the same split a ``DistributedSampler`` makes) and only rank 0 writes files.  The
networks a recipe calls through their ``forward`` (``Recipe.DDP_NETWORKS``) are wrapped in
:class:`torch.nn.parallel.DistributedDataParallel` (:func:`wrap`), which averages their
gradients in buckets while the backward pass still runs; ``train.sync_bn`` turns their batch
norms into :class:`torch.nn.SyncBatchNorm` (statistics of the global batch; CUDA only, as in
torch).  Trained parameters of networks a recipe reaches past their ``forward`` (sub-network
calls) are averaged after the backward pass by :func:`average_gradients`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from galforge.errors import ConfigError, TrainingError


@dataclass
class DistInfo:
    """Where this process sits in the run (``world_size == 1``: a single process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def init_distributed(device_type: str = "cpu") -> DistInfo:
    """Join the process group described by torchrun's environment variables, if any."""
    world = env_world_size()
    if world <= 1:
        return DistInfo()
    if not dist.is_available():
        raise TrainingError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    here = False
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        here = True
    return DistInfo(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local,
        initialized_here=here,
    )


def shutdown(info: DistInfo) -> None:
    """Leave the process group if :func:`init_distributed` joined it."""
    if info.initialized_here and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def shard(batch: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This process's share of a global batch: items ``rank, rank + world, ...``."""
    if info.world_size <= 1:
        return batch
    part = batch[info.rank :: info.world_size]
    if part.shape[0] == 0:
        raise TrainingError(
            f"train.batch={batch.shape[0]} is smaller than the {info.world_size} processes: "
            "use a batch of at least one image per process"
        )
    return part


class DataParallel(DistributedDataParallel):
    """``DistributedDataParallel`` that also answers the wrapped network's own attributes
    (``G.latent_shape(n)``, ``D.spec()``), so a recipe's code runs unchanged on the wrapper."""

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "module":  # not set yet (inside DDP's constructor)
                raise
            return getattr(self.module, name)


def wrap(
    module: nn.Module,
    device: torch.device,
    *,
    find_unused_parameters: bool = False,
    sync_bn: bool = False,
) -> DataParallel:
    """``module`` in DDP (its parameters broadcast from rank 0 on construction).

    Buffers are synced once, on construction, not at each forward: batch-norm running
    statistics stay per process as before (rank 0's are saved; the EMA generator recomputes
    its own), and a network called several times before one backward (a discriminator on
    reals and fakes) has nothing modified in place under autograd.

    A network run with all its parameters frozen (``requires_grad_(False)``, a discriminator
    during the generator's update) fires none of DDP's gradient hooks, which DDP accepts; one
    run with only some of them used needs ``find_unused_parameters``.
    """
    if sync_bn:
        if device.type != "cuda":
            raise ConfigError(
                "train.sync_bn=true needs CUDA devices (torch's SyncBatchNorm "
                "does not run on the CPU); drop it or train with --device cuda"
            )
        nn.SyncBatchNorm.convert_sync_batchnorm(module)
    ids = [device.index if device.index is not None else 0] if device.type == "cuda" else None
    return DataParallel(
        module,
        device_ids=ids,
        forward_sync_buffers=False,
        find_unused_parameters=find_unused_parameters,
    )


def average_gradients(params: Iterable[torch.Tensor]) -> None:
    """All-reduce (mean) the gradients of ``params`` across processes, in one bucket."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads or not dist.is_initialized():
        return
    world = dist.get_world_size()
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(world)
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def broadcast_modules(modules: Iterable[nn.Module], src: int = 0) -> None:
    """Copy parameters and buffers of rank ``src`` to every process."""
    if not dist.is_initialized():
        return
    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            if t.dtype != torch.bool:  # flags (e.g. dropout on/off) agree by construction
                dist.broadcast(t.data, src)


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def all_finite(value: bool, info: DistInfo) -> bool:
    """True when ``value`` is True on every process (one reduction)."""
    if not info.enabled:
        return value
    t = torch.tensor([0.0 if value else 1.0])
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) == 0.0


def any_true(value: bool, info: DistInfo) -> bool:
    """True when ``value`` is True on any process (one reduction)."""
    return not all_finite(not value, info)
