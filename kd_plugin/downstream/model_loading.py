"""The model being evaluated, from a name: a transformers directory (e.g. a distilled student), a teacher catalogue
name (``bert-tiny``, ``minilm-l6``, ``random-tiny``) or a hub id (online only).

Fine-tuning loads it with ``AutoModelForSequenceClassification`` (a BERT teacher gets a new pooler and classifier,
a DistilBERT student a new ``pre_classifier`` and classifier; both are reported as newly initialised); the
size/speed report loads only the encoder (``AutoModel``), so teacher and student are compared without heads.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import transformers
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    PreTrainedModel,
)

import kd_plugin.preparation  # noqa: F401  (registers bert-tiny-prepared / minilm-l6-prepared in the catalogue)
from kd_plugin.errors import ConfigError
from kd_plugin.teacher_catalogue import RANDOM_TINY_CONFIG, TEACHERS, TeacherSource, resolve_teacher

ALLOWED_MODELS = f"{', '.join(TEACHERS.names())}, a transformers model directory, or a hub id when online"


@dataclass(frozen=True)
class LoadedModel:
    model: PreTrainedModel
    tokenizer: object
    source: TeacherSource
    newly_initialised: list[str] = field(default_factory=list)  # parameters not in the checkpoint

    @property
    def accepts_token_type_ids(self) -> bool:
        """DistilBERT has no token types: only pass them to models whose forward names them."""
        return "token_type_ids" in inspect.signature(self.model.forward).parameters


def resolve_model(name_or_path: str, key: str = "model") -> TeacherSource:
    """Catalogue name, directory or hub id -> where to load from; a ConfigError on ``key`` otherwise."""
    if not isinstance(name_or_path, str) or not name_or_path:
        raise ConfigError(key, f"{name_or_path!r} is not a model name or directory", ALLOWED_MODELS)
    try:
        return resolve_teacher(name_or_path)
    except ConfigError as err:
        raise ConfigError(key, err.problem, err.allowed) from None


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """No load report and no progress bar per model: the newly initialised names are returned instead."""
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(verbosity)
        transformers.utils.logging.enable_progress_bar()


def _random_config(tokenizer, seed: int, **extra) -> BertConfig:
    torch.manual_seed(seed)
    return BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **RANDOM_TINY_CONFIG, **extra)


def _load(source: TeacherSource, key: str, loader):
    try:
        with _quiet_loading():
            return loader()
    except (OSError, ValueError) as err:  # no such dir / hub offline; no config or tokenizer in the dir
        raise ConfigError(key, f"cannot load {source.name!r}: {err}", ALLOWED_MODELS) from None


def load_classifier(source: TeacherSource, label_names: list[str], seed: int, key: str = "model") -> LoadedModel:
    """A sequence classifier over ``label_names`` (new head initialised with ``seed``) and its tokenizer."""
    id2label = dict(enumerate(label_names))
    label2id = {name: i for i, name in id2label.items()}

    def loader() -> LoadedModel:
        tokenizer = AutoTokenizer.from_pretrained(source.path)
        if source.name == "random-tiny":
            config = _random_config(tokenizer, seed, num_labels=len(label_names), id2label=id2label, label2id=label2id)
            model = BertForSequenceClassification(config)
            return LoadedModel(model, tokenizer, source, ["(all: random-tiny)"])
        torch.manual_seed(seed)
        model, info = AutoModelForSequenceClassification.from_pretrained(
            source.path, num_labels=len(label_names), id2label=id2label, label2id=label2id,
            ignore_mismatched_sizes=True, output_loading_info=True,
        )
        new = sorted(set(info["missing_keys"]) | {k for k, *_ in info.get("mismatched_keys", ())})
        return LoadedModel(model, tokenizer, source, new)

    return _load(source, key, loader)


def load_finetuned_classifier(path: str, label_names: list[str], key: str) -> LoadedModel:
    """A classifier already fine-tuned on the task (a given teacher): its label count must match."""
    source = resolve_model(path, key)

    def loader() -> LoadedModel:
        tokenizer = AutoTokenizer.from_pretrained(source.path)
        model = AutoModelForSequenceClassification.from_pretrained(source.path)
        return LoadedModel(model, tokenizer, source)

    loaded = _load(source, key, loader)
    if loaded.model.config.num_labels != len(label_names):
        raise ConfigError(key, f"{path!r} predicts {loaded.model.config.num_labels} classes, the task has "
                          f"{len(label_names)} ({', '.join(label_names)})", "a classifier fine-tuned on this task")
    return loaded


def load_encoder(source: TeacherSource, seed: int = 0, key: str = "model") -> LoadedModel:
    """The bare encoder and its tokenizer, for size and speed measurements.

    No MLM head, no classifier and no pooler: a DistilBERT student has no pooler, and a BERT pooler only serves
    the classification head (the packaged MLM checkpoints do not even hold one), so it is left out of both sides.
    """

    def loader() -> LoadedModel:
        tokenizer = AutoTokenizer.from_pretrained(source.path)
        if source.name == "random-tiny":
            model = BertModel(_random_config(tokenizer, seed), add_pooling_layer=False)
        else:
            model = AutoModel.from_pretrained(source.path)
        if getattr(model, "pooler", None) is not None:
            model.pooler = None
        return LoadedModel(model.eval(), tokenizer, source)

    return _load(source, key, loader)
