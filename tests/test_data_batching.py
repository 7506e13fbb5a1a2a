"""Length-grouped batch sampler (coverage, sharding, padding, resume) and the padding collate function."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from kd_plugin.data import LengthGroupedBatchSampler, collate_batch
from kd_plugin.errors import ConfigError


def synthetic_lengths(n: int = 5000, seed: int = 0) -> np.ndarray:
    """Sentence-like lengths: a long-tailed spread between 4 and 512 tokens."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(mean=4.0, sigma=0.9, size=n), 4, 512).astype(np.int64)


def padding_waste(batches, lengths: np.ndarray) -> float:
    """Fraction of padded positions over all positions of right-padded batches."""
    padded = sum(len(b) * int(lengths[b].max()) for b in batches)
    return 1.0 - sum(int(lengths[b].sum()) for b in batches) / padded


@pytest.mark.parametrize(
    ("n", "micro_batch_size", "num_replicas"),
    [(1000, 16, 1), (1003, 16, 2), (997, 8, 3), (50, 7, 3), (50, 7, 4)],
)
def test_every_index_exactly_once_per_epoch_across_ranks(n, micro_batch_size, num_replicas):
    lengths = synthetic_lengths(n)
    samplers = [
        LengthGroupedBatchSampler(
            lengths, micro_batch_size, seed=1, num_replicas=num_replicas, rank=r, group_size_multiplier=5
        )
        for r in range(num_replicas)
    ]
    for epoch in (0, 1):
        per_rank = []
        for sampler in samplers:
            sampler.set_epoch(epoch)
            per_rank.append(list(sampler))
        assert {len(batches) for batches in per_rank} == {len(samplers[0])}  # same count on every rank
        seen = [i for batches in per_rank for batch in batches for i in batch]
        assert sorted(seen) == list(range(n))
        assert all(1 <= len(batch) <= micro_batch_size for batches in per_rank for batch in batches)


def test_drop_last_gives_full_batches_and_equal_counts():
    lengths = synthetic_lengths(1003)
    samplers = [
        LengthGroupedBatchSampler(lengths, 16, seed=0, num_replicas=3, rank=r, drop_last=True)
        for r in range(3)
    ]
    per_rank = [list(s) for s in samplers]
    assert [len(b) for b in per_rank] == [len(samplers[0])] * 3 == [1003 // 16 // 3] * 3
    seen = [i for batches in per_rank for batch in batches for i in batch]
    assert len(seen) == len(set(seen)) and all(len(batch) == 16 for batches in per_rank for batch in batches)


def test_length_grouping_cuts_padding_waste():
    lengths = synthetic_lengths(20_000)
    grouped = list(LengthGroupedBatchSampler(lengths, 32, seed=0, group_size_multiplier=50))
    random = list(LengthGroupedBatchSampler(lengths, 32, seed=0, group_size_multiplier=1))  # no grouping
    grouped_waste, random_waste = padding_waste(grouped, lengths), padding_waste(random, lengths)
    assert random_waste > 0.5
    assert grouped_waste < 0.1 * random_waste, (grouped_waste, random_waste)


def test_batches_are_length_homogeneous_but_order_is_shuffled():
    lengths = np.arange(4000) % 500 + 1
    batches = list(LengthGroupedBatchSampler(lengths, 20, seed=0))
    max_lengths = [int(lengths[b].max()) for b in batches]
    assert max_lengths != sorted(max_lengths) and max_lengths != sorted(max_lengths, reverse=True)


def test_same_seed_same_order_other_seed_or_epoch_differs():
    lengths = synthetic_lengths(2000)

    def run(seed, epoch):
        sampler = LengthGroupedBatchSampler(lengths, 16, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert run(5, 0) == run(5, 0)
    assert run(5, 0) != run(6, 0)
    assert run(5, 0) != run(5, 1)


@pytest.mark.parametrize("stop_after", [0, 1, 17, 62])
def test_resume_from_state_dict_yields_exactly_the_remaining_batches(stop_after):
    lengths = synthetic_lengths(2000)
    make = lambda: LengthGroupedBatchSampler(lengths, 16, seed=9, num_replicas=2, rank=1)  # noqa: E731
    reference = make()
    reference.set_epoch(3)
    uninterrupted = list(reference)

    first = make()
    first.set_epoch(3)
    taken = list(itertools.islice(iter(first), stop_after))
    state = first.state_dict()
    assert state == {"epoch": 3, "batches_consumed": stop_after}

    resumed = make()
    resumed.load_state_dict(state)
    resumed.set_epoch(3)  # what a training loop does at the top of the resumed epoch: keeps the position
    assert taken + list(resumed) == uninterrupted
    assert resumed.state_dict() == {"epoch": 4, "batches_consumed": 0}


def test_epochs_advance_and_len_is_per_rank():
    lengths = synthetic_lengths(1000)
    sampler = LengthGroupedBatchSampler(lengths, 10, seed=0, num_replicas=4, rank=2)
    assert len(sampler) == 25
    epoch0, epoch1 = list(sampler), list(sampler)  # iterating again moves on to the next epoch
    assert len(epoch0) == len(epoch1) == 25 and epoch0 != epoch1
    assert sampler.state_dict() == {"epoch": 2, "batches_consumed": 0}
    # a state saved exactly at an epoch's end resumes at the next epoch
    other = LengthGroupedBatchSampler(lengths, 10, seed=0, num_replicas=4, rank=2)
    other.load_state_dict({"epoch": 0, "batches_consumed": 25})
    assert list(other) == epoch1


def test_invalid_sampler_arguments():
    with pytest.raises(ConfigError):
        LengthGroupedBatchSampler([5, 6, 7], 0, seed=0)
    with pytest.raises(ConfigError):
        LengthGroupedBatchSampler([5, 6, 7], 2, seed=0, num_replicas=2, rank=2)
    with pytest.raises(ConfigError, match="drop_last"):
        LengthGroupedBatchSampler([5, 6, 7], 1, seed=0, num_replicas=4)


def test_collate_batch_right_pads_to_the_longest():
    examples = [
        {"input_ids": [101, 7, 8, 102]},
        {"input_ids": [101, 9, 102]},
        {"input_ids": torch.tensor([101, 102])},
    ]
    batch = collate_batch(examples, pad_token_id=0)
    assert batch["input_ids"].dtype == torch.long and batch["attention_mask"].dtype == torch.long
    assert batch["input_ids"].tolist() == [[101, 7, 8, 102], [101, 9, 102, 0], [101, 102, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]]


def test_sampler_and_collate_drive_a_dataloader():
    rng = np.random.default_rng(0)
    sequences = [list(rng.integers(1, 100, size=int(n))) for n in rng.integers(3, 40, size=200)]
    lengths = [len(s) for s in sequences]
    dataset = [{"input_ids": s} for s in sequences]
    sampler = LengthGroupedBatchSampler(lengths, 8, seed=0, group_size_multiplier=4)
    loader = DataLoader(
        dataset, batch_sampler=sampler, collate_fn=lambda ex: collate_batch(ex, pad_token_id=0)
    )
    batches = list(loader)
    assert len(batches) == len(sampler) == 25
    assert sum(int(b["attention_mask"].sum()) for b in batches) == sum(lengths)
    assert all(b["input_ids"].shape == b["attention_mask"].shape for b in batches)


@pytest.mark.parametrize("n, num_replicas", [(17 * 4, 2), (17 * 4 + 3, 2), (97, 3)])
def test_ranks_interleaved_reproduce_the_one_rank_order_except_the_tail(n, num_replicas):
    lengths = np.random.default_rng(1).integers(5, 60, size=n)
    one = [list(b) for b in LengthGroupedBatchSampler(lengths, 4, seed=3)]
    ranks = [[list(b) for b in LengthGroupedBatchSampler(lengths, 4, seed=3, num_replicas=num_replicas, rank=r)]
             for r in range(num_replicas)]
    interleaved = [batch for step in zip(*ranks, strict=True) for batch in step]
    tail = num_replicas  # at most the last few batches are split to give every rank the same count
    assert interleaved[: len(one) - tail] == one[: len(one) - tail]
    assert sorted(i for b in interleaved for i in b) == list(range(n))
