"""Text normalisation before tokenization, with counts of what was changed or dropped (to log with the run).

Per document: Unicode NFC; C0/C1 control characters (other than tab, newline, carriage return) replaced by a
space; leading and trailing whitespace stripped. Documents that are then empty (or were missing) are skipped.
U+FFFD REPLACEMENT CHARACTERs are kept (the tokenizer decides what they become) but counted: they are what
undecodable bytes turn into when files are read with ``errors="replace"`` (see :mod:`kd_plugin.data.corpus`).
"""

from __future__ import annotations

import re
import unicodedata
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


def _clean_batch(batch: dict[str, list], indices: list[int], add_doc_id: bool) -> dict[str, list]:
    cleaned = [normalize_text(t) for t in batch["text"]]
    out = {
        "text": [c[0] for c in cleaned],
        "_n_replaced": [c[1] for c in cleaned],
        "_n_control": [c[2] for c in cleaned],
    }
    if add_doc_id:
        out["doc_id"] = [str(i) for i in indices]
    return out


def _non_empty(texts: list[str]) -> list[bool]:
    return [len(t) > 0 for t in texts]


def clean_corpus(
    dataset: Dataset,
    cache_file_name: str | None = None,
    num_proc: int = 1,
    new_fingerprint: str | None = None,
) -> tuple[Dataset, CleaningStats]:
    """Normalise ``text``, drop empty documents, and count what happened.

    Adds a ``doc_id`` column (row index as str) when the input has none, so that later stages can tell
    documents apart. With ``cache_file_name`` the result is written to that Arrow file (memory-mapped) even
    for an in-memory input; otherwise ``datasets`` decides (its cache for file-backed inputs).
    """
    if "text" not in dataset.column_names:
        raise ConfigError(
            "data.text_column", "the corpus has no 'text' column", ", ".join(dataset.column_names)
        )
    add_doc_id = "doc_id" not in dataset.column_names
    mapped = dataset.map(
        _clean_batch,
        batched=True,
        with_indices=True,
        fn_kwargs={"add_doc_id": add_doc_id},
        num_proc=num_proc if num_proc > 1 else None,
        cache_file_name=cache_file_name,
        new_fingerprint=new_fingerprint,
        desc="cleaning",
    )
    # counts straight from the Arrow columns: no Python list of the corpus
    n_in = len(mapped)
    n_replaced = int(pc.sum(mapped.data.column("_n_replaced")).as_py() or 0)
    n_control = int(pc.sum(mapped.data.column("_n_control")).as_py() or 0)
    kept = mapped.filter(
        _non_empty,
        input_columns="text",
        batched=True,
        num_proc=num_proc if num_proc > 1 else None,
        cache_file_name=None if cache_file_name is None else cache_file_name + ".indices",
        desc="skipping empty documents",
    ).remove_columns(["_n_replaced", "_n_control"])
    stats = CleaningStats(
        n_docs_in=n_in,
        n_docs=len(kept),
        n_empty_skipped=n_in - len(kept),
        n_replaced_chars=n_replaced,
        n_control_chars=n_control,
    )
    return kept, stats
