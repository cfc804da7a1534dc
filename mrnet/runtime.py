"""Where a model runs: the device, this process's place in a torchrun job, autocast.

resolve_device   --device auto|cpu|cuda -> torch.device (the GPU of this local rank)
Torchrun         this process's place in a torchrun job (rank 0 of 1 without one)
init_distributed join torchrun's process group: NCCL on GPUs, gloo on the CPU
same_outcome     BadInput in any process is raised in all (none waits in a collective)
autocast         bf16 autocast on CUDA, plain fp32 elsewhere: the one definition
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from mrnet.options import DEVICES
from pipeline.errors import BadInput


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: this local rank's GPU when CUDA is available, else the CPU."""
    DEVICES.check(name, "--device")
    if name == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda but no GPU is visible; use --device cpu or auto")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def autocast(device: torch.device):
    """bf16 autocast on CUDA (the pooling keeps its statistics in fp32), fp32 elsewhere."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DistributedDataParallel and torch.compile wrappers (their
    state dicts carry `module.` / `_orig_mod.` prefixes that checkpoints must not)."""
    if isinstance(model, DDP):
        model = model.module
    return getattr(model, "_orig_mod", model)


@dataclass(frozen=True)
class Torchrun:
    """This process's place in a torchrun job; rank 0 of 1, not ``enabled``, without one."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    enabled: bool = False  # in a process group (even of one process: DDP all the same)

    @property
    def main(self) -> bool:
        """Whether this is rank 0 (the process that writes and prints)."""
        return self.rank == 0


def init_distributed(device: str) -> Torchrun:
    """Join torchrun's process group when RANK and WORLD_SIZE are set: NCCL when the run
    uses GPUs (this process takes GPU LOCAL_RANK), gloo on the CPU."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Torchrun()
    if not {"MASTER_ADDR", "MASTER_PORT"} <= set(os.environ):
        raise BadInput(
            "RANK and WORLD_SIZE are set but MASTER_ADDR/MASTER_PORT are not; launch "
            "with `torchrun ... --no-python mrnet train ...` or unset RANK"
        )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_nccl = device != "cpu" and torch.cuda.is_available()
    if use_nccl:
        if local_rank >= torch.cuda.device_count():
            raise BadInput(
                f"torchrun process {local_rank} of this node has no GPU ("
                f"{torch.cuda.device_count()} visible); pass --nproc-per-node "
                f"{torch.cuda.device_count()} or less"
            )
        torch.cuda.set_device(local_rank)  # NCCL collectives use the current device
    dist.init_process_group("nccl" if use_nccl else "gloo")
    return Torchrun(dist.get_rank(), dist.get_world_size(), local_rank, enabled=True)


def collective_device() -> torch.device:
    """Where tensors for collectives live: CUDA under NCCL, else the CPU (gloo)."""
    return torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")


@contextmanager
def same_outcome(torchrun: Torchrun) -> Iterator[None]:
    """Checks that every process runs: BadInput in any process is raised in all of them
    (the others name the first failing rank), so none waits in a collective for one
    that stopped. Every process must enter and leave the block (no return inside)."""
    error: BadInput | None = None
    try:
        yield
    except BadInput as e:
        error = e
    if torchrun.enabled:
        mine = torchrun.rank if error else torchrun.world
        first = torch.tensor([mine], device=collective_device())
        dist.all_reduce(first, op=dist.ReduceOp.MIN)
        if error is None and int(first) < torchrun.world:
            error = BadInput(
                f"torchrun process {int(first)} stopped on bad input (see its error); "
                "fix that and rerun"
            )
    if error is not None:
        raise error


def broadcast_buffers(model: nn.Module) -> None:
    """Give every process rank 0's buffers (BatchNorm running statistics): DDP keeps the
    parameters equal, but each process's last forward updated its own statistics."""
    for b in model.buffers():
        dist.broadcast(b, src=0)
