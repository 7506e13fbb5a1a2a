"""The few collective operations the trainer needs beyond DeepSpeed's, each a no-op in a one-rank run."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_ranks_sum(values: torch.Tensor) -> torch.Tensor:
    """``values`` summed over the ranks of the process group (itself in a one-rank run)."""
    if is_distributed():
        values = values.to("cuda" if dist.get_backend() == "nccl" else "cpu")  # NCCL reduces CUDA tensors only
        dist.all_reduce(values)
    return values


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def gather(item: Any) -> list[Any]:
    """Every rank's ``item``, in rank order (picklable objects)."""
    if not is_distributed():
        return [item]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, item)
    return gathered


def from_rank_0(item: Any) -> Any:
    """Rank 0's ``item`` on every rank (e.g. a generated output folder name)."""
    if not is_distributed():
        return item
    holder = [item]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
