"""Corpus source checks: bad input gets one ConfigError line naming the key, the file and the line, before compute."""

from __future__ import annotations

import json
import os
import random

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402

from kd_plugin.data import corpus as corpus_module  # noqa: E402
from kd_plugin.data import (
    corpus_sources,  # noqa: E402
    load_corpus,  # noqa: E402
)
from kd_plugin.data.source_checks import MAX_SUSPECT_SHARE, check_corpus_source  # noqa: E402
from kd_plugin.errors import ConfigError  # noqa: E402

LATIN_1_TEXT = "Le café était très bon.\nDéjà vu, à la crème brûlée.\nplain ascii line\n"


def refused(key: str, *args, **kwargs) -> str:
    """Run the check, assert it raises a ConfigError with ``key``, return the one-line message."""
    with pytest.raises(ConfigError) as info:
        check_corpus_source(*args, **kwargs)
    message = str(info.value)
    assert info.value.key == key, message
    assert message.startswith(f"{key}: ") and "\n" not in message
    return message


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture
def no_dataset_building(monkeypatch):
    """The check must never build a Dataset: any load_dataset call fails the test."""

    def forbidden(*args, **kwargs):
        raise AssertionError("check_corpus_source called datasets.load_dataset")

    monkeypatch.setattr(datasets, "load_dataset", forbidden)


# ------------------------------------------------------------------------------------------------ good input


def test_good_sources_of_every_kind_pass_without_building_a_dataset(tmp_path, no_dataset_building):
    txt = tmp_path / "lines.txt"
    txt.write_text("first document\n\nsecond document\r\n", encoding="utf-8")
    check_corpus_source(str(txt))
    check_corpus_source(str(txt), sample_by="paragraph")
    check_corpus_source(
        write_jsonl(tmp_path / "docs.jsonl", [{"body": "alpha", "n": 1}, {"body": None}]), "body"
    )
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + b'{"text": "with a byte order mark"}\n\n')
    check_corpus_source(str(bom))
    array = tmp_path / "array.json"
    array.write_text(json.dumps([{"text": "one"}, {"text": "two"}], indent=1), encoding="utf-8")
    check_corpus_source(str(array))
    strings = tmp_path / "strings.json"
    strings.write_text(json.dumps(["one", "two"]), encoding="utf-8")
    check_corpus_source(str(strings))
    parquet = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"content": ["one", None, "three"], "id": [1, 2, 3]}), parquet)
    check_corpus_source(str(parquet), "content")
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    write_jsonl(folder / "a.jsonl", [{"text": "a"}])
    (folder / "sub" / "empty.jsonl").write_text("")  # an empty file next to others: the loader skips it
    check_corpus_source(str(folder))
    check_corpus_source("wiki_leads")  # packaged: only the package is looked for
    check_corpus_source("someone/some-hub-dataset")  # a hub id: nothing to check offline


def test_good_files_also_load(tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"body": "alpha"}, {"body": "beta"}])
    check_corpus_source(path, "body")
    assert load_corpus(path, "body", cache_dir=str(tmp_path / "hf"))["text"] == ["alpha", "beta"]


# ------------------------------------------------------------------------------------------------ paths


def test_missing_path_names_it_and_the_packaged_corpora(tmp_path):
    path = str(tmp_path / "missing.txt")
    message = refused("data.corpus", path)
    assert f"no such file or directory {path!r}" in message
    assert "wiki_leads" in message and "an existing path" in message


def test_directory_without_corpus_files_says_what_a_directory_is(tmp_path):
    (tmp_path / "notes.md").write_text("not a corpus file")
    message = refused("data.corpus", str(tmp_path))
    assert (
        str(tmp_path) in message and "holds no corpus file" in message and "searched recursively" in message
    )
    assert ".txt" in message and ".parquet" in message


def test_neither_file_nor_directory(tmp_path):
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    message = refused("data.corpus", str(fifo))
    assert str(fifo) in message and "neither a regular file nor a directory" in message


def test_unsupported_extension_lists_the_supported_ones(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("text\nhello\n")
    message = refused("data.corpus", str(path))
    assert "unsupported file type '.csv'" in message and str(path) in message
    assert "allowed: .txt, .text, .jsonl, .json, .parquet" in message


# ------------------------------------------------------------------------------------------------ no document


@pytest.mark.parametrize("sample_by", ["line", "paragraph"])
def test_empty_and_blank_txt(tmp_path, sample_by):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    message = refused("data.corpus", str(empty), sample_by=sample_by)
    assert f"{str(empty)!r} is empty (0 bytes)" in message
    blank = tmp_path / "blank.txt"
    blank.write_text("\n   \n\t\n\n")
    message = refused("data.corpus", str(blank), sample_by=sample_by)
    assert f"{str(blank)!r} has no non-empty document: every line is blank" in message


def test_jsonl_without_non_empty_text(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert f"{str(empty)!r} is empty (0 bytes)" in refused("data.corpus", str(empty))
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n\n  \n")
    assert "no record has a non-empty 'text'" in refused("data.corpus", str(blank))
    hollow = write_jsonl(tmp_path / "hollow.jsonl", [{"text": ""}, {"text": "   "}, {"text": None}])
    message = refused("data.corpus", hollow)
    assert f"{hollow!r} has no non-empty document: no record has a non-empty 'text'" in message


def test_directory_of_blank_files(tmp_path):
    (tmp_path / "a.txt").write_text("\n\n")
    (tmp_path / "b.txt").write_text("")
    message = refused("data.corpus", str(tmp_path))
    assert f"no non-empty document in the 2 corpus files under {str(tmp_path)!r}" in message


# ------------------------------------------------------------------------------------------------ broken JSON


def test_jsonl_line_that_is_not_json_names_the_first_bad_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": "b"\n{"text": oops}\n', encoding="utf-8")
    message = refused("data.corpus", str(path))
    assert f"{str(path)!r}, line 3 is not valid JSON" in message
    assert """'{"text": "b"'""" in message  # an excerpt of the line
    assert "line 4" not in message


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "lists.jsonl"
    path.write_text('{"text": "a"}\n[1, 2, 3]\n', encoding="utf-8")
    message = refused("data.corpus", str(path))
    assert f"{str(path)!r}, line 2 is a JSON array, not an object: '[1, 2, 3]'" in message


def test_broken_json_array_names_the_line(tmp_path):
    path = tmp_path / "array.json"
    path.write_text('[\n{"text": "a"},\n{"text": "b"]\n', encoding="utf-8")
    assert f"{str(path)!r}, line 3: not valid JSON" in refused("data.corpus", str(path))


# ------------------------------------------------------------------------------------------------ text_column


def test_jsonl_without_the_text_column_lists_the_fields_found(tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"body": "a", "label": "x"}, {"body": "b"}])
    message = refused("data.text_column", path)
    assert f"no field 'text' in any of the 2 records of {path!r}" in message
    assert "allowed: a field of its first record: body, label" in message
    check_corpus_source(path, "body")


def test_jsonl_text_column_that_is_not_text_names_the_line(tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"text": "a"}, {"text": "b"}, {"text": 7}])
    message = refused("data.text_column", path)
    assert f"{path!r}, line 3: field 'text' is a JSON number, not text" in message


def test_parquet_without_the_text_column_lists_its_columns(tmp_path):
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"body": ["a"], "score": [1.0]}), path)
    message = refused("data.text_column", str(path), "content")
    assert (
        f"no column 'content' in {str(path)!r}" in message and "allowed: its columns: body, score" in message
    )
    assert "holds double, not text" in refused("data.text_column", str(path), "score")


def test_unreadable_parquet(tmp_path):
    path = tmp_path / "junk.parquet"
    path.write_bytes(b"this is not parquet")
    message = refused("data.corpus", str(path))
    assert f"{str(path)!r} is not a readable Parquet file" in message


def test_text_column_does_not_apply_to_txt_files_or_packaged_corpora(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("a document\n")
    assert "a .txt corpus has no columns" in refused("data.text_column", str(path), "body")
    assert "packaged corpus 'wiki_leads'" in refused("data.text_column", "wiki_leads", "body")


def test_hub_ids_honour_text_column_when_loaded(monkeypatch):
    # offline nothing is checked; once loaded, a missing column names data.text_column and lists the columns
    check_corpus_source("someone/dataset", "body")
    hub = datasets.Dataset.from_dict({"content": ["a"], "meta": [1]})
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: hub)
    with pytest.raises(ConfigError) as info:
        load_corpus("someone/dataset", "body")
    assert info.value.key == "data.text_column" and "content, meta" in str(info.value)
    assert load_corpus("someone/dataset", "content")["text"] == ["a"]


# ------------------------------------------------------------------------------------------------ encodings


def test_latin_1_file_is_refused_as_utf_8_and_loads_as_latin_1(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(LATIN_1_TEXT.encode("latin-1"))
    n_accented = sum(ord(c) > 127 for c in LATIN_1_TEXT)  # each a lone high byte: one undecodable byte each
    message = refused("data.corpus", str(path))
    assert f"{str(path)!r} does not read as utf-8 text" in message
    assert (
        f"{n_accented} of {len(LATIN_1_TEXT)} characters ({100 * n_accented / len(LATIN_1_TEXT):.3g} %)"
        in message
    )
    assert f"{n_accented} undecodable bytes" in message
    assert "first on line 1: 'Le caf\ufffd" in message
    assert "set data.encoding=latin-1 if the file is Latin-1" in message

    check_corpus_source(str(path), encoding="latin-1")
    documents = load_corpus(str(path), encoding="latin-1", cache_dir=str(tmp_path / "hf"))
    with open(path, encoding="latin-1") as f:
        expected = f.read().splitlines()
    assert documents["text"] == expected and "crème brûlée" in documents["text"][1]


def test_latin_1_jsonl_loads_with_latin_1(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(
        "".join(
            json.dumps({"text": line}, ensure_ascii=False) + "\n" for line in LATIN_1_TEXT.splitlines()
        ).encode("latin-1")
    )
    assert "set data.encoding=latin-1" in refused("data.corpus", str(path))
    check_corpus_source(str(path), encoding="latin-1")
    documents = load_corpus(str(path), encoding="latin-1", cache_dir=str(tmp_path / "hf"))
    with open(path, encoding="latin-1") as f:
        expected = [json.loads(line)["text"] for line in f]
    assert documents["text"] == expected == LATIN_1_TEXT.splitlines()


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_random_bytes_are_refused(tmp_path, encoding):
    path = tmp_path / "noise.txt"
    path.write_bytes(random.Random(0).randbytes(20_000))
    message = refused("data.corpus", str(path), encoding=encoding)
    assert "are undecodable or control characters" in message and "first on line 1:" in message
    share = float(message.split(" characters (")[1].split(" %)")[0])
    assert share > 20  # about half undecodable as UTF-8, a quarter C0/C1 controls as Latin-1


def test_a_large_garbage_file_is_not_read_to_the_end(tmp_path):
    path = tmp_path / "noise.txt"
    path.write_bytes(random.Random(1).randbytes(6 << 20))  # several 1 M-character blocks
    message = refused("data.corpus", str(path), encoding="latin-1")
    assert "characters read (stopped there: the share can no longer fall under the limit)" in message


@pytest.mark.parametrize(("bad", "kind"), [(b"\x07", "control characters"), (b"\xff", "undecodable bytes")])
def test_threshold_boundary(tmp_path, bad, kind):
    """More than MAX_SUSPECT_SHARE (0.1 %) of the characters refuses; exactly 0.1 % passes."""
    assert MAX_SUSPECT_SHARE == 0.001

    def write(n_bad: int) -> str:
        """10 lines of 999 characters + a line break (10,000 characters), ``n_bad`` of them on line 2."""
        path = tmp_path / f"boundary-{n_bad}.txt"
        line = b"a" * 999 + b"\n"
        path.write_bytes(line + bad * n_bad + line[n_bad:] + line * 8)
        return str(path)

    check_corpus_source(write(10))  # 10 of 10,000: exactly 0.1 %
    message = refused("data.corpus", write(11))
    assert "11 of 10,000 characters (0.11 %)" in message and f"11 {kind}" in message
    assert "first on line 2" in message


def test_a_few_stray_bytes_in_a_txt_file_pass_but_not_in_utf8_json(tmp_path):
    text = tmp_path / "stray.txt"
    text.write_bytes(b"x" * 5000 + b"\n" + b"caf\xe9\n")
    check_corpus_source(str(text))  # 1 in 5,006: replaced and counted by cleaning, as before
    assert load_corpus(str(text), cache_dir=str(tmp_path / "hf"))["text"][1] == "caf\ufffd"
    jsonl = tmp_path / "stray.jsonl"
    jsonl.write_bytes(b'{"text": "' + b"x" * 5000 + b'"}\n{"text": "caf\xe9"}\n')
    message = refused("data.corpus", str(jsonl))
    assert f"{str(jsonl)!r} is not valid UTF-8: 1 undecodable byte" in message
    assert "first on line 2:" in message and "data.encoding=latin-1" in message
    check_corpus_source(str(jsonl), encoding="latin-1")


def test_line_numbers_follow_crlf_line_ends(tmp_path):
    path = tmp_path / "crlf.txt"
    path.write_bytes(b"one\r\ntwo\r\n\x00\x01\x02\x03\r\nfour\r\n")
    assert "first on line 3: '\\x00\\x01\\x02\\x03'" in refused("data.corpus", str(path))


def test_unknown_or_misplaced_encoding(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("a document\n")
    assert "'no-such-codec' is not a text encoding" in refused(
        "data.encoding", str(path), encoding="no-such-codec"
    )
    assert "'base64' is not a text encoding" in refused("data.encoding", str(path), encoding="base64")
    check_corpus_source(str(path), encoding="UTF8")  # another spelling of the default
    parquet = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"text": ["a"]}), parquet)
    assert "Parquet stores text as UTF-8" in refused("data.encoding", str(parquet), encoding="latin-1")
    assert "packaged corpus 'wiki_leads'" in refused("data.encoding", "wiki_leads", encoding="latin-1")
    assert "hub dataset" in refused("data.encoding", "someone/dataset", encoding="latin-1")


def test_bad_sample_by(tmp_path):
    assert "unknown value 'document'" in refused("data.sample_by", "wiki_leads", sample_by="document")


def test_packaged_corpus_without_its_package(monkeypatch):
    real = corpus_sources._package_dir
    monkeypatch.setattr(corpus_sources, "_package_dir", lambda m: None if m == "gensim" else real(m))
    assert "pip install --no-deps gensim" in refused("data.corpus", "enwiki_sample")


# ------------------------------------------------------------------------------------------------ load_corpus


def test_load_corpus_default_encoding_keeps_the_old_fingerprint(tmp_path):
    """UTF-8 (however spelled) passes load_dataset what it always did: same fingerprint, same tokenized cache."""
    path = tmp_path / "lines.txt"
    path.write_text("one\ntwo\n", encoding="utf-8")
    cache = str(tmp_path / "hf")
    before = datasets.load_dataset(
        "text",
        data_files=[str(path)],
        split="train",
        cache_dir=cache,
        sample_by="line",
        encoding_errors="replace",
    )
    old = corpus_module._to_corpus_columns(before, "text", str(path))  # what load_corpus returned before
    for encoding in ("utf-8", "UTF8", "utf_8"):
        loaded = load_corpus(str(path), cache_dir=cache, encoding=encoding)
        assert loaded["text"] == ["one", "two"] and loaded._fingerprint == old._fingerprint
    assert load_corpus(str(path), cache_dir=cache, encoding="latin-1")["text"] == ["one", "two"]


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("empty.txt", b"", "is empty (0 bytes)"),
        ("empty.jsonl", b"", "is empty (0 bytes)"),
        ("broken.jsonl", b'{"text": "a"}\n{"text": "b"\n', "line 2 is not valid JSON"),
        ("lists.jsonl", b"[1]\n[2]\n", "line 2: more JSON after the array that starts the file"),
        ("strings.jsonl", b'"a"\n"b"\n', "line 1 is a JSON string, not an object"),
    ],
)
def test_load_corpus_failures_name_the_file_not_a_datasets_traceback(tmp_path, name, data, expected):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ConfigError) as info:
        load_corpus(str(path), cache_dir=str(tmp_path / "hf"))
    assert info.value.key == "data.corpus"
    assert str(path) in str(info.value) and expected in str(info.value)


def test_load_corpus_refuses_a_text_column_that_is_not_text(tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"text": 1}, {"text": 2}])
    with pytest.raises(ConfigError) as info:
        load_corpus(path, cache_dir=str(tmp_path / "hf"))
    assert info.value.key == "data.text_column" and "holds Value('int64'), not text" in str(info.value)


def test_load_corpus_refuses_an_encoding_where_nothing_is_decoded(tmp_path):
    parquet = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"text": ["a"]}), parquet)
    for source in (str(parquet), "wiki_leads"):
        with pytest.raises(ConfigError) as info:
            load_corpus(source, encoding="latin-1", cache_dir=str(tmp_path / "hf"))
        assert info.value.key == "data.encoding"


def test_a_source_that_passed_is_not_read_again_until_its_files_change(tmp_path, monkeypatch):
    """data.cache_dir remembers a passed check by the files' fingerprint; a changed file is read (and refused)."""
    from kd_plugin.data import source_checks

    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "one"}\n{"text": "two"}\n', encoding="utf-8")
    cache = tmp_path / "cache"
    reads = []
    real = source_checks._check_json_file
    monkeypatch.setattr(source_checks, "_check_json_file", lambda *a: (reads.append(a[0]), real(*a))[1])
    check_corpus_source(str(path), remember_in=cache)
    check_corpus_source(str(path), remember_in=cache)
    assert len(reads) == 1 and len(list((cache / "source-checks").iterdir())) == 1
    with pytest.raises(ConfigError, match="body"):  # other arguments: another fingerprint, read and refused
        check_corpus_source(str(path), text_column="body", remember_in=cache)
    assert len(reads) == 2
    path.write_text('{"text": "one"}\nnot json\n', encoding="utf-8")  # a change of size and time
    with pytest.raises(ConfigError, match="line 2"):
        check_corpus_source(str(path), remember_in=cache)
    assert len(reads) == 3 and len(list((cache / "source-checks").iterdir())) == 1  # refusals are not kept
    path.write_text('{"text": "one"}\n', encoding="utf-8")
    check_corpus_source(str(path))  # without remember_in: always read, nothing kept
    check_corpus_source(str(path))
    assert len(reads) == 5 and len(list((cache / "source-checks").iterdir())) == 1
