"""Text normalisation before tokenization, with counts of what was changed or dropped (to log with the run).

Per document: Unicode NFC; C0/C1 control characters (other than tab, newline, carriage return) replaced by a
space; leading and trailing whitespace stripped. Documents that are then empty (or were missing) are skipped.
U+FFFD REPLACEMENT CHARACTERs are kept (the tokenizer decides what they become) but counted: they are what
undecodable bytes turn into when files are read with ``errors="replace"`` (see :mod:`kd_plugin.data.corpus`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass

import pyarrow.compute as pc
from datasets import Dataset

from kd_plugin.errors import ConfigError

REPLACEMENT_CHAR = "\ufffd"
# C0 and C1 control characters except tab, LF and CR; the pattern is also valid RE2 (pyarrow.compute), so the
# corpus source checks (:mod:`kd_plugin.data.source_checks`) count exactly what cleaning replaces.
CONTROL_CHARS_PATTERN = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"
CONTROL_CHARS = re.compile(CONTROL_CHARS_PATTERN)


@dataclass(frozen=True)
class CleaningStats:
    n_docs_in: int  # documents read
    n_docs: int  # documents kept (non-empty after cleaning)
    n_empty_skipped: int  # empty or whitespace-only documents dropped
    n_replaced_chars: int  # U+FFFD in kept text (undecodable bytes)
    n_control_chars: int  # control characters replaced by a space

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def normalize_text(text: str | None) -> tuple[str, int, int]:
    """Return (clean text, number of U+FFFD in it, number of control characters replaced)."""
    if not text:
        return "", 0, 0
    text = unicodedata.normalize("NFC", text)
    text, n_control = CONTROL_CHARS.subn(" ", text)
    text = text.strip()
    return text, text.count(REPLACEMENT_CHAR), n_control


def clean_documents(texts: list[str | None]) -> list[str]:
    """The clean text of each document (:func:`normalize_text`), as the tokenizer reads it."""
    return [normalize_text(t)[0] for t in texts]


def _survey_batch(batch: dict[str, list], indices: list[int], add_doc_id: bool,
                  split_key: Callable[[str], float]) -> dict[str, list]:
    cleaned = [normalize_text(t) for t in batch["text"]]
    out = {
        "kept": [len(c[0]) > 0 for c in cleaned],
        "split_key": [split_key(c[0]) for c in cleaned],
        "n_replaced": [c[1] for c in cleaned],
        "n_control": [c[2] for c in cleaned],
    }
    if add_doc_id:
        out["doc_id"] = [str(i) for i in indices]
    return out


def survey_corpus(
    dataset: Dataset,
    split_key: Callable[[str], float],
    cache_file_name: str | None = None,
    num_proc: int = 1,
    new_fingerprint: str | None = None,
) -> tuple[Dataset, CleaningStats]:
    """One pass over the corpus that cleans every document and writes no text: what tokenizing needs to know.

    Returns one row per input document (``kept``: non-empty after cleaning; ``split_key``: ``split_key`` of the
    clean text, which decides the held-out split; the counts; ``doc_id`` = the row index as str when the input
    has none, so that later stages can tell documents apart) and the corpus's counts. The text itself is cleaned
    again, batch by batch, where it is tokenized (:func:`clean_documents`): a second copy of the corpus on disk
    would cost more than normalising it twice (NFC and one regex, a few percent of tokenizing).
    """
    if "text" not in dataset.column_names:
        raise ConfigError(
            "data.text_column", "the corpus has no 'text' column", ", ".join(dataset.column_names)
        )
    facts = dataset.map(
        _survey_batch,
        batched=True,
        with_indices=True,
        remove_columns=dataset.column_names,
        fn_kwargs={"add_doc_id": "doc_id" not in dataset.column_names, "split_key": split_key},
        num_proc=num_proc if num_proc > 1 else None,
        cache_file_name=cache_file_name,
        new_fingerprint=new_fingerprint,
        desc="cleaning",
    )
    # counts straight from the Arrow columns: no Python list of the corpus
    n_in = len(facts)
    n_docs = int(pc.sum(facts.data.column("kept")).as_py() or 0)
    stats = CleaningStats(
        n_docs_in=n_in,
        n_docs=n_docs,
        n_empty_skipped=n_in - n_docs,
        n_replaced_chars=int(pc.sum(facts.data.column("n_replaced")).as_py() or 0),
        n_control_chars=int(pc.sum(facts.data.column("n_control")).as_py() or 0),
    )
    return facts, stats
