"""Process-group set-up for `torchrun --nproc_per_node=N` (NCCL on GPU, gloo on CPU); one process otherwise."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistributedContext", "setup_distributed"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedContext:
    rank: int
    world_size: int
    device: torch.device

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def sync_buffers(self, module: torch.nn.Module) -> None:
        """Copy rank 0's buffers (batch-norm statistics) to every rank.

        DDP broadcasts buffers at the start of each forward pass, so after the last step of an epoch each
        rank holds the statistics of its own last batch; this makes every rank's model identical again.
        """
        if self.enabled:
            for buffer in module.buffers():
                dist.broadcast(buffer.data, src=0)

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on any (keeps stop decisions in step)."""
        if not self.enabled:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)


def setup_distributed(device: str = "auto") -> DistributedContext:
    """Join the process group torchrun describes in the environment (WORLD_SIZE > 1), else run alone."""
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("run.device = 'cuda' but no CUDA device is available")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext(0, 1, torch.device("cuda" if use_cuda else "cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    rank = dist.get_rank()
    log.info("process %d of %d (%s)", rank, world_size, "nccl" if use_cuda else "gloo")
    return DistributedContext(
        rank, dist.get_world_size(), torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    )
