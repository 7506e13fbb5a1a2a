"""The trainer's data stream: batches are a function of their place in the data order, prefetching changes
nothing, and the row indices handed to the loss terms are those of the masks."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset

from kd_plugin.data import LengthGroupedBatchSampler
from kd_plugin.masking import DynamicMasker, MaskingConfig
from kd_plugin.objectives import MaskedTargets
from kd_plugin.training.batches import BatchMaker, BatchPosition, BatchStream

VOCAB, PAD, MASK, CLS, SEP = 50, 0, 1, 2, 3


def sequences(n: int = 37) -> Dataset:
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(n):
        length = 3 + (i * 7) % 20
        rows.append([CLS, *torch.randint(5, VOCAB, (length,), generator=g).tolist(), SEP])
    return Dataset.from_dict({"input_ids": rows, "length": [len(r) for r in rows]})


def make_stream(data: Dataset, prefetch: int, rank: int = 0, world: int = 1, state=None, multiple: int = 1):
    sampler = LengthGroupedBatchSampler(data["length"], 4, seed=5, num_replicas=world, rank=rank,
                                        group_size_multiplier=2)
    if state is not None:
        sampler.load_state_dict(state)
    masker = DynamicMasker(MaskingConfig(smoothing=0.0), VOCAB, MASK, PAD, [PAD, MASK, CLS, SEP])
    maker = BatchMaker(data, MaskedTargets(masker), seed=11, pad_token_id=PAD, pad_to_multiple_of=multiple)
    return BatchStream(sampler, maker, rank, world, prefetch=prefetch)


def take(stream: BatchStream, n: int):
    try:
        return [next(stream) for _ in range(n)]
    finally:
        stream.close()


def same(a, b) -> bool:
    return (a.position == b.position and torch.equal(a.input_ids, b.input_ids)
            and torch.equal(a.labels, b.labels) and torch.equal(a.attention_mask, b.attention_mask))


def test_prefetching_thread_gives_exactly_the_inline_batches_across_epochs():
    data = sequences()
    n = 25  # 10 micro-batches per epoch: crosses two epoch boundaries
    inline, ahead = take(make_stream(data, 0), n), take(make_stream(data, 3), n)
    assert all(same(a, b) for a, b in zip(inline, ahead, strict=True))
    assert [b.position.epoch for b in inline].count(0) == 10 and inline[10].position == BatchPosition(1, 0, 0)


def test_resuming_from_a_consumed_position_continues_with_the_same_batches():
    data = sequences()
    full = take(make_stream(data, 2), 14)
    cut = full[5].position.sampler_state()  # the checkpoint after the 6th batch
    resumed = take(make_stream(data, 2, state=cut), 8)
    assert all(same(a, b) for a, b in zip(full[6:], resumed, strict=True))


def test_two_ranks_interleaved_are_the_one_rank_stream():
    data = sequences(40)  # 10 batches per epoch, 5 per rank
    one = take(make_stream(data, 0), 10)
    r0, r1 = take(make_stream(data, 1, rank=0, world=2), 5), take(make_stream(data, 1, rank=1, world=2), 5)
    interleaved = [b for pair in zip(r0, r1, strict=True) for b in pair]
    for a, b in zip(one, interleaved, strict=True):
        assert a.position.global_index == b.position.global_index
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)


def test_row_indices_and_counts_are_those_of_the_masks_and_padding_is_rounded():
    for batch in take(make_stream(sequences(), 0, multiple=8), 10):
        assert batch.input_ids.shape[1] % 8 == 0
        flat_mask, flat_labels = batch.attention_mask.flatten(), batch.labels.flatten()
        assert torch.equal(batch.token_rows, flat_mask.nonzero().squeeze(1))
        assert torch.equal(batch.target_rows, flat_labels.ne(-100).nonzero().squeeze(1))
        assert batch.n_tokens == int(flat_mask.sum()) and batch.n_targets == len(batch.target_rows) > 0
        assert bool((flat_mask[batch.target_rows] == 1).all())  # only real tokens are masked


def test_an_error_in_the_prefetch_thread_is_raised_in_the_loop():
    data = sequences()
    stream = make_stream(data, 2)
    stream.maker.targets = None  # the thread's make() fails on its first batch
    with pytest.raises(AttributeError):
        take(stream, 1)
