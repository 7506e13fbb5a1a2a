"""Length-grouped, sharded, resumable micro-batches, and the padding collate function.

Grouping sequences of similar length into a micro-batch cuts the padding a batch carries (DistilBERT's
``group_by_size``). Per epoch ``e`` the sampler, with ``rng = default_rng(seed + e)``:

1. shuffles all indices;
2. cuts them into mega-batches of ``micro_batch_size * group_size_multiplier`` and sorts each by length;
3. cuts each mega-batch into micro-batches (only the very last micro-batch of the epoch can be short;
   ``drop_last`` drops it);
4. makes the number of micro-batches a multiple of ``num_replicas``: with ``drop_last`` by dropping the surplus,
   otherwise by halving the largest micro-batches (so every index still appears exactly once per epoch);
5. shuffles the micro-batch order, and rank ``r`` takes micro-batches ``r::num_replicas``.

Every rank computes the same epoch plan from the same seed, so no communication is needed, and all ranks get
``len(sampler)`` micro-batches. Resume: ``state_dict()`` is ``{"epoch", "batches_consumed"}`` (micro-batches this
rank has handed out in the epoch); after ``load_state_dict`` iteration continues with the next micro-batch.
A completed epoch moves the state to ``{"epoch": e + 1, "batches_consumed": 0}``. With a DataLoader that
prefetches (``num_workers > 0``) the sampler runs ahead of training: checkpoint the trainer's own count of
micro-batches trained, in the same dict form.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch

from kd_plugin.errors import ConfigError


class LengthGroupedBatchSampler:
    """Batch sampler (yields lists of dataset indices) for ``DataLoader(batch_sampler=...)``."""

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        micro_batch_size: int,
        seed: int,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
        group_size_multiplier: int = 50,
    ):
        self.lengths = np.asarray(lengths, dtype=np.int64)  # (n,)
        if self.lengths.ndim != 1 or len(self.lengths) == 0:
            raise ConfigError("data.lengths", "need a non-empty 1-D sequence of lengths")
        if micro_batch_size < 1:
            raise ConfigError("data.micro_batch_size", f"{micro_batch_size!r}", "an integer >= 1")
        if group_size_multiplier < 1:
            raise ConfigError("data.group_size_multiplier", f"{group_size_multiplier!r}", "an integer >= 1")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ConfigError(
                "data.rank", f"rank {rank} of {num_replicas} replicas", "0 <= rank < num_replicas"
            )
        self.micro_batch_size = micro_batch_size
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        self.group_size_multiplier = group_size_multiplier
        self.epoch = 0
        self.batches_consumed = 0

        n = len(self.lengths)
        n_batches = n // micro_batch_size if drop_last else math.ceil(n / micro_batch_size)
        if drop_last:
            self._per_rank = n_batches // num_replicas
        else:
            self._per_rank = math.ceil(n_batches / num_replicas)
            if self._per_rank * num_replicas > n:
                raise ConfigError(
                    "data.drop_last",
                    f"{n} sequences cannot fill {self._per_rank} non-empty micro-batches on each of {num_replicas} "
                    "ranks without repeating one",
                    "drop_last=True, or fewer ranks",
                )
        if self._per_rank == 0:
            raise ConfigError(
                "data.micro_batch_size",
                f"{n} sequences give no full micro-batch per rank",
                "a smaller micro_batch_size",
            )

    def __len__(self) -> int:
        """Micro-batches per rank per epoch (the same on every rank)."""
        return self._per_rank

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its beginning; a no-op when it is already the current epoch (keeps a resumed position)."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.batches_consumed = 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches_consumed": self.batches_consumed}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.batches_consumed = int(state["batches_consumed"])

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """All ranks' micro-batches of ``epoch`` in order (rank r takes ``[r::num_replicas]``)."""
        rng = np.random.default_rng(self.seed + epoch)
        order = rng.permutation(len(self.lengths))  # (n,)
        group = self.micro_batch_size * self.group_size_multiplier
        batches: list[np.ndarray] = []
        for begin in range(0, len(order), group):
            mega = order[begin : begin + group]
            mega = mega[np.argsort(-self.lengths[mega], kind="stable")]  # longest first
            batches.extend(
                mega[i : i + self.micro_batch_size] for i in range(0, len(mega), self.micro_batch_size)
            )
        if self.drop_last and len(batches[-1]) < self.micro_batch_size:
            batches.pop()
        # Shuffle first, then fit the count to the ranks at the TAIL only: interleaving the ranks' batches gives
        # the one-rank order except for the last few batches, so 2 ranks x accumulation A see the same
        # batches per optimizer step as 1 rank x 2A.
        batches = [batches[i] for i in rng.permutation(len(batches))]
        target = self._per_rank * self.num_replicas
        if self.drop_last:
            batches = batches[:target]
        while len(batches) < target:  # split the last splittable micro-batch until ranks get equal counts
            i = max(j for j in range(len(batches)) if len(batches[j]) > 1)
            half = (len(batches[i]) + 1) // 2
            batches[i : i + 1] = [batches[i][:half], batches[i][half:]]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        if self.batches_consumed >= self._per_rank:  # the saved epoch was finished
            self.epoch, self.batches_consumed = self.epoch + 1, 0
        mine = self.epoch_batches(self.epoch)[self.rank :: self.num_replicas]
        for batch in mine[self.batches_consumed :]:
            self.batches_consumed += 1
            yield batch.tolist()
        self.epoch, self.batches_consumed = self.epoch + 1, 0


def collate_batch(examples: Sequence[Mapping], pad_token_id: int, pad_to_multiple_of: int = 1) -> dict[str, torch.Tensor]:
    """Right-pad ``input_ids`` to the longest example in the batch, rounded up to ``pad_to_multiple_of``.

    Returns ``input_ids`` (bs, max_len) LongTensor and ``attention_mask`` (bs, max_len) LongTensor, 1 on tokens.
    A multiple of 8 keeps GPU matrix shapes tensor-core friendly and limits the number of distinct shapes; the
    extra positions are padding, masked out of attention and of every loss.
    """
    sequences = [torch.as_tensor(example["input_ids"], dtype=torch.long) for example in examples]
    longest = max(len(s) for s in sequences)
    max_len = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = torch.full((len(sequences), max_len), pad_token_id, dtype=torch.long)  # (bs, max_len)
    attention_mask = torch.zeros((len(sequences), max_len), dtype=torch.long)  # (bs, max_len)
    for row, sequence in enumerate(sequences):
        input_ids[row, : len(sequence)] = sequence
        attention_mask[row, : len(sequence)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}
