"""Is the corpus source usable? Cheap checks before any model, data or engine is built: one ConfigError line.

:func:`check_corpus_source` is what the experiments' config hooks call (distillation, teacher preparation). It
reads what ``data.corpus`` names the way :func:`kd_plugin.data.corpus.load_corpus` will, but streams local files
block by block (never a ``Dataset``, never a tokenizer, memory bounded by a block) and stops at the first broken
line; the suspect characters are counted over the whole file, or until the verdict can no longer change.
Packaged corpora are known-good: only their pip package is looked for. A hub id cannot be checked offline: it
is let through.

Refused, with the key to change and the file (and line) at fault:

* ``data.corpus``: a missing path; something that is neither a file nor a directory; an unsupported extension;
  a directory without corpus files or mixing formats; no non-empty document (an empty or all-blank ``.txt``, no
  JSON record with non-empty text, no non-empty Parquet row); a JSON line that is not valid JSON or not an
  object (first bad line and an excerpt); an unreadable Parquet file; a file that does not decode as text
  (:data:`MAX_SUSPECT_SHARE`), or a JSON file with any byte that is not UTF-8 while ``data.encoding`` is UTF-8;
* ``data.text_column``: no record of a JSON file / no column of a Parquet file has it (the fields found are
  listed); a non-string value (line named); a value other than ``text`` for a ``.txt`` file or a packaged
  corpus, which have no columns to choose from;
* ``data.encoding``: not a Python text encoding; set for a Parquet file, a packaged corpus or a hub id (nothing
  there is decoded with it); a codec that cannot start on the file (``utf-16`` on a file without a byte-order
  mark);
* ``data.sample_by``: neither ``line`` nor ``paragraph``.

:func:`iter_local_documents` reads the first documents of a local source the way the loader will, bounded by a
character budget, for :mod:`kd_plugin.data.text_checks` (which tokenizes them with the teacher's tokenizer).

Lines are counted from 1 as an editor shows them (``\\n``, ``\\r\\n`` or ``\\r`` ends a line, as in the loaders),
so in ``sample_by="line"`` mode line N of a ``.txt`` file is the document with ``doc_id`` N - 1. Parquet rows are
counted from 0, as their ``doc_id``.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kd_plugin.data.cleaning import CONTROL_CHARS_PATTERN, REPLACEMENT_CHAR
from kd_plugin.data.corpus_sources import (
    CORPORA,
    CORPUS_PACKAGES,
    DEFAULT_ENCODING,
    check_encoding_applies,
    check_sample_by,
    codec_name,
    encoding_not_applicable,
    local_files,
    looks_like_path,
    require_package,
)
from kd_plugin.errors import ConfigError

# A file is refused when MORE than this share of its decoded characters are "suspect": an undecodable byte (which
# the loader turns into U+FFFD), a U+FFFD already in the text, or a C0/C1 control character other than tab, LF
# and CR (cleaning's definition, :data:`kd_plugin.data.cleaning.CONTROL_CHARS`). Why 0.1 %, one in a thousand:
# text decoded with the right encoding has next to none (the packaged corpora: 0 of 6.5 M characters in
# wiki_leads, 1 of 5.0 M in bbc_news), so a few stray bytes in a scraped file stay far below it and are replaced
# and counted by cleaning as before; a file in the wrong encoding has one per non-ASCII letter (Latin-1 French,
# German or Spanish prose read as UTF-8: an accented letter every few dozen characters, 1 % or more); random or
# binary data is about half undecodable as UTF-8 and about a quarter control characters as Latin-1. Latin-1
# English with a rare "café" or "£" can stay under the limit and loads with a few U+FFFD, as it always did. The
# share is over the characters of the whole decoded file (line breaks and, for JSON, keys included; a Parquet
# file: the text column's values); "more than" is strict: exactly 0.1 % passes.
MAX_SUSPECT_SHARE = 0.001

_BLOCK_CHARS = 1 << 20  # characters per streamed block of lines
_EXCERPT_CHARS = 60
# Undecodable bytes are decoded to this marker, not to U+FFFD, so they are told apart from a U+FFFD in the text;
# it is a lone surrogate, which no decoder yields for real text. One marker per error, as "replace" writes one
# U+FFFD per error: the counts here are those the loader's errors="replace" produces.
_UNDECODABLE = "\udcfd"
_MARK_UNDECODABLE = "kd_plugin.mark_undecodable"
codecs.register_error(_MARK_UNDECODABLE, lambda err: (_UNDECODABLE, err.end))
# one character class: the marker, U+FFFD and cleaning's control characters
_SUSPECT = re.compile("[" + _UNDECODABLE + REPLACEMENT_CHAR + CONTROL_CHARS_PATTERN.removeprefix("["))
_LATIN_1 = codec_name("latin-1")
_LIMIT = f"{100 * MAX_SUSPECT_SHARE:g} %"
_JSON_LAYOUT = "one JSON object per line (JSON Lines), or one JSON array of objects"


def check_corpus_source(
    corpus: str, text_column: str = "text", encoding: str = DEFAULT_ENCODING, sample_by: str = "line",
    remember_in: str | Path | None = None,
) -> None:
    """Raise a ConfigError (``data.corpus``, ``data.text_column``, ``data.encoding`` or ``data.sample_by``) if
    ``load_corpus(corpus, text_column, sample_by=sample_by, encoding=encoding)`` would fail or read garbage.

    Reads local files once, streamed (a JSON array file is read whole, as its loader does), and nothing else.
    ``remember_in`` (``data.cache_dir``): a local source that passed is remembered there under a fingerprint of
    its files (path, size, modification time) and of these arguments, and not read again while that holds
    (at 16 GB the read is minutes per run); a refusal is never remembered.
    """
    if not isinstance(corpus, str) or not corpus:
        raise ConfigError("data.corpus", f"{corpus!r}", "a corpus name, a local path, or a hub dataset id")
    codec = codec_name(encoding)
    check_sample_by(sample_by)
    if not isinstance(text_column, str) or not text_column:
        raise ConfigError("data.text_column", f"{text_column!r}", "a column name, e.g. text")
    if corpus in CORPORA:
        _check_packaged(corpus, text_column, codec, encoding)
        return
    path = Path(corpus).expanduser()
    if not path.exists():
        if looks_like_path(corpus):
            raise ConfigError(
                "data.corpus",
                f"no such file or directory {corpus!r}",
                ", ".join(CORPORA.names()) + ", or an existing path",
            )
        if codec != DEFAULT_ENCODING:
            raise encoding_not_applicable(
                encoding, f"the hub dataset {corpus!r}", "the hub loader decodes it"
            )
        return  # a hub id: nothing to check offline

    builder, files = local_files(path)
    check_encoding_applies(builder, codec, path)
    if builder == "text" and text_column != "text":
        raise ConfigError(
            "data.text_column",
            f"{text_column!r} does not apply to {str(path)!r}: a .txt corpus has no columns, each "
            f"{sample_by} is a document",
            "text (the default) for .txt files; a field name for .jsonl/.json/.parquet or a hub dataset",
        )
    passed = None if remember_in is None else _passed_marker(files, builder, text_column, codec, sample_by, remember_in)
    if passed is not None and passed.exists():
        return
    has_text = False
    for name in files:
        file = Path(name)
        try:
            if builder == "text":
                has_text |= _check_text_file(file, codec)
            elif builder == "json":
                has_text |= _check_json_file(file, codec, text_column)
            else:
                has_text |= _check_parquet_file(file, text_column)
        except OSError as exc:
            raise ConfigError(
                "data.corpus", f"cannot read {str(file)!r} ({exc.strerror or exc})", "a readable file"
            ) from None
        except UnicodeError as exc:  # not a bad byte (those are counted) but a stream the codec cannot start on
            raise ConfigError(
                "data.encoding",
                f"{str(file)!r} cannot be decoded as {codec} ({exc})",
                "the file's encoding (utf-16-le or utf-16-be for UTF-16 without a byte-order mark)",
            ) from None
    if not has_text:
        raise ConfigError(
            "data.corpus",
            _no_document_problem(path, files, builder, text_column),
            _no_document_allowed(builder, sample_by),
        )
    if passed is not None:
        try:
            passed.parent.mkdir(parents=True, exist_ok=True)
            passed.write_text(json.dumps({"files": files, "text_column": text_column, "encoding": codec,
                                          "sample_by": sample_by}))
        except OSError:  # an unwritable cache is reported by its own check; the source is checked again next time
            pass


# Part of every remembered verdict's fingerprint: a change to what the checks refuse makes every source be
# checked again.
SOURCE_CHECK_VERSION = 1


def _passed_marker(files: list[str], builder: str, text_column: str, codec: str, sample_by: str,
                   remember_in: str | Path) -> Path | None:
    """Where a local source's passed check is remembered: one file named by the fingerprint of its files and of
    what the check read them as (None when a file cannot even be stat'ed: the check then says why)."""
    stats = []
    for name in files:
        try:
            status = Path(name).stat()
        except OSError:
            return None
        stats.append((str(Path(name).resolve()), status.st_size, status.st_mtime_ns))
    fingerprint = json.dumps([SOURCE_CHECK_VERSION, MAX_SUSPECT_SHARE, builder, text_column, codec, sample_by,
                              stats])
    return Path(remember_in) / "source-checks" / f"{hashlib.sha256(fingerprint.encode()).hexdigest()[:16]}.json"


# ---------------------------------------------------------------------------------------------------------------
# sources other than local files
# ---------------------------------------------------------------------------------------------------------------


def _check_packaged(corpus: str, text_column: str, codec: str, encoding: str) -> None:
    if codec != DEFAULT_ENCODING:
        raise encoding_not_applicable(encoding, f"the packaged corpus {corpus!r}", "read by its own loader")
    if text_column != "text":
        raise ConfigError(
            "data.text_column",
            f"{text_column!r} does not apply to the packaged corpus {corpus!r}: its documents are fixed",
            "text (the default); a field name for .jsonl/.json/.parquet files or a hub dataset",
        )
    if corpus in CORPUS_PACKAGES:
        require_package(corpus)  # known-good data: only whether it is installed


# ---------------------------------------------------------------------------------------------------------------
# decoding: suspect characters
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class _SuspectCount:
    """Running count of the suspect characters of one file, and where the first one is."""

    n_chars: int = 0
    n_undecodable: int = 0  # undecodable bytes (errors): U+FFFD once loaded
    n_replacement: int = 0  # U+FFFD already in the decoded text
    n_control: int = 0  # C0/C1 control characters (not tab, LF, CR)
    first_at: str | None = None  # "line 12" / "row 11"
    first_excerpt: str = ""

    @property
    def n_suspect(self) -> int:
        return self.n_undecodable + self.n_replacement + self.n_control

    def add_lines(self, lines: list[str], first_line: int) -> str:
        """Count a block of decoded lines (``first_line`` = number of its first line); return the block."""
        block = "".join(lines)
        n_suspect = len(_SUSPECT.findall(block))
        if n_suspect:
            n_undecodable, n_replacement = block.count(_UNDECODABLE), block.count(REPLACEMENT_CHAR)
            self.n_undecodable += n_undecodable
            self.n_replacement += n_replacement
            self.n_control += n_suspect - n_undecodable - n_replacement
            if self.first_at is None:
                for i, line in enumerate(lines):
                    found = _SUSPECT.search(line)
                    if found:
                        self.first_at = f"line {first_line + i}"
                        self.first_excerpt = _excerpt(line, found.start())
                        break
        self.n_chars += len(block)
        return block

    def over_limit(self, n_chars: int) -> bool:
        """True when the suspects exceed the allowed share of ``n_chars`` characters.

        Also used to stop reading early, with the file's size in bytes for ``n_chars``: a decoded file never has
        more characters than bytes (every character, and every error marker, consumes at least one byte), so
        suspects over the share of the bytes are over the share of the characters, whatever the rest holds.
        """
        return self.n_suspect > MAX_SUSPECT_SHARE * n_chars

    def refuse(self, subject: str, codec: str, complete: bool) -> ConfigError:
        """The refusal: ``subject`` (e.g. "'a.txt' does not read as utf-8 text") and the counts."""
        read = "" if complete else " read (stopped there: the share can no longer fall under the limit)"
        problem = (
            f"{subject}: {self.n_suspect:,} of {self.n_chars:,} characters{read} "
            f"({_percent(self.n_suspect, self.n_chars)}) are undecodable or control characters "
            f"({_plural(self.n_undecodable, 'undecodable byte')}, {self.n_replacement:,} U+FFFD in the text, "
            f"{_plural(self.n_control, 'control character')}), more than the {_LIMIT} allowed; "
            f"first on {self.first_at}: {self.first_excerpt}"
        )
        return ConfigError(
            "data.corpus",
            problem,
            f"text with at most {_LIMIT} such characters" + _encoding_hint(self, codec),
        )


def _encoding_hint(count: _SuspectCount, codec: str) -> str:
    if count.n_undecodable and codec != _LATIN_1:
        return ", or set data.encoding=latin-1 if the file is Latin-1 (cp1252 if it is Windows text)"
    if count.n_control and codec == _LATIN_1:
        return (
            ", or set data.encoding=cp1252 if the file is Windows text "
            "(its quotes and dashes are C1 controls in Latin-1)"
        )
    return " (not binary data)"


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / max(whole, 1):.3g} %"


def _excerpt(line: str, at: int = 0) -> str:
    """A short, one-line, quoted piece of ``line`` around position ``at`` (undecodable bytes shown as U+FFFD)."""
    line = line.rstrip("\r\n")
    start = 0 if at < _EXCERPT_CHARS - 20 else at - 20
    piece = line[start : start + _EXCERPT_CHARS].replace(_UNDECODABLE, REPLACEMENT_CHAR)
    return ("..." if start else "") + repr(piece) + ("..." if start + _EXCERPT_CHARS < len(line) else "")


def _line_blocks(path: Path, codec: str) -> Iterator[tuple[int, list[str]]]:
    """(number of the first line, lines) blocks of about ``_BLOCK_CHARS`` characters, undecodable bytes marked."""
    with open(path, encoding=codec, errors=_MARK_UNDECODABLE, newline=None) as f:
        first_line = 1
        while lines := f.readlines(_BLOCK_CHARS):
            yield first_line, lines
            first_line += len(lines)


# ---------------------------------------------------------------------------------------------------------------
# .txt
# ---------------------------------------------------------------------------------------------------------------


def _check_text_file(path: Path, codec: str) -> bool:
    """Refuse a file that does not decode; return whether it holds a non-blank line."""
    size = path.stat().st_size
    count, has_text, complete = _SuspectCount(), False, True
    for first_line, lines in _line_blocks(path, codec):
        if count.over_limit(size):  # decided, and there is more to read
            complete = False
            break
        block = count.add_lines(lines, first_line)
        has_text = has_text or not block.isspace()
    if count.over_limit(count.n_chars):
        raise count.refuse(f"{str(path)!r} does not read as {codec} text", codec, complete)
    return has_text


# ---------------------------------------------------------------------------------------------------------------
# .jsonl / .json
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class _JsonRecords:
    """What the records of one JSON file hold so far."""

    path: Path
    text_column: str
    n_records: int = 0
    first_fields: list[str] | None = None
    has_column: bool = False
    has_text: bool = False

    def add(self, record: object, where: str, source: str) -> None:
        if not isinstance(record, dict):
            raise ConfigError(
                "data.corpus",
                f"{str(self.path)!r}, {where} is a JSON {_json_kind(record)}, not an object: {_excerpt(source)}",
                _JSON_LAYOUT,
            )
        self.n_records += 1
        if self.first_fields is None:
            self.first_fields = list(record)
        if self.text_column not in record:
            return
        self.has_column = True
        value = record[self.text_column]
        if value is not None and not isinstance(value, str):
            raise ConfigError(
                "data.text_column",
                f"{str(self.path)!r}, {where}: field {self.text_column!r} is a JSON {_json_kind(value)}, not text: "
                f"{_excerpt(source)}",
                "a string (or null) in every record",
            )
        self.has_text = self.has_text or bool(value and not value.isspace())

    def finish(self) -> bool:
        """Whether the file holds text; an empty file is fine next to others (the loader skips it)."""
        if self.n_records == 0:
            return False
        if not self.has_column:  # next to files that have the column, the loader fails to merge the schemas
            raise ConfigError(
                "data.text_column",
                f"no field {self.text_column!r} in any of the {self.n_records:,} records of {str(self.path)!r}",
                "a field of its first record: " + (", ".join(self.first_fields or []) or "(none)"),
            )
        return self.has_text


def _json_kind(value: object) -> str:
    kinds = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def _check_json_file(path: Path, codec: str, text_column: str) -> bool:
    """Refuse a JSON file that does not parse, decode or hold ``text_column``; return whether it holds text."""
    if _starts_with_array(path, codec):
        return _check_json_array(path, codec, text_column)
    size = path.stat().st_size
    # The datasets JSON loader hands UTF-8 bytes to pyarrow undecoded: one invalid byte fails the whole load,
    # so under UTF-8 any undecodable byte refuses the file (other encodings are decoded with "replace").
    strict_utf8 = codec == DEFAULT_ENCODING
    count, records, parse, complete = _SuspectCount(), _JsonRecords(path, text_column), True, True
    for first_line, lines in _line_blocks(path, codec):
        if count.over_limit(size):  # decided, and there is more to read
            complete = False
            break
        count.add_lines(lines, first_line)
        if count.over_limit(size):
            parse = False  # refused below
        for i, line in enumerate(lines if parse else ()):
            if strict_utf8 and _UNDECODABLE in line:
                parse = False  # refused below, once every undecodable byte is counted
                break
            if first_line + i == 1:
                line = line.removeprefix("\ufeff")  # a UTF-8 BOM, which the loader skips
            if line.isspace() or not line:
                continue
            where = f"line {first_line + i}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(
                    "data.corpus",
                    f"{str(path)!r}, {where} is not valid JSON ({exc.msg}, column {exc.colno}): "
                    f"{_excerpt(line, exc.pos)}",
                    _JSON_LAYOUT,
                ) from None
            records.add(record, where, line)
    if count.over_limit(count.n_chars):
        raise count.refuse(f"{str(path)!r} does not read as {codec} text", codec, complete)
    if strict_utf8 and count.n_undecodable:
        raise _refuse_not_utf8(path, count)
    return records.finish()


def _refuse_not_utf8(path: Path, count: _SuspectCount) -> ConfigError:
    return ConfigError(
        "data.corpus",
        f"{str(path)!r} is not valid UTF-8: {_plural(count.n_undecodable, 'undecodable byte')} in "
        f"{count.n_chars:,} characters "
        f"({_percent(count.n_undecodable, count.n_chars)}), which the JSON loader cannot read under utf-8; first on "
        f"{count.first_at}: {count.first_excerpt}",
        "a UTF-8 JSON file, or set data.encoding=latin-1 if the file is Latin-1 (cp1252 if it is Windows text)",
    )


def _starts_with_array(path: Path, codec: str) -> bool:
    with open(path, encoding=codec, errors=_MARK_UNDECODABLE) as f:
        while chunk := f.read(1 << 16):
            head = chunk.lstrip().removeprefix("\ufeff").lstrip()
            if head:
                return head.startswith("[")
    return False


def _check_json_array(path: Path, codec: str, text_column: str) -> bool:
    """A file holding one JSON array (read whole, as the loader does): of objects, or of strings (-> ``text``)."""
    text = path.read_text(encoding=codec, errors=_MARK_UNDECODABLE).removeprefix("\ufeff")
    lines = text.splitlines(keepends=True)
    count = _SuspectCount()
    count.add_lines(lines, 1)
    if count.over_limit(count.n_chars):
        raise count.refuse(f"{str(path)!r} does not read as {codec} text", codec, complete=True)
    if codec == DEFAULT_ENCODING and count.n_undecodable:
        raise _refuse_not_utf8(path, count)
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        line = lines[exc.lineno - 1] if exc.lineno <= len(lines) else ""
        why = (
            "more JSON after the array that starts the file, which is read as one JSON array"
            if exc.msg == "Extra data"
            else f"not valid JSON ({exc.msg}, column {exc.colno})"
        )
        raise ConfigError(
            "data.corpus",
            f"{str(path)!r}, line {exc.lineno}: {why}: {_excerpt(line, exc.colno - 1)}",
            _JSON_LAYOUT,
        ) from None
    records = _JsonRecords(path, text_column)
    if items and all(isinstance(item, str) for item in items):  # the loader makes them a "text" column
        items = [{"text": item} for item in items]
    for i, item in enumerate(items):
        records.add(item, f"array element {i}", json.dumps(item, ensure_ascii=False))
    return records.finish()


# ---------------------------------------------------------------------------------------------------------------
# .parquet
# ---------------------------------------------------------------------------------------------------------------


def _check_parquet_file(path: Path, text_column: str) -> bool:
    """Refuse a Parquet file without a string ``text_column`` or with garbage in it; return whether it has text."""
    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
        if text_column not in schema.names:
            raise ConfigError(
                "data.text_column",
                f"no column {text_column!r} in {str(path)!r}",
                "its columns: " + ", ".join(schema.names),
            )
        kind = schema.field(text_column).type
        if pa.types.is_null(kind):
            return False
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)):
            raise ConfigError(
                "data.text_column",
                f"column {text_column!r} of {str(path)!r} holds {kind}, not text",
                "a column of strings: " + ", ".join(schema.names),
            )
        count, has_text, row = _SuspectCount(), False, 0
        for batch in parquet.iter_batches(columns=[text_column], batch_size=8192):
            values = batch.column(0)  # (rows,) strings
            lengths = pc.fill_null(pc.utf8_length(values), 0)
            n_replacement = pc.fill_null(pc.count_substring(values, REPLACEMENT_CHAR), 0)
            n_control = pc.fill_null(pc.count_substring_regex(values, CONTROL_CHARS_PATTERN), 0)
            count.n_chars += pc.sum(lengths).as_py() or 0
            count.n_replacement += pc.sum(n_replacement).as_py() or 0
            count.n_control += pc.sum(n_control).as_py() or 0
            if count.first_at is None and count.n_suspect:
                suspect = pc.add(n_replacement, n_control).to_numpy(zero_copy_only=False)  # (rows,)
                i = int(suspect.nonzero()[0][0])
                value = values[i].as_py()
                count.first_at = f"row {row + i}"
                count.first_excerpt = _excerpt(value, _SUSPECT.search(value).start())
            has_text = has_text or bool(
                pc.any(pc.and_(pc.greater(lengths, 0), pc.invert(pc.utf8_is_space(values)))).as_py()
            )
            row += len(values)
    except (pa.ArrowException, OSError) as exc:
        raise ConfigError(
            "data.corpus",
            f"{str(path)!r} is not a readable Parquet file ({type(exc).__name__}: {exc})",
            "a Parquet file written by pyarrow, pandas or datasets",
        ) from None
    if count.over_limit(count.n_chars):
        raise count.refuse(
            f"column {text_column!r} of {str(path)!r} is not clean text", "parquet", complete=True
        )
    return has_text


# ---------------------------------------------------------------------------------------------------------------
# no document at all
# ---------------------------------------------------------------------------------------------------------------


def _no_document_problem(path: Path, files: list[str], builder: str, text_column: str) -> str:
    why = {
        "text": "every line is blank",
        "json": f"no record has a non-empty {text_column!r}",
        "parquet": f"no row has a non-empty {text_column!r}",
    }[builder]
    if path.is_dir():
        return f"no non-empty document in the {len(files)} corpus files under {str(path)!r}: {why}"
    if path.stat().st_size == 0:
        return f"{str(path)!r} is empty (0 bytes)"
    return f"{str(path)!r} has no non-empty document: {why}"


def _no_document_allowed(builder: str, sample_by: str) -> str:
    if builder == "text":
        unit = "line" if sample_by == "line" else "blank-line-separated paragraph"
        return f"a file with at least one non-blank line (one document per {unit})"
    return "at least one document with text"


# ---------------------------------------------------------------------------------------------------------------
# the first documents of a local source (kd_plugin.data.text_checks tokenizes a bounded sample of them)
# ---------------------------------------------------------------------------------------------------------------


def iter_local_documents(
    path: Path, text_column: str = "text", encoding: str = DEFAULT_ENCODING, sample_by: str = "line",
    max_chars: int = _BLOCK_CHARS,
) -> Iterator[str]:
    """The documents of a local corpus file or directory as :func:`kd_plugin.data.corpus.load_corpus` reads them
    (same files in the same order, same decoding with undecodable bytes as U+FFFD, same cutting of ``.txt``
    files into lines or paragraphs, empty documents included), stopping after about ``max_chars`` characters:
    the document being read then is cut there, so time and memory stay bounded whatever the file holds (a JSON
    Lines record is read whole, a JSON array file is read whole as its loader does). Meant for a source that
    :func:`check_corpus_source` passed; a record it would refuse is skipped here."""
    builder, files = local_files(path)
    codec, budget = codec_name(encoding), max_chars
    for name in files:
        reader = {"text": _text_documents, "json": _json_documents, "parquet": _parquet_documents}[builder]
        for text in reader(Path(name), codec, text_column, sample_by, budget):
            text = text[:budget]
            budget -= len(text)
            yield text
            if budget <= 0:
                return


def _text_documents(path: Path, codec: str, text_column: str, sample_by: str, max_chars: int) -> list[str]:
    with open(path, encoding=codec, errors="replace", newline=None) as f:  # universal newlines, as the loader
        text = f.read(max_chars)
    if sample_by == "line":
        return text.split("\n")
    return [paragraph for paragraph in text.split("\n\n") if paragraph]


def _json_documents(path: Path, codec: str, text_column: str, sample_by: str, max_chars: int) -> Iterator[str]:
    if _starts_with_array(path, codec):
        try:
            items = json.loads(path.read_text(encoding=codec, errors="replace").removeprefix("\ufeff"))
        except json.JSONDecodeError:
            return
        if items and all(isinstance(item, str) for item in items):  # the loader makes them a "text" column
            items = [{"text": item} for item in items]
        for item in items if isinstance(items, list) else ():
            yield _record_text(item, text_column)
        return
    read = 0
    with open(path, encoding=codec, errors="replace") as f:
        for number, line in enumerate(f):
            if number == 0:
                line = line.removeprefix("\ufeff")
            if not line or line.isspace():
                continue
            try:
                yield _record_text(json.loads(line), text_column)
            except json.JSONDecodeError:
                continue
            read += len(line)
            if read >= max_chars:
                return


def _record_text(record: object, text_column: str) -> str:
    value = record.get(text_column) if isinstance(record, dict) else None
    return value if isinstance(value, str) else ""


def _parquet_documents(path: Path, codec: str, text_column: str, sample_by: str, max_chars: int) -> Iterator[str]:
    read = 0
    for batch in pq.ParquetFile(path).iter_batches(columns=[text_column], batch_size=256):
        for value in batch.column(0).to_pylist():  # (rows,) str | None
            text = value if isinstance(value, str) else ""
            yield text
            read += len(text)
            if read >= max_chars:
                return
