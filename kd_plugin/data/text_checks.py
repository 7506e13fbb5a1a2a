"""Does the corpus tokenize into usable text? Measured on its first documents with the teacher's tokenizer,
before any model, data or engine is built.

A corpus can pass every check on its bytes (:mod:`kd_plugin.data.source_checks`) and still give the teacher
nothing to teach: one giant line of letters without spaces becomes a single ``[UNK]``; text decoded with the
wrong ``data.encoding`` turns into another script (UTF-16 read as UTF-8 into CJK characters, all ``[UNK]``;
Latin-1 read as cp1251 into Latin words with Cyrillic letters; UTF-8 read as Latin-1 into ``Ã©``); a corpus full
of literal ``[MASK]``/``[SEP]`` strings is markup, not text. Such a run used to train for hours and end
COMPLETED. Here a bounded sample (the first :data:`SAMPLE_DOCUMENTS` documents, at most :data:`SAMPLE_CHARS`
characters: well under a second on the packaged corpora) is read the way the loader reads it, cleaned as
:mod:`kd_plugin.data.cleaning` cleans it, and tokenized exactly as the training sequences are
(:func:`kd_plugin.data.tokenized.encode_documents`), then measured:

* the share of unknown tokens among the tokens of the text (tokenizers without an unknown token: none);
* tokens per character: too few means words the vocabulary cannot split (each becomes one unknown token), too
  many means characters the vocabulary barely covers (byte-level tokenizers spend a token per byte on them);
* special tokens the tokenization produced from the text (none: the text's special-token strings are split into
  ordinary tokens since ``encode_documents`` passes ``split_special_tokens``), and how many special-token
  strings (``[MASK]``, ``[SEP]``, ``<|endoftext|>``) are written in the text: a few are harmless, a corpus of
  them is markup that training would read as the letters ``[ mask ]``;
* the share of words that look mis-decoded: Latin letters next to Cyrillic ones inside a word (``Quйbec``:
  Latin-1 read as cp1251), or a UTF-8 byte pair read as Latin-1/cp1252 (``QuÃ©bec``).

``data.text_checks`` decides what a measurement over a limit does: ``refuse`` (the default: one
``configuration error: data.corpus: ...`` line naming the numbers and the sample, exit status 2, no run record),
``warn`` (one ``WARNING`` line on stderr, the run goes on) or ``off`` (nothing is measured). The measurements
are returned for the run's info (``info.text_checks``) whatever the verdict. A corpus that is a hub dataset id
cannot be read before compute offline, nor a hub-id teacher's tokenizer: the check is skipped with a note.
Only the first documents are read: a corpus that goes bad later is not seen here.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kd_plugin.data.cleaning import normalize_text
from kd_plugin.data.corpus import load_corpus
from kd_plugin.data.corpus_sources import CORPORA, DEFAULT_ENCODING
from kd_plugin.data.source_checks import iter_local_documents
from kd_plugin.data.tokenized import encode_documents
from kd_plugin.errors import ConfigError

TEXT_CHECKS = ("refuse", "warn", "off")  # data.text_checks: what a measurement over a limit does

# The sample: the first documents of the corpus, at most this many (after data.max_documents), and at most this
# many characters (the document being read then is cut). Tokenizing it took 0.2-0.5 s here (2 CPU cores) on
# the packaged corpora; reading it 0.15 s (wiki_leads), 0.06 s (bbc_news), 2.4 s (enwiki_sample, whose loader
# parses the whole wiki dump).
SAMPLE_DOCUMENTS = 500
SAMPLE_CHARS = 1 << 19

# The limits. Measured on the sample above with the packaged teachers' tokenizer (bert-tiny, random-tiny and
# minilm-l6 share one uncased WordPiece vocabulary of 30,522) unless said otherwise; each leaves a wide margin on
# both sides. "Good" are the packaged corpora wiki_leads / enwiki_sample / bbc_news.
#
# Unknown tokens among the text's tokens. Good: 0.021 % / 0.019 % / 0.000 %. Broken: one 1 MB line of letters
# 100 % (1 token), letters with a space every 200: 100 %, wiki_leads UTF-8 bytes decoded as UTF-16: 97.5 %,
# hex dumps: 100 %, base64 lines: 42 %. (The public DistilBERT code drops sequences >= 50 % unknown.)
MAX_UNKNOWN_SHARE = 0.05
# Tokens per character. Good: 0.205 / 0.220 / 0.213 (French prose 0.30 and Python source 0.38 with the same
# English vocabulary; a byte-level BPE of 30,000 trained here on wiki_leads + bbc_news: 0.21 on wiki_leads).
# Too few, broken: a 1 MB line without spaces 0.000001, a space every 200 letters 0.005, base64 0.004, hex 0.001.
# Too many, broken: that byte-level BPE on wiki_leads decoded as UTF-16 2.84, on Chinese 2.9, on Russian 1.8.
# WordPiece never exceeds 1 (a token is at least one character; Chinese text with a Chinese BERT is about 1.0),
# so the upper limit only ever stops byte-level tokenizers spending bytes on characters they do not know.
MIN_TOKENS_PER_CHAR = 0.05
MAX_TOKENS_PER_CHAR = 1.5
# Special-token strings written in the text, per token of the text. Good: 0 in all three corpora. Broken: one
# "[MASK]" per wiki_leads document 0.95 %, "[SEP]" after every sentence 2.4 %, "[MASK]" for every fifth word 12.5 %.
MAX_LITERAL_SPECIAL_SHARE = 0.001
# Special tokens produced from the text by the training tokenization: none may be (split_special_tokens).
MAX_SPECIAL_FROM_TEXT = 0
# Words that look mis-decoded, per word. Good (whole corpora): 1 in 687 k words of wiki_leads ("3×\xa0"), 4 in
# 486 k of enwiki_sample (a homoglyph "Мoscow", three "×\xa0"), 0 in 876 k of bbc_news. Broken: wiki_leads read
# from UTF-8 as cp1252 0.87 % (English with a few accents), Latin-1 wiki_leads read as cp1251 0.21 %, French
# prose read from Latin-1 as cp1251 18 %, from UTF-8 as Latin-1 16 %.
MAX_MISDECODED_SHARE = 0.001

_WORD = re.compile(r"\w+")
_LATIN = "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f"  # letters only: no × or ÷
_CYRILLIC = "\u0400-\u04ff"
# what the second byte of a UTF-8 pair (0x80-0xBF) becomes in Latin-1 (U+00A0-U+00BF; U+0080-U+009F are control
# characters, which cleaning turns into spaces) or cp1252 (its 0x80-0x9F punctuation and letters)
_CP1252_HIGH = "\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc\u2013\u2014\u2018-\u201a\u201c-\u201e" \
               "\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122"
# a mis-decoded letter pair with at most 15 word characters on each side (about its word; bounded, so a 1 MB
# run of letters is searched in linear time)
_MISDECODED = re.compile(
    r"\w{0,15}(?:"
    f"[{_LATIN}][{_CYRILLIC}]|[{_CYRILLIC}][{_LATIN}]"  # Latin-1 / cp1252 text read as cp1251 (or KOI8)
    f"|[\u00c2-\u00d6\u00d8-\u00df][\u00a0-\u00bf{_CP1252_HIGH}]"  # a UTF-8 pair read as Latin-1 / cp1252: "Ã©"
    "|\u00e2\u20ac"  # a UTF-8 triple from U+2000-U+203F (quotes, dashes) read as cp1252: "â€™"
    r")\w{0,15}"
)
_N_EXAMPLES = 3


@dataclass(frozen=True)
class TextMeasurement:
    """What the tokenizer makes of a sample of documents (counts; the shares are properties)."""

    documents: int
    characters: int
    tokens: int
    unknown_tokens: int  # the tokenizer's unknown token (0 when it has none)
    special_from_text: int  # other special ids the tokenization produced from the text
    literal_special: dict[str, int]  # special-token strings written in the text -> occurrences (non-zero only)
    words: int  # \w+ runs
    misdecoded_words: int
    misdecoded_examples: tuple[str, ...] = ()

    @property
    def unknown_share(self) -> float:
        return self.unknown_tokens / max(self.tokens, 1)

    @property
    def tokens_per_char(self) -> float:
        return self.tokens / max(self.characters, 1)

    @property
    def literal_special_tokens(self) -> int:
        return sum(self.literal_special.values())

    @property
    def literal_special_share(self) -> float:
        return self.literal_special_tokens / max(self.tokens, 1)

    @property
    def misdecoded_share(self) -> float:
        return self.misdecoded_words / max(self.words, 1)

    def as_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["misdecoded_examples"] = list(self.misdecoded_examples)
        record.update(unknown_share=self.unknown_share, tokens_per_char=self.tokens_per_char,
                      literal_special_share=self.literal_special_share, misdecoded_share=self.misdecoded_share)
        return record


def measure_text(texts: Sequence[str], tokenizer) -> TextMeasurement:
    """Tokenize ``texts`` as training does and count what :data:`MAX_UNKNOWN_SHARE` and the other limits judge."""
    ids = encode_documents(tokenizer, list(texts)) if texts else []  # (documents,) lists of token ids
    unknown = tokenizer.unk_token_id
    special = set(tokenizer.all_special_ids) - {unknown}
    literal = {}
    for token in dict.fromkeys(tokenizer.all_special_tokens):
        count = sum(text.count(token) for text in texts)
        if count:
            literal[token] = count
    misdecoded = [match for text in texts for match in _MISDECODED.findall(text)]
    return TextMeasurement(
        documents=len(texts),
        characters=sum(map(len, texts)),
        tokens=sum(map(len, ids)),
        unknown_tokens=0 if unknown is None else sum(row.count(unknown) for row in ids),
        special_from_text=sum(1 for row in ids for token_id in row if token_id in special),
        literal_special=literal,
        words=sum(len(_WORD.findall(text)) for text in texts),
        misdecoded_words=len(misdecoded),
        misdecoded_examples=tuple(dict.fromkeys(misdecoded))[:_N_EXAMPLES],
    )


def _percent(share: float) -> str:
    return f"{100 * share:.3g} %"


def text_problems(measured: TextMeasurement, unknown_token: str | None = "[UNK]") -> list[str]:
    """One clause per limit the measurement is over, with the numbers (empty: the text is usable)."""
    m, problems = measured, []
    if m.characters == 0:
        return problems
    if m.unknown_share > MAX_UNKNOWN_SHARE:
        problems.append(f"unknown token {unknown_token}: {m.unknown_tokens:,} of {m.tokens:,} tokens "
                        f"({_percent(m.unknown_share)}; at most {_percent(MAX_UNKNOWN_SHARE)} allowed)")
    if m.tokens_per_char < MIN_TOKENS_PER_CHAR:
        problems.append(f"tokens per character: {m.tokens_per_char:.2g} ({m.tokens:,} for {m.characters:,}; at least "
                        f"{MIN_TOKENS_PER_CHAR:g} expected): words the vocabulary cannot split, e.g. long runs of "
                        "characters without spaces, each one unknown token")
    if m.tokens_per_char > MAX_TOKENS_PER_CHAR:
        problems.append(f"tokens per character: {m.tokens_per_char:.3g} ({m.tokens:,} for {m.characters:,}; at most "
                        f"{MAX_TOKENS_PER_CHAR:g} expected): characters the vocabulary barely covers, e.g. text "
                        "decoded with the wrong data.encoding")
    if m.special_from_text > MAX_SPECIAL_FROM_TEXT:
        problems.append(f"special tokens made from the text itself: {m.special_from_text:,} (none allowed)")
    if m.literal_special_share > MAX_LITERAL_SPECIAL_SHARE:
        written = ", ".join(f"{token} x{count:,}" for token, count in m.literal_special.items())
        problems.append(f"special-token strings written in the text: {m.literal_special_tokens:,} in {m.tokens:,} "
                        f"tokens ({written}: {_percent(m.literal_special_share)}; at most "
                        f"{_percent(MAX_LITERAL_SPECIAL_SHARE)} allowed), markup that is tokenized as ordinary "
                        "text, never as special tokens")
    if m.misdecoded_share > MAX_MISDECODED_SHARE:
        examples = ", ".join(repr(example) for example in m.misdecoded_examples)
        problems.append(f"mis-decoded words: {m.misdecoded_words:,} of {m.words:,} ({_percent(m.misdecoded_share)}; "
                        f"at most {_percent(MAX_MISDECODED_SHARE)} allowed), Latin and Cyrillic letters in one word "
                        f"or UTF-8 read as Latin-1/cp1252, e.g. {examples}")
    return problems


ALLOWED = (f"text the teacher's tokenizer covers (at most {_percent(MAX_UNKNOWN_SHARE)} unknown tokens, "
           f"{MIN_TOKENS_PER_CHAR:g} to {MAX_TOKENS_PER_CHAR:g} tokens per character, at most "
           f"{_percent(MAX_LITERAL_SPECIAL_SHARE)} special-token strings and {_percent(MAX_MISDECODED_SHARE)} "
           "mis-decoded words: fix data.encoding, put spaces or line breaks in the text, strip the markup), "
           "or data.text_checks=warn to go on anyway (off: not measured)")


@dataclass(frozen=True)
class TextSample:
    """The cleaned, non-empty documents measured, and where they come from."""

    source: str  # "the packaged corpus 'wiki_leads'", "'/data/x.txt'"
    texts: list[str] = field(repr=False)

    def describe(self) -> str:
        n, chars = len(self.texts), sum(map(len, self.texts))
        return f"the first {n:,} non-empty document{'' if n == 1 else 's'} ({chars:,} characters) of {self.source}"


def sample_corpus(corpus: str, text_column: str = "text", encoding: str = DEFAULT_ENCODING,
                  sample_by: str = "line", max_documents: int | None = None) -> TextSample | None:
    """The first documents of ``corpus`` as training will see them (read as the loader reads them, cleaned as
    :func:`kd_plugin.data.cleaning.normalize_text` cleans them, empty ones skipped), at most
    :data:`SAMPLE_DOCUMENTS` of them and :data:`SAMPLE_CHARS` characters (the last one cut there); None for a hub
    dataset id (not readable before compute)."""
    if corpus in CORPORA:
        documents: Iterable[str] = load_corpus(corpus)["text"]
        source = f"the packaged corpus {corpus!r}"
    elif Path(corpus).expanduser().exists():
        documents = iter_local_documents(Path(corpus).expanduser(), text_column, encoding, sample_by,
                                         max_chars=2 * SAMPLE_CHARS)  # cleaning may strip some of it
        source = repr(corpus)
    else:
        return None
    texts: list[str] = []
    n_chars = 0
    for n_read, document in enumerate(documents):
        if len(texts) == SAMPLE_DOCUMENTS or n_chars >= SAMPLE_CHARS or n_read == max_documents:
            break
        text = normalize_text(document)[0][: SAMPLE_CHARS - n_chars]
        if text:
            texts.append(text)
            n_chars += len(text)
    return TextSample(source, texts)


def check_corpus_text(corpus: str, tokenizer_dir: str | None, mode: str = "refuse", *, text_column: str = "text",
                      encoding: str = DEFAULT_ENCODING, sample_by: str = "line", max_documents: int | None = None,
                      teacher: str | None = None) -> dict[str, Any]:
    """Measure a sample of ``corpus`` with the tokenizer in ``tokenizer_dir`` (the teacher's; a prepared teacher's
    is its base model's) and act on the limits per ``mode`` (``data.text_checks``).

    ``refuse``: a ConfigError under ``data.corpus`` naming every limit exceeded, the numbers and the sample;
    ``warn``: the same as one ``WARNING`` line on stderr; ``off``: nothing read. Returns the record for the run's
    info: the mode, the sample, the measurements, the limits, the problems (or why nothing was measured).
    """
    record: dict[str, Any] = {"mode": mode}
    if mode == "off":
        return record
    started = time.perf_counter()
    if tokenizer_dir is None or not Path(tokenizer_dir).expanduser().is_dir():
        record["skipped"] = (f"the teacher's tokenizer {tokenizer_dir!r} is not a local directory (a hub id cannot be "
                             "read before compute offline); the corpus is not measured")
        return record
    sample = sample_corpus(corpus, text_column, encoding, sample_by, max_documents)
    if sample is None:
        record["skipped"] = f"{corpus!r} is a hub dataset id, which cannot be read before compute; not measured"
        return record
    if not sample.texts:
        record["skipped"] = f"no text in the first documents of {sample.source}; not measured"
        return record
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    except (OSError, ValueError) as err:
        raise ConfigError("teacher", f"cannot read the tokenizer in {tokenizer_dir!r}: {err}",
                          "a model directory with its tokenizer files") from None
    measured = measure_text(sample.texts, tokenizer)
    problems = text_problems(measured, tokenizer.unk_token)
    record.update(
        tokenizer=str(tokenizer_dir), teacher=teacher,
        sample={"source": sample.source, "documents": measured.documents, "characters": measured.characters,
                "max_documents": SAMPLE_DOCUMENTS, "max_characters": SAMPLE_CHARS},
        measured=measured.as_dict(),
        limits={"max_unknown_share": MAX_UNKNOWN_SHARE, "min_tokens_per_char": MIN_TOKENS_PER_CHAR,
                "max_tokens_per_char": MAX_TOKENS_PER_CHAR, "max_special_from_text": MAX_SPECIAL_FROM_TEXT,
                "max_literal_special_share": MAX_LITERAL_SPECIAL_SHARE,
                "max_misdecoded_share": MAX_MISDECODED_SHARE},
        problems=problems, seconds=round(time.perf_counter() - started, 3),
    )
    if problems:
        whose = f"the tokenizer of teacher {teacher!r}" if teacher else f"the tokenizer in {str(tokenizer_dir)!r}"
        problem = f"{sample.describe()}, tokenized with {whose}: " + "; ".join(problems)
        if mode == "refuse":
            raise ConfigError("data.corpus", problem, ALLOWED)
        print(f"WARNING: data.corpus: {problem} (data.text_checks=warn: going on anyway)", file=sys.stderr,
              flush=True)
    return record
