"""The distillation experiment's config, parsed once into frozen, validated blocks.

``DistillConfig.from_dict(config)`` is called at the Sacred boundary (``experiments/distill.py``'s config hook
and main function) and by the benchmark; everything below it (trainer, model assembly, data stream, engine)
takes the typed object and never looks a string key up again. Every check raises ``ConfigError`` under the key
the user types (``alpha_ce``, ``batch.micro_batch_size``, ``loss_options.cos.layers``, ...).

Blocks and the user's keys::

    seed, teacher                                    top level
    student.*           StudentSettings               layer strategy, n_layers, token types, dropout
    T, alpha_*, loss_weights, loss_options            MixtureDeclaration (kd_plugin.losses)
    masking.*           MaskingConfig                 (kd_plugin.masking)
    data.*              DataSettings
    batch.*             BatchSettings -> BatchPlan    (kd_plugin.config.batch)
    optim.*             OptimSettings
    deepspeed_config    DeepSpeedSettings             (kd_plugin.config.deepspeed)
    performance.*       PerformanceSettings           how fast, never what is computed
    max_steps | epochs, stop_at_step, log_every, checkpoint_every, output_dir, resume, progress_bar,
    eval_max_sequences                               top level (RunSettings)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from kd_plugin import validation as values
from kd_plugin.config.batch import BATCH_KEYS, BatchSettings
from kd_plugin.config.deepspeed import DeepSpeedSettings
from kd_plugin.config.optim import OptimSettings
from kd_plugin.config.resume import find_checkpoint_dir
from kd_plugin.data.corpus_sources import check_sample_by
from kd_plugin.data.text_checks import TEXT_CHECKS
from kd_plugin.errors import ConfigError
from kd_plugin.losses import LOSS_TERMS, MixtureDeclaration
from kd_plugin.losses.term import OPTIONS_KEY, WEIGHTS_KEY
from kd_plugin.masking import MaskingConfig
from kd_plugin.student.architectures import STUDENT_ARCHITECTURES
from kd_plugin.student.layer_selection import LAYER_STRATEGIES

# The paper's four terms and DistilGPT2's causal-LM term keep the names of the public code's command line
# (alpha_ce, ..., alpha_clm); the registry's other terms are weighted under loss_weights.<term>.
ALPHA_KEYS = {"alpha_ce": "ce", "alpha_mlm": "mlm", "alpha_clm": "clm", "alpha_cos": "cos", "alpha_mse": "mse"}
ATTENTION_IMPLEMENTATIONS = ("auto", "sdpa", "eager")
PAD_TOKENS = ("eos",)  # data.pad_token: what pads a tokenizer that has no pad token (null = its own)


@dataclass(frozen=True)
class StudentSettings:
    architecture: str  # distilbert | same (the teacher's own class): kd_plugin.student.architectures
    n_layers: int | None  # null = half the teacher's layers
    layers: str | tuple[int, ...]  # a strategy name or explicit teacher layer indices
    fold_token_type_embedding: bool
    dropout: float | None  # null = the teacher's dropout

    @classmethod
    def from_dict(cls, student: Mapping[str, Any]) -> StudentSettings:
        layers = student.get("layers")
        if isinstance(layers, (list, tuple)):
            layers = tuple(values.integer(i, "student.layers", minimum=0) for i in layers)
        else:
            if layers not in LAYER_STRATEGIES:
                raise ConfigError("student.layers", f"unknown layer strategy {layers!r}",
                                  ", ".join(LAYER_STRATEGIES.names()) + ", or a sorted list of teacher layer indices")
        return cls(
            architecture=values.choice(student.get("architecture", "distilbert"), "student.architecture",
                                       STUDENT_ARCHITECTURES.names()),
            n_layers=values.integer(student.get("n_layers"), "student.n_layers", allow_none=True),
            layers=layers,
            fold_token_type_embedding=values.flag(student.get("fold_token_type_embedding"),
                                                  "student.fold_token_type_embedding"),
            dropout=values.number(student.get("dropout"), "student.dropout", 0.0, 1.0, high_open=True,
                                  allow_none=True),
        )


@dataclass(frozen=True)
class DataSettings:
    corpus: str  # packaged corpus name, local .txt/.jsonl/.parquet, or hub dataset id
    max_seq_length: int
    held_out_fraction: float
    max_documents: int | None
    sample_by: str
    text_column: str
    encoding: str  # how local .txt/.jsonl/.json files are decoded (Python codec name); utf-8 for other sources
    cache_dir: Path
    pad_token: str | None  # null = the tokenizer's own; "eos" = pad with its end-of-text token
    text_checks: str  # refuse | warn | off: a corpus sample the teacher's tokenizer makes garbage of (text_checks)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataSettings:
        max_len = values.integer(data.get("max_seq_length"), "data.max_seq_length", minimum=8, maximum=512)
        return cls(
            corpus=values.text(data.get("corpus"), "data.corpus", what="a corpus name or path"),
            max_seq_length=max_len,
            held_out_fraction=values.number(data.get("held_out_fraction"), "data.held_out_fraction", 0.0, 1.0,
                                            high_open=True),
            max_documents=values.integer(data.get("max_documents"), "data.max_documents", allow_none=True),
            sample_by=check_sample_by(data.get("sample_by")),
            text_column=values.text(data.get("text_column"), "data.text_column", what="a column name"),
            encoding=values.text(data.get("encoding", "utf-8"), "data.encoding", what="a text encoding name"),
            cache_dir=Path(values.text(data.get("cache_dir"), "data.cache_dir", what="a directory")),
            pad_token=None if data.get("pad_token") is None else values.choice(data.get("pad_token"),
                                                                               "data.pad_token", PAD_TOKENS),
            text_checks=values.choice(data.get("text_checks", "refuse"), "data.text_checks", TEXT_CHECKS),
        )


@dataclass(frozen=True)
class PerformanceSettings:
    """How fast the same computation runs; none of these changes a loss value beyond float rounding."""

    attn_implementation: str  # auto = sdpa, or eager when a loss term reads attention probabilities
    logit_chunk_rows: int | None  # rows per chunk of the logit-level losses (memory); null = all at once
    compile: bool  # torch.compile the student's and the frozen teacher's forward
    prefetch_batches: int  # micro-batches prepared ahead by a background thread (0 = in the loop)
    pin_memory: str  # auto (on CUDA), true, false
    pad_to_multiple_of: int | None  # null = 8 on CUDA (tensor cores, fewer shapes), 1 on CPU
    profile_phases: bool  # synchronised per-phase timing (slows the loop; for the benchmark)

    @classmethod
    def from_dict(cls, performance: Mapping[str, Any]) -> PerformanceSettings:
        pin = performance.get("pin_memory")
        if pin not in ("auto", True, False):
            raise ConfigError("performance.pin_memory", f"{pin!r}", "auto, true, false")
        return cls(
            attn_implementation=values.choice(performance.get("attn_implementation"),
                                              "performance.attn_implementation", ATTENTION_IMPLEMENTATIONS),
            logit_chunk_rows=values.integer(performance.get("logit_chunk_rows"), "performance.logit_chunk_rows",
                                            allow_none=True),
            compile=values.flag(performance.get("compile"), "performance.compile"),
            prefetch_batches=values.integer(performance.get("prefetch_batches"), "performance.prefetch_batches",
                                            minimum=0, maximum=64),
            pin_memory=str(pin).lower(),
            pad_to_multiple_of=values.integer(performance.get("pad_to_multiple_of"),
                                              "performance.pad_to_multiple_of", maximum=128, allow_none=True),
            profile_phases=values.flag(performance.get("profile_phases"), "performance.profile_phases"),
        )


@dataclass(frozen=True)
class RunSettings:
    """How long, how often: the schedule length and the step callbacks' periods."""

    max_steps: int | None
    epochs: float | None
    stop_at_step: int | None
    log_every: int
    checkpoint_every: int | None
    checkpoint_keep: int  # the newest N checkpoints are kept, older ones deleted
    monitors: tuple[str, ...]  # DeepSpeed monitors fed every logged metric: tensorboard, csv_monitor, wandb
    output_dir: Path | None
    resume: Path | None  # the checkpoints folder to continue from (checked to hold one)
    progress_bar: bool
    eval_max_sequences: int | None

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> RunSettings:
        if (cfg.get("max_steps") is None) == (cfg.get("epochs") is None):
            raise ConfigError("max_steps", "set exactly one of max_steps and epochs (the other null)",
                              "max_steps >= 1 with epochs=null, or epochs > 0 with max_steps=null")
        output_dir, resume = cfg.get("output_dir"), cfg.get("resume")
        return cls(
            max_steps=values.integer(cfg.get("max_steps"), "max_steps", allow_none=True),
            epochs=values.number(cfg.get("epochs"), "epochs", 0.0, 1000.0, low_open=True, allow_none=True),
            stop_at_step=values.integer(cfg.get("stop_at_step"), "stop_at_step", allow_none=True),
            log_every=values.integer(cfg.get("log_every"), "log_every"),
            checkpoint_every=values.integer(cfg.get("checkpoint_every"), "checkpoint_every", allow_none=True),
            checkpoint_keep=values.integer(cfg.get("checkpoint_keep", 2), "checkpoint_keep"),
            monitors=_monitors(cfg.get("monitors", [])),
            output_dir=None if output_dir is None else Path(values.text(output_dir, "output_dir", what="a directory")),
            resume=None if resume is None else find_checkpoint_dir(values.text(resume, "resume",
                                                                              what="a checkpoint directory")),
            progress_bar=values.flag(cfg.get("progress_bar", True), "progress_bar"),
            eval_max_sequences=values.integer(cfg.get("eval_max_sequences"), "eval_max_sequences", minimum=0,
                                              allow_none=True),
        )


MONITORS = ("tensorboard", "csv_monitor", "wandb")


def _monitors(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError("monitors", f"{value!r} is not a list", f"a list of {', '.join(MONITORS)}")
    return tuple(values.choice(v, "monitors", MONITORS) for v in value)


def mixture_declaration(cfg: Mapping[str, Any]) -> MixtureDeclaration:
    """``T``, ``alpha_*`` (the paper's names) and ``loss_weights`` / ``loss_options`` for the registry's terms."""
    weights, keys = {}, {}
    for key, term in ALPHA_KEYS.items():
        weights[term], keys[term] = cfg.get(key), key
    extra = cfg.get(WEIGHTS_KEY) or {}
    if not isinstance(extra, Mapping):
        raise ConfigError(WEIGHTS_KEY, f"{extra!r} is not a mapping", "{term: weight}")
    for name, weight in extra.items():
        if name in weights:
            raise ConfigError(f"{WEIGHTS_KEY}.{name}", f"'{name}' is already set by alpha_{name}",
                              "terms other than ce, mlm, cos, mse")
        weights[name] = weight
    options = cfg.get(OPTIONS_KEY) or {}
    if not isinstance(options, Mapping) or not all(isinstance(o, Mapping) for o in options.values()):
        raise ConfigError(OPTIONS_KEY, f"{options!r} is not a mapping of mappings", "{term: {option: value}}")
    declaration = MixtureDeclaration(weights=weights, temperature=cfg.get("T"),
                                     options={name: dict(opts) for name, opts in options.items()}, weight_keys=keys,
                                     all_weights_key="alpha_* / loss_weights")
    declaration.validate()
    return declaration


def declarable_loss_config() -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """Defaults for the experiment config: every registered term's weight (0 = off) and options, so
    ``with loss_weights.hidden_mse=1 loss_options.ce.rows=masked`` works and ``print_config`` lists them."""
    from kd_plugin.losses.term import default_options

    weights = {name: 0.0 for name in LOSS_TERMS.names() if name not in ALPHA_KEYS.values()}
    options = {name: default_options(LOSS_TERMS.get(name)) for name in LOSS_TERMS.names()}
    return weights, {name: opts for name, opts in options.items() if opts}


@dataclass(frozen=True)
class DistillConfig:
    seed: int
    teacher: str
    student: StudentSettings
    loss: MixtureDeclaration
    masking: MaskingConfig
    data: DataSettings
    batch: BatchSettings
    optim: OptimSettings
    deepspeed: DeepSpeedSettings
    performance: PerformanceSettings
    run: RunSettings
    raw: Mapping[str, Any] = field(repr=False, compare=False)  # the config as given (for the run's digest)

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> DistillConfig:
        """Parse and validate everything that needs no model (the teacher's checks: ``check_against_teacher``)."""
        return cls(
            seed=values.integer(cfg.get("seed"), "seed", minimum=0, maximum=2**32 - 1),  # numpy's seed range
            teacher=values.text(cfg.get("teacher"), "teacher", what="a catalogue name, directory or hub id"),
            student=StudentSettings.from_dict(values.block(cfg, "student", StudentSettings.__dataclass_fields__)),
            loss=mixture_declaration(cfg),
            masking=MaskingConfig.from_dict(values.block(cfg, "masking", MaskingConfig.__dataclass_fields__)),
            data=DataSettings.from_dict(values.block(cfg, "data", DataSettings.__dataclass_fields__)),
            batch=BatchSettings.from_dict(values.block(cfg, "batch", BATCH_KEYS)),
            optim=OptimSettings.from_dict(values.block(cfg, "optim", OptimSettings.__dataclass_fields__)),
            deepspeed=DeepSpeedSettings.from_path(values.text(cfg.get("deepspeed_config"), "deepspeed_config",
                                                              what="a JSON file")),
            performance=PerformanceSettings.from_dict(
                values.block(cfg, "performance", PerformanceSettings.__dataclass_fields__)),
            run=RunSettings.from_dict(cfg),
            raw=MappingProxyType(dict(cfg)),
        )
