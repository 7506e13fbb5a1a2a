"""Corpus -> tokenized, chunked, cached training sequences (+ a held-out split and the token counts).

Pipeline (all through ``datasets.map`` into Arrow files, so memory does not grow with the corpus):

1. survey (:func:`kd_plugin.data.cleaning.survey_corpus`): clean every document (normalise, drop empty ones),
   count, and hash its clean text, writing a few bytes per document and no text;
2. split documents into train / held-out BEFORE chunking, by that stable hash of each document's text (not by the
   run's seed): no document contributes to both, identical documents land on the same side, and every run with
   the same ``held_out_fraction`` (teacher preparation and distillation, any seed) holds out the same documents;
3. clean again and tokenize with the fast tokenizer, batched, without special tokens (:func:`encode_documents`:
   special-token text in a document, a literal ``[MASK]`` or ``[SEP]``, is split into ordinary tokens, never
   read as the special token); cut every document into consecutive chunks of at most ``max_seq_length - 2``
   tokens (long documents are split, never dropped or truncated) and wrap each chunk as ``[CLS] chunk [SEP]``
   (``bos``/``eos`` for tokenizers without cls/sep, e.g. RoBERTa-style);
4. count token ids over the train split once (for frequency-smoothed masking, ``counts ** -0.7``).

On disk, the corpus's text exists once (its Arrow conversion, read in place) and the chunks once (written by
step 3 where the cache keeps them): at the peak of a build, about the text plus its tokens.

Cache layout, one directory per set of arguments that change the result::

    <cache_dir>/tokenized-<key>/          key = sha256 of (corpus fingerprint, tokenizer class + name_or_path +
        train.arrow                            vocab size + content hash, max_seq_length, held_out_fraction,
        held_out.arrow                         format version), first 16 hex digits
        token_counts.npy                  int64 (vocab_size,)
        meta.json                         the key fields, the stats and each split's Arrow files (one per
                                          tokenizing process); written last, marks the cache complete

The Arrow files are opened memory-mapped (:func:`open_cache`). A build happens in a ``.tokenized-<key>.tmp-*``
sibling renamed into place at the end, so an interrupted build never leaves a half cache. In a multi-process
job let one rank build first (the others wait for the cache, see ``kd_plugin.training.batches``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch
from datasets import Dataset, Features, Sequence, Value, concatenate_datasets

from kd_plugin.data.cleaning import clean_documents, survey_corpus
from kd_plugin.errors import ConfigError

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 4  # 2: held-out split by document hash, independent of the seed; 3: special-token text
# in documents is split into ordinary tokens (encode_documents); 4: the chunks' Arrow files as tokenizing wrote them
SPLITS = ("train", "held_out")
_META = "meta.json"
_COUNTS = "token_counts.npy"

# one row per chunk (a training sequence)
CHUNK_FEATURES = Features(
    {
        "input_ids": Sequence(Value("int32")),  # (length,) [CLS] ... [SEP]
        "length": Value("int32"),  # len(input_ids) <= max_seq_length
        "doc_id": Value("string"),  # the document the chunk comes from
        "chunk_index": Value("int32"),  # position of the chunk in its document, 0-based
    }
)


@dataclass(frozen=True)
class TokenizedCorpus:
    """Train and held-out sequences (Arrow-backed, memory-mapped) with token counts and build statistics."""

    train: Dataset  # rows: input_ids (length,), length, doc_id, chunk_index
    held_out: Dataset  # same columns; documents disjoint from train
    token_counts: torch.Tensor  # (vocab_size,) int64, over every train input_id (special tokens included)
    stats: dict[str, int]
    cache_path: Path
    from_cache: bool  # True when this call reused an existing cache (no tokenization ran)

    def lengths(self, split: str = "train") -> np.ndarray:
        """Sequence lengths of a split as an int64 array (n_chunks,), for the length-grouped sampler."""
        ds = self.train if split == "train" else self.held_out
        return ds.data.column("length").to_numpy().astype(np.int64)


def special_token_ids(tokenizer) -> tuple[int, int]:
    """(start, end) ids that wrap each chunk: cls/sep (BERT), else bos/eos (RoBERTa, GPT-2, Llama); a tokenizer
    with an end-of-text token but no bos (Qwen2) starts chunks with its end-of-text token, the document
    separator it was trained with."""
    start = next((i for i in (tokenizer.cls_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id)
                  if i is not None), None)
    end = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if start is None or end is None:
        raise ConfigError(
            "data.tokenizer",
            f"{type(tokenizer).__name__} has neither cls/sep nor bos/eos tokens to wrap sequences",
            "a tokenizer with cls_token and sep_token (BERT) or an eos_token (RoBERTa, GPT-2, Llama, Qwen2)",
        )
    return int(start), int(end)


def tokenizer_fingerprint(tokenizer) -> dict[str, object]:
    """What identifies a tokenizer for caching: class, name_or_path, vocab size and a hash of its definition."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        definition = json.loads(backend.to_str())
        definition.pop("truncation", None)  # call-time settings, not part of the vocabulary
        definition.pop("padding", None)
    else:
        definition = tokenizer.get_vocab()
    content = json.dumps(definition, sort_keys=True).encode()
    return {
        "class": type(tokenizer).__name__,
        "name_or_path": str(getattr(tokenizer, "name_or_path", "")),
        "vocab_size": len(tokenizer),
        "content_sha256": hashlib.sha256(content).hexdigest()[:16],
    }


def encode_documents(tokenizer, texts: list[str]) -> list[list[int]]:
    """The token ids of each document's text, as training sequences get them: no special tokens added, and
    special-token text in the documents (a literal ``[MASK]``, ``[SEP]``, ``[PAD]``, ``<|endoftext|>``) split into
    ordinary tokens (``split_special_tokens``): text never becomes a mask, separator or padding token. Also what
    :mod:`kd_plugin.data.text_checks` measures a corpus sample with."""
    return tokenizer(
        texts,
        add_special_tokens=False,
        split_special_tokens=True,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,  # no "sequence longer than model max length" warning: documents are split into chunks
    )["input_ids"]


def _tokenize_and_chunk(
    batch: dict[str, list], tokenizer, max_seq_length: int, start_id: int, end_id: int
) -> dict[str, list]:
    """Batched map: documents in, chunks out (a document yields ceil(n_tokens / (max_seq_length - 2)) rows).
    The documents' text is cleaned here (:func:`kd_plugin.data.cleaning.clean_documents`), as it was surveyed."""
    encoded = encode_documents(tokenizer, clean_documents(batch["text"]))
    body = max_seq_length - 2
    out: dict[str, list] = {"input_ids": [], "length": [], "doc_id": [], "chunk_index": []}
    for doc_id, ids in zip(batch["doc_id"], encoded, strict=True):
        for chunk_index, begin in enumerate(range(0, len(ids), body)):
            input_ids = [start_id, *ids[begin : begin + body], end_id]  # (<= max_seq_length,)
            out["input_ids"].append(input_ids)
            out["length"].append(len(input_ids))
            out["doc_id"].append(str(doc_id))
            out["chunk_index"].append(chunk_index)
    return out


def document_hash_fraction(text: str) -> float:
    """A stable number in [0, 1) for a document: the first 8 bytes of the SHA-256 of its UTF-8 text / 2**64."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2.0**64


def _split_documents(fractions: np.ndarray, held_out_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) document indices, each sorted: held out iff the document's hash fraction (``fractions``,
    (n_docs,)) is below ``held_out_fraction``. The split depends on each document's text only (never on the seed
    or the corpus order), so a smaller fraction's held-out set is contained in a larger one's. Tiny corpora: when
    the rule gives no held-out (or no train) document while fraction > 0, the document with the smallest
    (largest) hash moves over, so both splits are non-empty whenever there are two documents."""
    held = fractions < held_out_fraction  # (n_docs,)
    if held_out_fraction > 0 and len(fractions) >= 2:
        if not held.any():
            held[int(np.argmin(fractions))] = True
        if held.all():
            held[int(np.argmax(fractions))] = False
    return np.flatnonzero(~held), np.flatnonzero(held)


def _count_tokens(dataset: Dataset, vocab_size: int) -> np.ndarray:
    """bincount of every input_id, one Arrow record batch at a time."""
    counts = np.zeros(vocab_size, dtype=np.int64)  # (vocab_size,)
    for chunk in dataset.data.column("input_ids").chunks:
        ids = chunk.flatten().to_numpy(zero_copy_only=False)
        if len(ids):
            if int(ids.max()) >= vocab_size:
                raise ConfigError("data.tokenizer", f"token id {int(ids.max())} >= vocab size {vocab_size}")
            counts += np.bincount(ids, minlength=vocab_size)
    return counts


def _chunk_stats(chunks: Dataset, n_docs: int) -> dict[str, int]:
    if len(chunks) == 0:
        return {"docs": n_docs, "docs_without_tokens": n_docs, "long_docs_split": 0, "chunks": 0, "tokens": 0}
    chunk_index = chunks.data.column("chunk_index")
    first_chunks = int(pc.sum(pc.equal(chunk_index, 0)).as_py() or 0)
    return {
        "docs": n_docs,
        "docs_without_tokens": n_docs - first_chunks,
        "long_docs_split": int(pc.sum(pc.equal(chunk_index, 1)).as_py() or 0),
        "chunks": len(chunks),
        "tokens": int(pc.sum(chunks.data.column("length")).as_py() or 0),
    }


# Bytes on disk at the peak of tokenizing, per byte of the corpus's Arrow text: the tokenized chunks, written once
# into the cache (0.93 for wiki_leads at 128 tokens: 4.2 MB of chunks for 4.5 MB of text; int32 ids, so text of
# fewer bytes per token, e.g. CJK, needs more), rounded up; the survey of the documents adds a few bytes each.
TOKENIZE_ROOM_PER_TEXT_BYTE = 1.5


def check_room_to_tokenize(documents: Dataset, cache_root: Path) -> None:
    """Refuse, before writing anything, a corpus whose tokenization would fill the disk of ``cache_root``.

    The corpus is read from one Arrow copy (its conversion under ``data.cache_dir``) and tokenized once into
    the cache, with no other copy of the text; ``datasets`` streaming (a corpus larger than the disk, read as it
    is trained on) is not supported.
    """
    table = documents.data  # the Arrow table behind the dataset (memory-mapped: nothing is read)
    text_bytes = table.nbytes * len(documents) // max(table.num_rows, 1)  # a selection (max_documents): its share
    needed = int(text_bytes * TOKENIZE_ROOM_PER_TEXT_BYTE)
    free = shutil.disk_usage(cache_root).free
    if free < needed:
        raise ConfigError(
            "data.cache_dir", f"tokenizing this corpus ({text_bytes / 2**30:.2f} GiB of text) writes about "
            f"{needed / 2**30:.2f} GiB under {cache_root}, which has {free / 2**30:.2f} GiB free",
            f"a data.cache_dir on a disk with at least {needed / 2**30:.1f} GiB free (streaming a corpus larger "
            "than the disk is not supported: it is tokenized once into the cache), or data.max_documents")


# ``data.num_proc=auto``: below this many documents the worker processes cost more to start than they save.
AUTO_PARALLEL_DOCUMENTS = 50_000


def resolve_num_proc(setting: int | str, n_documents: int) -> int:
    """Processes that clean and tokenize a corpus of ``n_documents``: ``setting``, or for ``auto`` this process's
    usable cores (its CPU affinity, not the machine's count) for large corpora and 1 for small ones."""
    if setting != "auto":
        return int(setting)
    if n_documents < AUTO_PARALLEL_DOCUMENTS:
        return 1
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _validate(max_seq_length: int, held_out_fraction: float, num_proc: int) -> None:
    if not isinstance(max_seq_length, int) or max_seq_length < 3:
        raise ConfigError(
            "data.max_seq_length", f"{max_seq_length!r} leaves no room for text", "an integer >= 3"
        )
    if not 0.0 <= held_out_fraction < 1.0:
        raise ConfigError(
            "data.held_out_fraction", f"{held_out_fraction!r} is out of range", "0 <= fraction < 1"
        )
    if num_proc < 1:
        raise ConfigError("data.num_proc", f"{num_proc!r}", "an integer >= 1")


def _no_chunks() -> Dataset:
    return Dataset.from_dict({name: [] for name in CHUNK_FEATURES}, features=CHUNK_FEATURES)


def _open_chunks(path: Path, files: list[str]) -> Dataset:
    """A split's Arrow files (one per tokenizing process), memory-mapped where tokenizing wrote them."""
    if not files:
        return _no_chunks()
    parts = [Dataset.from_file(str(path / name)) for name in files]
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


def open_cache(path: Path, from_cache: bool = True) -> TokenizedCorpus:
    """A finished cache directory (``<cache_dir>/tokenized-<key>``, as a run's ``info.data.cache`` names it)."""
    meta = json.loads((path / _META).read_text())
    return TokenizedCorpus(
        train=_open_chunks(path, meta["files"]["train"]),
        held_out=_open_chunks(path, meta["files"]["held_out"]),
        token_counts=torch.from_numpy(np.load(path / _COUNTS)).long(),
        stats=meta["stats"],
        cache_path=path,
        from_cache=from_cache,
    )


def build_tokenized_corpus(
    dataset: Dataset,
    tokenizer,
    max_seq_length: int,
    cache_dir: str | os.PathLike,
    held_out_fraction: float = 0.01,
    num_proc: int = 1,
) -> TokenizedCorpus:
    """Tokenize ``dataset`` (column ``text``, optional ``doc_id``) into cached train / held-out sequences.

    A second call with the same corpus, tokenizer, ``max_seq_length`` and ``held_out_fraction`` reopens the cache without tokenizing (``from_cache=True``). ``num_proc`` parallelises the maps and is not
    part of the key (the result does not depend on it).
    """
    _validate(max_seq_length, held_out_fraction, num_proc)
    start_id, end_id = special_token_ids(tokenizer)
    key_fields = {
        "format_version": CACHE_FORMAT_VERSION,
        "corpus_fingerprint": dataset._fingerprint,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "max_seq_length": max_seq_length,
        "held_out_fraction": held_out_fraction,
    }
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:16]
    cache_root = Path(cache_dir)
    final = cache_root / f"tokenized-{key}"
    if (final / _META).exists():
        logger.info("reusing tokenized corpus %s", final)
        return open_cache(final, from_cache=True)

    cache_root.mkdir(parents=True, exist_ok=True)
    check_room_to_tokenize(dataset, cache_root)
    logger.info("tokenizing %d documents into %s (%d process(es)): cleaning, then each split", len(dataset), final,
                num_proc)
    tmp = cache_root / f".tokenized-{key}.tmp-{uuid.uuid4().hex[:8]}"
    work = tmp / "work"  # intermediate Arrow files, deleted before the rename
    work.mkdir(parents=True)
    parallel = num_proc if num_proc > 1 else None
    try:
        facts, cleaning = survey_corpus(
            dataset,
            document_hash_fraction,
            cache_file_name=str(work / "survey.arrow"),
            num_proc=num_proc,
            new_fingerprint=f"{key}-survey",
        )
        if cleaning.n_docs == 0:
            raise ConfigError(
                "data.corpus", f"no non-empty document among {cleaning.n_docs_in}", "a corpus with text"
            )
        kept = np.flatnonzero(facts.data.column("kept").to_numpy(zero_copy_only=False))  # (n_docs,) input rows
        fractions = facts.data.column("split_key").to_numpy()[kept]  # (n_docs,)
        doc_indices = dict(zip(SPLITS, (kept[i] for i in _split_documents(fractions, held_out_fraction)),
                               strict=True))
        documents = dataset.select_columns(["text", *(["doc_id"] if "doc_id" in dataset.column_names else [])])
        if "doc_id" in facts.column_names:  # ids from row positions, from the survey (no copy of the text)
            documents = concatenate_datasets([documents, facts.select_columns(["doc_id"])], axis=1)

        stats: dict[str, int] = {
            "docs_in": cleaning.n_docs_in,
            "docs": cleaning.n_docs,
            "empty_skipped": cleaning.n_empty_skipped,
            "replaced_chars": cleaning.n_replaced_chars,
            "control_chars": cleaning.n_control_chars,
            "max_seq_length": max_seq_length,
        }
        files: dict[str, list[str]] = {}
        for split in SPLITS:
            indices = doc_indices[split]
            files[split] = []
            if len(indices) == 0:
                chunks = _no_chunks()
            else:
                docs = documents.select(indices, new_fingerprint=f"{key}-{split}-docs")
                # written where the cache keeps them (no save_to_disk copy): one Arrow file per process
                chunks = docs.map(
                    _tokenize_and_chunk,
                    batched=True,
                    remove_columns=docs.column_names,
                    features=CHUNK_FEATURES,
                    fn_kwargs={
                        "tokenizer": tokenizer,
                        "max_seq_length": max_seq_length,
                        "start_id": start_id,
                        "end_id": end_id,
                    },
                    num_proc=parallel,
                    cache_file_name=str(tmp / f"{split}.arrow"),
                    new_fingerprint=f"{key}-{split}",
                    desc=f"tokenizing {split}",
                )
                files[split] = [str(Path(f["filename"]).relative_to(tmp)) for f in chunks.cache_files]
            for name, value in _chunk_stats(chunks, len(indices)).items():
                stats[f"{split}_{name}"] = value
            if split == "train":
                counts = _count_tokens(chunks, len(tokenizer))  # (vocab_size,)

        for name in ("docs_without_tokens", "long_docs_split", "chunks", "tokens"):
            stats[name] = stats[f"train_{name}"] + stats[f"held_out_{name}"]
        np.save(tmp / _COUNTS, counts)
        del facts, documents, chunks
        shutil.rmtree(work)
        (tmp / _META).write_text(json.dumps({"key": key, "key_fields": key_fields, "stats": stats, "files": files},
                                            indent=2))
        try:
            tmp.rename(final)
        except OSError:  # another process finished the same cache first
            if not (final / _META).exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("tokenized corpus written to %s: %s", final, stats)
    return open_cache(final, from_cache=False)
