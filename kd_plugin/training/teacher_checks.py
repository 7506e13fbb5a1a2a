"""Checks that need the teacher's architecture but no weights: run once in the config hook, before compute.

Only the teacher's ``config.json`` is read (a prepared catalogue teacher has its base model's architecture,
:func:`kd_plugin.teacher_catalogue.architecture_source`, so checking it never triggers the preparation). Hub
ids cannot be read offline; they are checked after loading. Checked here: the layer selection against the
teacher's depth, and every loss term against both models' widths, depths and heads (layer pairs,
projections, options); ``data.max_seq_length`` against the teacher's positions and its tokenizer against its
vocabulary (an index past either table fails only at the first forward pass); the cache folder a prepared
teacher that is not cached yet will be written to.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoConfig, AutoTokenizer, PretrainedConfig

from kd_plugin.config import DistillConfig
from kd_plugin.data.padding import check_pad_token
from kd_plugin.errors import ConfigError
from kd_plugin.families import family_of, n_layers_of
from kd_plugin.losses import LossMixture, ModelDims
from kd_plugin.objectives import objective_of
from kd_plugin.preparation.recipes import CACHE_ENV, default_cache_root
from kd_plugin.runtime.writable import check_writable_dir
from kd_plugin.student.architectures import check_architecture
from kd_plugin.student.layer_selection import resolve_n_layers, select_layers
from kd_plugin.teacher_catalogue import PREPARED, architecture_source, is_catalogue_name


def teacher_architecture(name: str) -> PretrainedConfig | None:
    """The teacher's model config (no weights), or None for a hub id (checked once downloaded)."""
    source = architecture_source(name)
    if source.is_random:
        return source.random_architecture()
    if is_catalogue_name(name) or Path(source.path).expanduser().is_dir():
        try:
            return AutoConfig.from_pretrained(source.path)
        except (OSError, ValueError) as err:
            raise ConfigError("teacher", f"cannot read the model config in {source.path}: {err}",
                              "a model directory") from None
    return None


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def check_teacher_directory(name: str, teacher: PretrainedConfig) -> None:
    """A model of a family with an adapter (:mod:`kd_plugin.families`), with weights."""
    family_of(teacher)  # a model type without an adapter: one error naming the supported families
    source = architecture_source(name)
    directory = Path(source.path).expanduser()
    if not is_catalogue_name(name) and directory.is_dir() and not any((directory / f).is_file() for f in WEIGHT_FILES):
        raise ConfigError("teacher", f"{str(directory)!r} has a config.json but no weights",
                          f"a model directory with one of {', '.join(WEIGHT_FILES)}")


def check_prepared_teacher_cache(name: str) -> None:
    """A prepared catalogue teacher is prepared (then cached) by the run that first needs it: its cache folder
    (``$KD_TEACHER_CACHE``) must be a folder that can be written, or the run would stop after minutes."""
    root = default_cache_root()
    if name in PREPARED and not root.is_dir():
        check_writable_dir(root, CACHE_ENV)


def check_against_teacher(config: DistillConfig) -> None:
    check_prepared_teacher_cache(config.teacher)
    teacher = teacher_architecture(config.teacher)
    if teacher is None:
        return
    check_teacher_directory(config.teacher, teacher)
    check_architecture(config.student.architecture, teacher)
    if config.student.freeze_position_embeddings and family_of(teacher).position_embeddings is None:
        raise ConfigError("student.freeze_position_embeddings", f"a {family_of(teacher).name} student has no learned "
                          "position embeddings to freeze (its positions are rotary)", "false for this teacher")
    n_teacher = n_layers_of(teacher)
    copied = select_layers(config.student.layers, config.student.n_layers, n_teacher)
    n_student = len(copied) if copied else resolve_n_layers(config.student.n_layers, n_teacher)
    dims = ModelDims(
        student_hidden_size=teacher.hidden_size,  # DistilBERT students keep the teacher's width
        teacher_hidden_size=teacher.hidden_size,
        student_layers=n_student,
        teacher_layers=n_teacher,
        student_heads=teacher.num_attention_heads,
        teacher_heads=teacher.num_attention_heads,
        objective=family_of(teacher).objective,
    )
    LossMixture(config.loss, dims)  # layer pairs, projections, options; terms the objective cannot use
    check_teacher_tokenizer(config, teacher)


def check_teacher_tokenizer(config: DistillConfig, teacher: PretrainedConfig) -> None:
    """What the objective needs of the tokenizer: a pad token (or ``data.pad_token``), a [MASK] for masked LMs."""
    tokenizer = AutoTokenizer.from_pretrained(architecture_source(config.teacher).path)
    check_pad_token(tokenizer, config.data.pad_token, config.teacher)
    objective = objective_of(teacher)
    if objective.needs_mask_token and tokenizer.mask_token_id is None:
        raise ConfigError("teacher", f"the tokenizer of {config.teacher!r} has no mask token, which {objective.name} "
                          "training needs", "a masked-LM teacher whose tokenizer has a mask token")
    check_teacher_capacity(config, teacher, len(tokenizer))


def usable_positions(teacher: PretrainedConfig) -> int | None:
    """How many tokens one sequence may have: the position embeddings, less RoBERTa's offset (its positions are
    numbered from ``padding_idx + 1``); None for a config without a position limit."""
    positions = getattr(teacher, "max_position_embeddings", None)
    if not isinstance(positions, int):
        return None
    if family_of(teacher).name == "roberta":
        positions -= (teacher.pad_token_id or 0) + 1
    return positions


def check_teacher_capacity(config: DistillConfig, teacher: PretrainedConfig, n_tokens: int) -> None:
    """Sequences fit the teacher's positions and every token id has an embedding row (an index past the table
    would stop the run at the first forward pass, after the corpus was tokenized)."""
    positions = usable_positions(teacher)
    if positions is not None and config.data.max_seq_length > positions:
        raise ConfigError("data.max_seq_length", f"{config.data.max_seq_length} is more than the teacher "
                          f"{config.teacher!r} has positions for ({positions})", f"an integer in 8..{positions}")
    if n_tokens > teacher.vocab_size:
        raise ConfigError("teacher", f"the tokenizer of {config.teacher!r} has {n_tokens} tokens, its model only "
                          f"{teacher.vocab_size} embedding rows (vocab_size)", "a model directory whose tokenizer "
                          "and config.json belong together (len(tokenizer) <= vocab_size)")
