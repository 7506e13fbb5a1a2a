"""The original DistilBERT data path: length-grouped (or random) batches of in-RAM sequences, padded per batch.

After Hugging Face's ``examples/research_projects/distillation``:

- ``LmSeqsDataset`` holds every sequence in RAM as an int array with its length;
- ``RandomSampler`` shuffles the indices once per epoch (here: ``torch.randperm`` with the loop's own generator);
- ``group_by_size`` wraps it in ``GroupedBatchSampler`` with ``create_lengths_groups(lengths, k)``: lengths are
  quantised into bins ``[3, 7, 11, ..., < k]`` (width 4; ``k`` = the model's max input size, 512 for BERT); the
  shuffled indices are read in order into one buffer per bin, and a batch is emitted as soon as a bin's buffer
  holds ``batch_size`` indices. When the epoch's indices run out, the leftovers of all bins are concatenated in
  bin order and cut into batches of ``batch_size`` (the last one can be short), so an epoch has exactly
  ``ceil(n / batch_size)`` batches;
- without ``group_by_size``: ``BatchSampler(RandomSampler, batch_size, drop_last=False)``;
- ``batch_sequences`` (the DataLoader's collate function, main process) right-pads each batch to its longest
  sequence with ``[PAD]`` through Python lists and returns ``(token_ids (bs, max_len), lengths (bs,))``.

The batch stream here is endless: a new epoch (a new permutation) starts when one ends.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
import torch

GROUPINGS = ("grouped", "random")


def sequences_in_ram(corpus_split) -> tuple[list[np.ndarray], np.ndarray]:
    """Every ``input_ids`` row of an Arrow-backed split as an int64 array (what ``LmSeqsDataset`` keeps in RAM)."""
    column = corpus_split.data.column("input_ids").combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.int64)  # (n_tokens,)
    lengths = column.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64)  # (n_sequences,)
    token_ids = np.split(values, np.cumsum(lengths)[:-1])  # n_sequences x (length,)
    return token_ids, lengths


def create_lengths_groups(lengths: np.ndarray, k: int) -> list[int]:
    """Bin id of each sequence length: ``bisect_right`` into the bins ``3, 7, 11, ... < k`` (``[10]`` if k <= 0)."""
    bins = np.arange(start=3, stop=k, step=4).tolist() if k > 0 else [10]
    return [bisect.bisect_right(bins, int(length)) for length in lengths]


def grouped_batches(order: Sequence[int], group_ids: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """One epoch of ``GroupedBatchSampler``: batches of indices from one length bin, leftovers merged at the end."""
    buffer_per_group: dict[int, list[int]] = defaultdict(list)
    n_batches = 0
    for idx in order:
        group_id = group_ids[idx]
        buffer_per_group[group_id].append(idx)
        if len(buffer_per_group[group_id]) == batch_size:
            yield buffer_per_group.pop(group_id)
            n_batches += 1
    remaining = (len(order) + batch_size - 1) // batch_size - n_batches
    leftover: list[int] = []
    for _, idxs in sorted(buffer_per_group.items()):
        leftover.extend(idxs)
        if len(leftover) >= batch_size:
            yield leftover[:batch_size]
            leftover = leftover[batch_size:]
            remaining -= 1
    if leftover:
        yield leftover
        remaining -= 1
    assert remaining == 0, remaining


def random_batches(order: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """One epoch of ``BatchSampler(RandomSampler, batch_size, drop_last=False)``."""
    for begin in range(0, len(order), batch_size):
        yield list(order[begin : begin + batch_size])


def batch_stream(
    lengths: np.ndarray, batch_size: int, grouping: str, max_model_input_size: int, generator: torch.Generator
) -> Iterator[list[int]]:
    """Endless batches of dataset indices, epoch after epoch, each epoch on a fresh permutation."""
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping must be one of {GROUPINGS}, got {grouping!r}")
    group_ids = create_lengths_groups(lengths, max_model_input_size) if grouping == "grouped" else None
    while True:
        order = torch.randperm(len(lengths), generator=generator).tolist()  # RandomSampler
        if group_ids is None:
            yield from random_batches(order, batch_size)
        else:
            yield from grouped_batches(order, group_ids, batch_size)


def batch_sequences(token_ids: list[np.ndarray], pad_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``LmSeqsDataset.batch_sequences``: pad to the longest sequence; ``(token_ids, lengths)``."""
    lengths = [len(t) for t in token_ids]
    max_seq_len_ = max(lengths)
    tk_ = [list(t.astype(int)) + [pad_idx] * (max_seq_len_ - len(t)) for t in token_ids]
    tk_t = torch.tensor(tk_)  # (bs, max_seq_len_)
    lg_t = torch.tensor(lengths)  # (bs,)
    return tk_t, lg_t
