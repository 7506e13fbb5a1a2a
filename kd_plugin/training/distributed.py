"""The few collective operations the trainer needs beyond DeepSpeed's, each a no-op in a one-rank run."""

from __future__ import annotations

import time
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


def announce(key: str, value: str = "ok") -> None:
    """Tell the other ranks that ``key`` is done (with ``value``), through the process group's key-value store."""
    if is_distributed():
        dist.distributed_c10d._get_default_store().set(key, value)


def await_announcement(key: str, poll_seconds: float = 1.0) -> str:
    """Wait, however long it takes, until rank 0 announces ``key``; its value.

    Not a ``barrier()``: a collective gives up after the process group's timeout (10 to 30 minutes), and rank 0
    may tokenize a corpus for hours while the others wait. Polling the store involves no collective, so nothing
    times out; if rank 0 dies instead, the launcher (torchrun, deepspeed) stops the other ranks."""
    if not is_distributed():
        return "ok"
    store = dist.distributed_c10d._get_default_store()
    while not store.check([key]):
        time.sleep(poll_seconds)
    return store.get(key).decode()
