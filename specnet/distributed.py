"""Training on several processes: the process group torchrun describes, and what each rank
takes and shares (DistributedDataParallel; NCCL on GPUs, gloo on CPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .errors import ParameterError, counted


@dataclass(frozen=True)
class Dist:
    """This process's place among the ranks of a run (one process alone: the defaults)."""

    rank: int = 0
    world_size: int = 1
    owns_group: bool = False  # this run joined the process group, so it must leave it
    device: torch.device = torch.device("cpu")  # this rank's: NCCL reduces CUDA tensors only

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, order: torch.Tensor) -> torch.Tensor:
        """This rank's items of ``order``, as many on every rank (the last ``len % world_size`` are dropped).

        Equal shares mean equal step counts: a rank that ran out of batches
        first would leave the others waiting forever in DDP's gradient all-reduce.
        """
        usable = len(order) - len(order) % self.world_size
        return order[self.rank : usable : self.world_size]

    def sync_buffers(self, module: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers.

        Each rank updates batch-norm statistics with its own batches (DDP
        broadcasts them again only at the next forward), so without this the
        ranks would validate different models, none of them the one rank 0 saves.
        """
        if self.world_size > 1:
            for buffer in module.buffers():
                torch.distributed.broadcast(buffer, src=0)

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over the ranks, in place (and returned), wherever it lives."""
        if self.world_size > 1:
            on_device = tensor.to(self.device)
            torch.distributed.all_reduce(on_device)
            tensor.copy_(on_device)
        return tensor


def setup_distributed(device: torch.device) -> Dist:
    """Join the process group torchrun describes (WORLD_SIZE > 1); NCCL on GPUs, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    # Each process takes the GPU of its local rank: said before any process joins the group, so
    # every one of them stops with this line rather than one failing and the rest waiting for it.
    processes_here, gpus = int(os.environ.get("LOCAL_WORLD_SIZE", world)), torch.cuda.device_count()
    if device.type == "cuda" and processes_here > gpus:  # cuda:N too: each process takes its local rank's GPU
        raise ParameterError(f"torchrun started {processes_here} processes on this machine, which has "
                             f"{counted(gpus, 'CUDA device')}: one process per GPU (--nproc_per_node {gpus}), "
                             "or device='cpu' for all of them")
    owns_group = not torch.distributed.is_initialized()
    if owns_group:
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend)
    rank = torch.distributed.get_rank()
    if device.type == "cuda":  # cuda:N too: each process takes its local rank's GPU
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    return Dist(rank, torch.distributed.get_world_size(), owns_group, device)
