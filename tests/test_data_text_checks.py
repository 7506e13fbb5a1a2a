"""Corpora that tokenize to nothing usable are refused before compute (kd_plugin/data/text_checks.py).

The measurement on small texts with hand-counted tokens; the limits at their edges; the sample read the way the
loader reads each kind of file; special-token text split into ordinary tokens in the training sequences; and
through the real command line with the real SecantusDB: each broken corpus refused with one line, exit status 2
and no run record, ``data.text_checks=warn`` running with the warning, the default corpus measured and passed.
"""

from __future__ import annotations

import random
import string
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pymongo
import pytest
from datasets import Dataset
from transformers import AutoTokenizer

from kd_plugin.data.cleaning import normalize_text
from kd_plugin.data.corpus import load_corpus
from kd_plugin.data.source_checks import check_corpus_source
from kd_plugin.data.text_checks import (
    MAX_LITERAL_SPECIAL_SHARE,
    MAX_MISDECODED_SHARE,
    MAX_TOKENS_PER_CHAR,
    MAX_UNKNOWN_SHARE,
    MIN_TOKENS_PER_CHAR,
    SAMPLE_CHARS,
    SAMPLE_DOCUMENTS,
    TextMeasurement,
    measure_text,
    sample_corpus,
    text_problems,
)
from kd_plugin.data.tokenized import build_tokenized_corpus, open_cache
from kd_plugin.errors import ConfigError
from kd_plugin.teacher_catalogue import resolve_teacher
from tests.distill_runner import PROJECT, check, run_distill, run_env

TOKENIZER_DIR = resolve_teacher("bert-tiny").path  # the uncased WordPiece vocabulary of every packaged teacher


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


# ---------------------------------------------------------------------------------------------------------------
# the measurement, on texts whose tokens are counted by hand
# ---------------------------------------------------------------------------------------------------------------


def test_tokens_unknown_tokens_and_characters_are_counted(tokenizer):
    # "hello world" -> hello, world; 150 letters in one word -> one [UNK] (WordPiece gives up over 100 characters);
    # "hi 😀" -> hi, [UNK]
    measured = measure_text(["hello world", "x" * 150, "hi \U0001f600"], tokenizer)
    assert (measured.documents, measured.characters, measured.tokens, measured.unknown_tokens) == (3, 165, 5, 2)
    assert measured.unknown_share == 2 / 5 and measured.tokens_per_char == 5 / 165


def test_special_token_text_is_counted_and_tokenized_as_ordinary_text(tokenizer):
    measured = measure_text(["Hello [MASK] world [SEP] [SEP]"], tokenizer)
    assert measured.literal_special == {"[MASK]": 1, "[SEP]": 2}
    assert measured.special_from_text == 0  # hello [ mask ] world [ sep ] [ sep ]: no special id
    assert measured.tokens == 11 and measured.literal_special_share == 3 / 11


def test_mis_decoded_words_are_counted(tokenizer):
    # Latin-1 "Québec" read as cp1251, the UTF-8 one read as Latin-1, then a correct Québec and Moscow;
    # words (\w+ runs): Quйbec, QuÃ, bec, Québec, Moscow
    measured = measure_text(["Quйbec QuÃ©bec Québec Moscow"], tokenizer)
    assert (measured.words, measured.misdecoded_words) == (5, 2)
    assert measured.misdecoded_examples == ("Quйbec", "QuÃ©bec")


def test_a_giant_line_is_one_unknown_token_in_linear_time(tokenizer):
    line = "".join(random.Random(0).choice(string.ascii_letters) for _ in range(SAMPLE_CHARS))
    measured = measure_text([line], tokenizer)
    assert (measured.tokens, measured.unknown_tokens, measured.misdecoded_words) == (1, 1, 0)


def _measurement(**counts) -> TextMeasurement:
    base = dict(documents=1, characters=1000, tokens=200, unknown_tokens=0, special_from_text=0, literal_special={},
                words=1000, misdecoded_words=0)
    return TextMeasurement(**{**base, **counts})


@pytest.mark.parametrize(
    "at_limit, over_limit, said",
    [
        ({"unknown_tokens": 10}, {"unknown_tokens": 11}, "unknown token [UNK]: 11 of 200 tokens (5.5 %; at most 5 %"),
        ({"tokens": 50}, {"tokens": 49}, "tokens per character: 0.049 (49 for 1,000; at least 0.05 expected)"),
        ({"tokens": 1500}, {"tokens": 1501}, "tokens per character: 1.5 (1,501 for 1,000; at most 1.5 expected)"),
        ({"tokens": 2000, "characters": 4000, "literal_special": {"[MASK]": 2}},
         {"tokens": 2000, "characters": 4000, "literal_special": {"[MASK]": 3}},
         "special-token strings written in the text: 3 in 2,000 tokens ([MASK] x3: 0.15 %; at most 0.1 %"),
        ({"special_from_text": 0}, {"special_from_text": 1}, "special tokens made from the text itself: 1 (none"),
        ({"misdecoded_words": 1}, {"misdecoded_words": 2}, "mis-decoded words: 2 of 1,000 (0.2 %; at most 0.1 %"),
    ],
)
def test_each_limit_passes_at_its_value_and_refuses_above_it(at_limit, over_limit, said):
    assert (MAX_UNKNOWN_SHARE, MIN_TOKENS_PER_CHAR, MAX_TOKENS_PER_CHAR, MAX_LITERAL_SPECIAL_SHARE,
            MAX_MISDECODED_SHARE) == (0.05, 0.05, 1.5, 0.001, 0.001)
    assert text_problems(_measurement(**at_limit)) == []
    (problem,) = text_problems(_measurement(**over_limit))
    assert said in problem


# ---------------------------------------------------------------------------------------------------------------
# the sample: the loader's documents, cleaned, bounded
# ---------------------------------------------------------------------------------------------------------------


def test_text_file_sample_is_the_loaders_lines_or_paragraphs_cleaned(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"first line\n\n  second \x07 \r\nthird\r\n\r\nfourth")
    assert sample_corpus(str(path)).texts == ["first line", "second", "third", "fourth"]
    assert sample_corpus(str(path), sample_by="paragraph").texts == ["first line", "second   \nthird", "fourth"]
    assert sample_corpus(str(path), max_documents=3).texts == ["first line", "second"]  # blank lines count
    # the documents load_corpus gives, cleaned as training cleans them
    loaded = [normalize_text(t)[0] for t in load_corpus(str(path), cache_dir=str(tmp_path / "hf"))["text"]]
    assert [t for t in loaded if t] == sample_corpus(str(path)).texts


def test_sample_decodes_with_data_encoding(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes("café crème\n".encode("latin-1"))
    assert sample_corpus(str(path), encoding="latin-1").texts == ["café crème"]
    assert sample_corpus(str(path)).texts == ["caf\ufffd cr\ufffdme"]  # what the loader's errors="replace" gives


def test_json_and_parquet_samples_read_the_text_column(tmp_path):
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"body": "one", "id": 1}\n\n{"body": null}\n{"body": " two "}\n')
    assert sample_corpus(str(jsonl), text_column="body").texts == ["one", "two"]
    array = tmp_path / "a.json"
    array.write_text('["first", "second"]')
    assert sample_corpus(str(array)).texts == ["first", "second"]
    parquet = tmp_path / "p.parquet"
    pq.write_table(pa.table({"body": ["alpha", None, "beta"]}), parquet)
    assert sample_corpus(str(parquet), text_column="body").texts == ["alpha", "beta"]


def test_sample_stops_at_its_document_and_character_bounds(tmp_path):
    many = tmp_path / "many.txt"
    many.write_text("".join(f"line {i}\n" for i in range(SAMPLE_DOCUMENTS + 100)))
    texts = sample_corpus(str(many)).texts
    assert texts == [f"line {i}" for i in range(SAMPLE_DOCUMENTS)]
    giant = tmp_path / "giant.txt"
    giant.write_text("ab" * SAMPLE_CHARS + "\nnext line\n")
    assert sample_corpus(str(giant)).texts == ["ab" * (SAMPLE_CHARS // 2)]  # cut at the bound, nothing after


def test_a_codec_that_cannot_start_on_the_file_is_refused_naming_data_encoding(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("plain text without a byte-order mark\n")
    with pytest.raises(ConfigError) as refused:  # was a raw UnicodeError traceback
        check_corpus_source(str(path), encoding="utf-16")
    assert refused.value.key == "data.encoding" and "does not start with BOM" in refused.value.problem
    assert "utf-16-le or utf-16-be" in refused.value.allowed


def test_packaged_corpus_sample_is_its_first_documents_and_a_hub_id_has_none():
    first = [normalize_text(t)[0] for t in load_corpus("wiki_leads")["text"][:SAMPLE_DOCUMENTS]]
    assert sample_corpus("wiki_leads").texts == [t for t in first if t]
    assert sample_corpus("someone/some-dataset") is None


# ---------------------------------------------------------------------------------------------------------------
# the training sequences never get a special token from the text
# ---------------------------------------------------------------------------------------------------------------


def test_special_token_text_never_becomes_a_special_id_in_training_sequences(tokenizer, tmp_path):
    corpus = Dataset.from_dict({"text": ["a [MASK] b [PAD] c [SEP] d [CLS]", "plain text here"]})
    built = build_tokenized_corpus(corpus, tokenizer, 64, tmp_path, held_out_fraction=0.0)
    rows = {row["doc_id"]: row["input_ids"] for row in built.train}
    expected = tokenizer.convert_tokens_to_ids(["a", "[", "mask", "]", "b", "[", "pad", "]", "c", "[", "sep", "]",
                                                "d", "[", "cl", "##s", "]"])
    assert rows["0"] == [tokenizer.cls_token_id, *expected, tokenizer.sep_token_id]


# ---------------------------------------------------------------------------------------------------------------
# through the command line, with the real database
# ---------------------------------------------------------------------------------------------------------------

ENGLISH = ("The river rises in the hills north of the town and flows south through farmland for about forty miles "
           "before it reaches the sea. Its valley was settled early, and the old bridge still carries the main road.")


def _one_giant_line(path):
    path.write_text("".join(random.Random(1).choice(string.ascii_lowercase) for _ in range(1 << 20)) + "\n")


def _english_lines(path, n=200, transform=lambda line: line, encoding="utf-8"):
    path.write_bytes("".join(transform(f"{i}. {ENGLISH}") + "\n" for i in range(n)).encode(encoding))


FRENCH = "Le château domine la vieille ville; les élèves étudient l'histoire de la Nouvelle-France à Québec."


@pytest.fixture
def db(mongo_url):
    name = f"kd_text_{uuid.uuid4().hex[:8]}"
    yield mongo_url, name
    pymongo.MongoClient(mongo_url).drop_database(name)


def _runs(db) -> list[dict]:
    return list(pymongo.MongoClient(db[0])[db[1]]["runs"].find({}, {"status": 1, "info": 1}))


BROKEN = {
    # one 1 MB line of letters without spaces: a single [UNK]
    "giant_line": (_one_giant_line, [], "unknown token [UNK]: 1 of 1 tokens (100 %"),
    # UTF-8 English read as UTF-16: CJK characters, nearly all [UNK]
    "utf16_misread": (_english_lines, ["data.encoding=utf-16-le"], "unknown token [UNK]: "),
    # Latin-1 French read as cp1251: Cyrillic letters inside Latin words
    "cp1251_misread": (lambda p: p.write_bytes((FRENCH + "\n").encode("latin-1") * 100), ["data.encoding=cp1251"],
                       "mis-decoded words: "),
    # markup: [MASK] for every fifth word
    "mask_markup": (lambda p: _english_lines(p, transform=lambda line: " ".join(
        "[MASK]" if i % 5 == 4 else word for i, word in enumerate(line.split()))), [], "special-token strings written"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_corpus_that_tokenizes_to_garbage_is_refused_before_compute(case, tmp_path, db):
    write, updates, said = BROKEN[case]
    corpus = tmp_path / "corpus.txt"
    write(corpus)
    out = tmp_path / "never"
    proc = run_distill(["smoke", f"data.corpus={corpus}", f"data.cache_dir={tmp_path / 'cache'}",
                        f"output_dir={out}", *updates], run_env(*db))
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("configuration error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines[0].startswith("configuration error: data.corpus: the first ") and said in lines[0], lines[0]
    assert "tokenized with the tokenizer of teacher 'random-tiny'" in lines[0]
    assert "; allowed: " in lines[0] and "data.text_checks=warn" in lines[0]
    assert _runs(db) == [] and not out.exists()  # no record, nothing built


def test_warn_mode_distils_with_one_warning_and_records_the_measurement(tokenizer, tmp_path, db):
    corpus = tmp_path / "masked.txt"
    BROKEN["mask_markup"][0](corpus)
    env = dict(run_env(*db), HF_DATASETS_CACHE=str(tmp_path / "home-cache"))
    proc = run_distill(["smoke", f"data.corpus={corpus}", f"data.cache_dir={tmp_path / 'cache'}",
                        f"output_dir={tmp_path / 'run'}", "data.text_checks=warn", "max_steps=2",
                        "eval_max_sequences=0", "progress_bar=False"], env)
    check(proc)
    # the corpus's Arrow conversion is under data.cache_dir, not in the home folder's datasets cache
    assert list((tmp_path / "cache" / "raw").rglob("*.arrow"))
    assert not list((tmp_path / "home-cache").rglob("*.arrow"))
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("WARNING: data.corpus:")]
    n_masks = 200 * (len(f"0. {ENGLISH}".split()) // 5)  # 200 lines, every fifth word
    assert len(warnings) == 1 and f"special-token strings written in the text: {n_masks:,} in " in warnings[0], \
        proc.stderr[-3000:]
    (record,) = _runs(db)
    assert record["status"] == "COMPLETED"
    checks = record["info"]["text_checks"]
    assert checks["mode"] == "warn" and checks["measured"]["literal_special"] == {"[MASK]": n_masks}
    assert len(checks["problems"]) == 1 and checks["sample"]["documents"] == 200
    # the markup was trained on as text: no [MASK] id in the cached training sequences
    train = open_cache(Path(record["info"]["data"]["cache"])).train
    assert all(tokenizer.mask_token_id not in ids for ids in train["input_ids"])


def test_default_corpus_passes_and_its_measurement_is_recorded(tokenizer, tmp_path, db):
    proc = run_distill(["smoke", f"output_dir={tmp_path / 'run'}", "max_steps=2", "eval_max_sequences=0",
                        "progress_bar=False"], run_env(*db))
    check(proc)
    assert "WARNING: data.corpus" not in proc.stderr
    (record,) = _runs(db)
    checks = record["info"]["text_checks"]
    assert record["status"] == "COMPLETED" and checks["mode"] == "refuse" and checks["problems"] == []
    # the smoke config reads 300 documents: the measurement is theirs, tokenized independently here
    texts = [t for t in (normalize_text(d)[0] for d in load_corpus("wiki_leads")["text"][:300]) if t]
    ids = tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    measured = checks["measured"]
    assert (measured["documents"], measured["characters"]) == (len(texts), sum(map(len, texts)))
    assert measured["tokens"] == sum(map(len, ids))
    assert measured["unknown_tokens"] == sum(row.count(tokenizer.unk_token_id) for row in ids)
    assert 0.15 < measured["tokens_per_char"] < 0.3 and measured["unknown_share"] < 0.001


def test_teacher_preparation_refuses_a_garbage_corpus_before_compute(tmp_path, db):
    corpus = tmp_path / "corpus.txt"
    _one_giant_line(corpus)
    proc = subprocess.run(
        [sys.executable, str(PROJECT / "experiments" / "prepare_teacher.py"), "with", "smoke",
         f"data.corpus={corpus}", f"cache_root={tmp_path / 'teachers'}", f"data.cache_dir={tmp_path / 'cache'}"],
        env=run_env(*db), cwd=PROJECT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("configuration error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "data.corpus: " in lines[0] and "tokenized with the tokenizer of teacher 'bert-tiny'" in lines[0]
    assert _runs(db) == [] and not (tmp_path / "teachers").exists()
