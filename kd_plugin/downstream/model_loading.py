"""The model being evaluated, from a name: a transformers directory (e.g. a distilled student), a teacher catalogue
name (``bert-tiny``, ``minilm-l6``, ``random-tiny``, ``random-tiny-gpt2``) or a hub id (online only).

Fine-tuning loads it with ``AutoModelForSequenceClassification`` (a BERT teacher gets a new pooler and classifier,
a DistilBERT student a new ``pre_classifier`` and classifier, a decoder (GPT-2, Llama) a new ``score`` layer over
its last real token; all are reported as newly initialised); the
size/speed report loads only the encoder (``AutoModel``), so teacher and student are compared without heads.

A model whose weights hold a NaN or inf (say, the student of a distillation that diverged) is refused with one
configuration error on its key: from its files before the run starts (:func:`check_saved_weights`, the finetune
experiment's config hook), and whatever its source once it is loaded.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from safetensors import safe_open
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
)

from kd_plugin.errors import ConfigError
from kd_plugin.preparation import resolve_teacher
from kd_plugin.teacher_catalogue import TeacherSource, catalogue_names, is_catalogue_name
from kd_plugin.training.divergence import check_finite_weights

ALLOWED_MODELS = f"{', '.join(catalogue_names())}, a transformers model directory, or a hub id when online"


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


def _random_config(source: TeacherSource, tokenizer, seed: int, **extra) -> PretrainedConfig:
    """The architecture of a random catalogue model (random-tiny, random-tiny-gpt2), seeded for its weights."""
    torch.manual_seed(seed)
    config = source.random_architecture()
    for name, value in extra.items():
        setattr(config, name, value)
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
    return config


def _with_pad_token(tokenizer, config: PretrainedConfig) -> None:
    """A decoder's tokenizer often has no pad token (GPT-2, Llama): pad with its end-of-text token, as the
    distillation did (``data.pad_token=eos``). The classifier reads each sequence's last real token, which it
    finds by ``config.pad_token_id``, so the config gets the same id."""
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = tokenizer.pad_token_id


def _load(source: TeacherSource, key: str, loader) -> LoadedModel:
    try:
        with _quiet_loading():
            loaded = loader()
    except (OSError, ValueError) as err:  # no such dir / hub offline; no config or tokenizer in the dir
        raise ConfigError(key, f"cannot load {source.name!r}: {err}", ALLOWED_MODELS) from None
    check_finite_weights(loaded.model, key, repr(source.name))  # e.g. the student of a diverged distillation
    return loaded


def weight_files(directory: Path) -> list[Path]:
    """The weight files transformers would read in ``directory`` (safetensors first, else PyTorch pickles;
    every shard of a sharded checkpoint)."""
    for pattern in ("model*.safetensors", "pytorch_model*.bin"):
        files = sorted(directory.glob(pattern))
        if files:
            return files
    return []


def check_saved_weights(name_or_path: str, key: str = "model") -> None:
    """Refuse a model directory whose saved weights hold a NaN or inf, before anything is built or trained.

    Reads the weight files tensor by tensor, without building a model (a catalogue name or hub id has no local
    files here: its weights are checked when loaded). The fine-tuning experiment calls it in its config hook."""
    directory = Path(name_or_path).expanduser()
    if is_catalogue_name(name_or_path) or not directory.is_dir():
        return
    for path in weight_files(directory):
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as f:
                check_finite_weights(((k, f.get_tensor(k)) for k in f.keys()), key, f"{str(directory)!r}")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            check_finite_weights(state.items(), key, f"{str(directory)!r}")


def load_classifier(source: TeacherSource, label_names: list[str], seed: int, key: str = "model") -> LoadedModel:
    """A sequence classifier over ``label_names`` (new head initialised with ``seed``) and its tokenizer."""
    id2label = dict(enumerate(label_names))
    label2id = {name: i for i, name in id2label.items()}

    def loader() -> LoadedModel:
        tokenizer = AutoTokenizer.from_pretrained(source.path)
        labels = dict(num_labels=len(label_names), id2label=id2label, label2id=label2id)
        if source.is_random:
            config = _random_config(source, tokenizer, seed, **labels)
            _with_pad_token(tokenizer, config)
            model = AutoModelForSequenceClassification.from_config(config)
            return LoadedModel(model, tokenizer, source, [f"(all: {source.name})"])
        config = AutoConfig.from_pretrained(source.path, **labels)
        _with_pad_token(tokenizer, config)
        torch.manual_seed(seed)
        model, info = AutoModelForSequenceClassification.from_pretrained(
            source.path, config=config, ignore_mismatched_sizes=True, output_loading_info=True,
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
        _with_pad_token(tokenizer, model.config)
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
        if source.is_random:
            model = AutoModel.from_config(_random_config(source, tokenizer, seed))
        else:
            model = AutoModel.from_pretrained(source.path)
        _with_pad_token(tokenizer, model.config)
        if getattr(model, "pooler", None) is not None:
            model.pooler = None
        return LoadedModel(model.eval(), tokenizer, source)

    return _load(source, key, loader)
