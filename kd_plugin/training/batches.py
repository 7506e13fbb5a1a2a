"""The trainer's data stream: length-grouped micro-batches with their targets, prepared ahead of the model.

The targets come from the teacher's objective (:mod:`kd_plugin.objectives`): a fresh dynamic mask per batch for
a masked LM, the next tokens for a causal LM. A micro-batch is a pure function of its place in the data order
(epoch, this rank's batch index): the sampler fixes the sequences, ``batch_generator(seed, epoch, global_index)``
the mask. So batches can be prepared by a
background thread while the model computes (``performance.prefetch_batches``), pinned for asynchronous copies
to the GPU, and a resumed run or a run on more ranks still sees exactly the batches and masks of an
uninterrupted one-rank run. What a checkpoint records is the position of the last batch the *loop consumed*
(``MicroBatch.position``), never the sampler's own state, which runs ahead.

Each batch also carries, computed on the host, the flat indices of its real tokens and of its target positions
(and their counts as Python ints), so nothing downstream needs a device-to-host synchronisation to select rows
or count tokens.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch
from datasets import Dataset

from kd_plugin.config import BatchPlan, DistillConfig
from kd_plugin.data import (
    LengthGroupedBatchSampler,
    TokenizedCorpus,
    build_tokenized_corpus,
    collate_batch,
    load_corpus,
)
from kd_plugin.data.tokenized import resolve_num_proc
from kd_plugin.masking import IGNORE_INDEX
from kd_plugin.objectives import Objective, TargetMaker
from kd_plugin.training.distributed import announce, await_announcement


def batch_generator(seed: int, epoch: int, global_index: int) -> torch.Generator:
    """A masking RNG that depends only on the batch's place in the data order, not on rank or history, so a
    resumed run and a run on more ranks mask every batch exactly as an uninterrupted one-rank run."""
    state = np.random.SeedSequence([seed, epoch, global_index]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


@dataclass(frozen=True)
class BatchPosition:
    epoch: int
    index: int  # this rank's batch number within the epoch, 0-based
    global_index: int  # the batch's number in the one-rank order: index * world_size + rank

    def sampler_state(self) -> dict[str, int]:
        """The sampler state that continues right after this batch."""
        return {"epoch": self.epoch, "batches_consumed": self.index + 1}


@dataclass(frozen=True)
class MicroBatch:
    input_ids: torch.Tensor  # (bs, seq_len), after masking (masked LM)
    attention_mask: torch.Tensor  # (bs, seq_len)
    labels: torch.Tensor  # (bs, seq_len), the target id (masked / next token), -100 where there is none
    token_rows: torch.Tensor  # (n_tokens,) flat indices of real tokens in bs * seq_len
    target_rows: torch.Tensor  # (n_targets,) flat indices of positions with a target
    n_tokens: int
    n_targets: int
    position: BatchPosition

    @property
    def padded(self) -> bool:
        """Whether any position is padding (known on the host: the models then need the attention mask)."""
        return self.n_tokens < self.input_ids.numel()

    def to(self, device: torch.device, non_blocking: bool = False) -> MicroBatch:
        """On ``device``; ``non_blocking`` copies overlap compute when the host tensors are pinned."""
        move = {name: getattr(self, name).to(device, non_blocking=non_blocking)
                for name in ("input_ids", "attention_mask", "labels", "token_rows", "target_rows")}
        return replace(self, **move)


class BatchMaker:
    """Position + sequence indices -> a padded MicroBatch with its targets, on the host (optionally pinned)."""

    def __init__(self, sequences: Dataset, targets: TargetMaker, seed: int, pad_token_id: int,
                 pad_to_multiple_of: int = 1, pin_memory: bool = False):
        self.sequences = sequences
        self.targets = targets
        self.seed = seed
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.pin_memory = pin_memory

    def make(self, position: BatchPosition, indices: list[int]) -> MicroBatch:
        examples = [{"input_ids": ids} for ids in self.sequences[indices]["input_ids"]]
        batch = collate_batch(examples, self.pad_token_id, self.pad_to_multiple_of)
        generator = batch_generator(self.seed, position.epoch, position.global_index)
        input_ids, labels = self.targets.make(batch["input_ids"], batch["attention_mask"], generator)
        token_rows = batch["attention_mask"].flatten().nonzero().squeeze(1)  # (n_tokens,)
        target_rows = labels.flatten().ne(IGNORE_INDEX).nonzero().squeeze(1)  # (n_targets,)
        tensors = [input_ids, batch["attention_mask"], labels, token_rows, target_rows]
        if self.pin_memory:
            tensors = [t.pin_memory() for t in tensors]
        return MicroBatch(*tensors, n_tokens=len(token_rows), n_targets=len(target_rows), position=position)


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


class BatchStream:
    """Endless micro-batches (epoch after epoch) from the sampler's current state.

    ``prefetch > 0``: a daemon thread prepares up to ``prefetch`` batches ahead (collation and masking release
    the GIL in torch's kernels, so the loop does not wait for them); an error in the thread is raised in the
    loop. ``prefetch == 0``: each batch is made when asked for. Both give the same batches in the same order.
    """

    def __init__(self, sampler: LengthGroupedBatchSampler, maker: BatchMaker, rank: int, world_size: int,
                 prefetch: int = 0):
        self.sampler = sampler
        self.maker = maker
        self.rank = rank
        self.world_size = world_size
        self.prefetch = prefetch
        self._queue: queue.Queue | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._inline: Iterator[MicroBatch] | None = None

    def _batches(self) -> Iterator[MicroBatch]:
        while True:
            for indices in self.sampler:
                epoch, index = self.sampler.epoch, self.sampler.batches_consumed - 1
                position = BatchPosition(epoch, index, index * self.world_size + self.rank)
                yield self.maker.make(position, indices)

    def _produce(self) -> None:
        try:
            for batch in self._batches():
                while not self._stop.is_set():
                    try:
                        self._queue.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which raises it
            while not self._stop.is_set():  # a consumer that closed the stream no longer reads the queue
                try:
                    self._queue.put(_Failure(error), timeout=0.1)
                    return
                except queue.Full:
                    continue

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> MicroBatch:
        if self.prefetch == 0:
            if self._inline is None:
                self._inline = self._batches()
            return next(self._inline)
        if self._thread is None:
            self._queue = queue.Queue(maxsize=self.prefetch)
            self._thread = threading.Thread(target=self._produce, name="kd-batch-prefetch", daemon=True)
            self._thread.start()
        item = self._queue.get()
        if isinstance(item, _Failure):
            raise item.error
        return item

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)  # it stops within one batch's collation
            if self._thread.is_alive():  # it may still advance the sampler: the caller must not restore it
                raise RuntimeError("the batch prefetch thread did not stop within 60 s")


@dataclass
class DataPlan:
    """The tokenized corpus, this rank's sampler and batch maker, and the schedule's length in optimizer steps."""

    corpus: TokenizedCorpus
    sampler: LengthGroupedBatchSampler
    maker: BatchMaker
    total_steps: int


RAW_CACHE = "raw"  # under data.cache_dir: the Arrow conversion of a local or hub corpus (not ~/.cache)
CORPUS_READY = "kd_corpus_ready"  # the store key rank 0 announces once the tokenized corpus is cached
FAILED = "failed: "


def build_data(config: DistillConfig, tokenizer, objective: Objective, plan: BatchPlan, rank: int,
               device: torch.device) -> DataPlan:
    """Corpus -> cached tokenized sequences -> length-grouped sampler and batch maker (with the objective's
    targets) for this rank.

    Rank 0 tokenizes and fills the cache while the other ranks wait (without a collective timeout: a large
    corpus takes hours) for its announcement, then they open the cache; if rank 0 fails, they stop with its error.
    """
    data, performance, cuda = config.data, config.performance, device.type == "cuda"
    if rank != 0:
        outcome = await_announcement(CORPUS_READY)
        if outcome.startswith(FAILED):
            raise RuntimeError(f"rank 0 could not prepare the corpus: {outcome[len(FAILED):]}")
    try:
        documents = load_corpus(data.corpus, sample_by=data.sample_by, text_column=data.text_column,
                                encoding=data.encoding, cache_dir=str(data.cache_dir / RAW_CACHE))
        if data.max_documents:
            documents = documents.select(range(min(data.max_documents, len(documents))))
        corpus = build_tokenized_corpus(documents, tokenizer, data.max_seq_length, data.cache_dir,
                                        data.held_out_fraction, resolve_num_proc(data.num_proc, len(documents)))
    except BaseException as err:
        if rank == 0:
            announce(CORPUS_READY, f"{FAILED}{type(err).__name__}: {err}")
        raise
    if rank == 0:
        announce(CORPUS_READY)
    targets = objective.targets(config.masking, tokenizer, corpus.token_counts)
    sampler = LengthGroupedBatchSampler(corpus.lengths("train"), plan.micro_batch_size, seed=config.seed,
                                        num_replicas=plan.world_size, rank=rank)
    maker = BatchMaker(corpus.train, targets, config.seed, tokenizer.pad_token_id,
                             pad_to_multiple_of=performance.pad_to_multiple_of or (8 if cuda else 1),
                             pin_memory=cuda if performance.pin_memory == "auto" else performance.pin_memory == "true")
    run = config.run
    total_steps = run.max_steps or max(1, math.ceil(run.epochs * len(sampler) / plan.gradient_accumulation_steps))
    return DataPlan(corpus, sampler, maker, total_steps)
