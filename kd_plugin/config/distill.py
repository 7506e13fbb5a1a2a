"""The distillation experiment's config, parsed once into frozen, validated blocks.

``DistillConfig.from_dict(config)`` is called at the Sacred boundary (``experiments/distill.py``'s config hook
and main function) and by the benchmark; everything below it (trainer, model assembly, data stream, engine)
takes the typed object and never looks a string key up again. Every check raises ``ConfigError`` under the key
the user types (``alpha_ce``, ``batch.micro_batch_size``, ``loss_options.cos.layers``, ...).

Each setting is declared once (:mod:`kd_plugin.config.declarations`): its block's dataclass field holds its
default, one-line doc and check; the experiment's Sacred defaults and ``print_config`` comments
(:func:`distill_defaults`, :func:`distill_docs`), each ``from_dict``'s parse and the README table check are
derived from ``DISTILL_BLOCKS``.

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
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any

from kd_plugin import validation as values
from kd_plugin.config.batch import BATCH, BatchSettings
from kd_plugin.config.declarations import (
    Block,
    Setting,
    bookkeeping_keys,
    flat_docs,
    nested_defaults,
    setting,
)
from kd_plugin.config.deepspeed import DeepSpeedSettings
from kd_plugin.config.optim import OPTIM, OptimSettings
from kd_plugin.data.corpus_sources import check_sample_by
from kd_plugin.data.text_checks import TEXT_CHECKS
from kd_plugin.errors import ConfigError
from kd_plugin.losses import LOSS_TERMS, MixtureDeclaration
from kd_plugin.losses.mixture import check_temperature, check_weight
from kd_plugin.losses.term import OPTIONS_KEY, WEIGHTS_KEY
from kd_plugin.masking import FIELD_DECLARATIONS, MaskingConfig
from kd_plugin.runtime.checkpoint_format import find_checkpoint_dir
from kd_plugin.runtime.paths import CACHE, DS_CONFIGS
from kd_plugin.student.architectures import STUDENT_ARCHITECTURES
from kd_plugin.student.layer_selection import LAYER_STRATEGIES

# The paper's four terms and DistilGPT2's causal-LM term keep the names of the public code's command line
# (alpha_ce, ..., alpha_clm); the registry's other terms are weighted under loss_weights.<term>.
ALPHA_KEYS = {"alpha_ce": "ce", "alpha_mlm": "mlm", "alpha_clm": "clm", "alpha_cos": "cos", "alpha_mse": "mse"}
ATTENTION_IMPLEMENTATIONS = ("auto", "sdpa", "eager")
PAD_TOKENS = ("eos",)  # data.pad_token: what pads a tokenizer that has no pad token (null = its own)
MONITORS = ("tensorboard", "csv_monitor", "wandb")

optional_integer = partial(values.integer, allow_none=True)


def _layers(value: Any, key: str) -> str | tuple[int, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(values.integer(i, key, minimum=0) for i in value)
    if value not in LAYER_STRATEGIES:
        raise ConfigError(key, f"unknown layer strategy {value!r}",
                          ", ".join(LAYER_STRATEGIES.names()) + ", or a sorted list of teacher layer indices")
    return value


@dataclass(frozen=True)
class StudentSettings:
    architecture: str = setting("distilbert", "distilbert (BERT/RoBERTa teachers) | same: the teacher's class, "
                                "fewer blocks", lambda v, k: values.choice(v, k, STUDENT_ARCHITECTURES.names()))
    n_layers: int | None = setting(None, "null = half the teacher's layers", optional_integer)
    layers: str | tuple[int, ...] = setting("alternate", "alternate | distilbert_release | first | last | uniform | "
                                            "random_init | [i, j, ...] (teacher layer indices)", _layers)
    fold_token_type_embedding: bool = setting(True, "add the teacher's token-type-0 row into the position embeddings",
                                              values.flag)
    dropout: float | None = setting(None, "null = the teacher's dropout",
                                    partial(values.number, low=0.0, high=1.0, high_open=True, allow_none=True))
    freeze_position_embeddings: bool = setting(False, "keep the copied position embeddings as they are (the "
                                               "original code's --freeze_pos_embs; not for rotary families)",
                                               values.flag)

    @classmethod
    def from_dict(cls, student: Mapping[str, Any]) -> StudentSettings:
        return cls(**STUDENT.parse(student))


def _auto_or_integer(value: Any, key: str, maximum: int | None = None,
                     allow_none: bool = False) -> int | str | None:
    """``"auto"`` (resolved where the machine or the model is known), an integer >= 1 (or null when allowed)."""
    if value == "auto" or (value is None and allow_none):
        return value
    try:
        return values.integer(value, key, maximum=maximum)
    except ConfigError as err:
        allowed = f"auto, null or {err.allowed}" if allow_none else f"auto or {err.allowed}"
        raise ConfigError(key, err.problem, allowed) from None


def _pad_token(value: Any, key: str) -> str | None:
    return None if value is None else values.choice(value, key, PAD_TOKENS)


@dataclass(frozen=True)
class DataSettings:
    corpus: str = setting("wiki_leads", "packaged corpus name, local .txt/.jsonl/.parquet path, or hub dataset id",
                          partial(values.text, what="a corpus name or path"))
    max_seq_length: int = setting(128, "longer documents are split into several sequences, never dropped",
                                  partial(values.integer, minimum=8, maximum=512))
    held_out_fraction: float = setting(0.02, "documents held out for evaluation, by a hash of their text "
                                       "(seed-independent)",
                                       partial(values.number, low=0.0, high=1.0, high_open=True))
    max_documents: int | None = setting(None, "use only the first N documents (quick runs)", optional_integer)
    sample_by: str = setting("line", "how local .txt files are cut into documents: line | paragraph",
                             lambda v, k: check_sample_by(v))
    text_column: str = setting("text", "the text field of a local .jsonl/.parquet file or hub dataset",
                               partial(values.text, what="a column name"))
    encoding: str = setting("utf-8", "how local .txt/.jsonl/.json files are decoded, e.g. latin-1 (parquet, "
                            "packaged, hub: utf-8)", partial(values.text, what="a text encoding name"))
    cache_dir: Path = setting(str(CACHE / "datasets"), "where tokenized datasets are cached",
                              lambda v, k: Path(values.text(v, k, what="a directory")), bookkeeping=True)
    pad_token: str | None = setting(None, "null = the tokenizer's own; eos: pad with its end-of-text token "
                                    "(GPT-2, Llama have none)", _pad_token)
    text_checks: str = setting("refuse", "a corpus sample the teacher's tokenizer makes garbage of (unknown tokens, "
                               "[MASK]-style markup, mis-decoded words): refuse | warn | off",
                               partial(values.choice, choices=TEXT_CHECKS))
    num_proc: int | str = setting("auto", "processes that clean and tokenize the corpus: auto = the usable cores "
                                  "from 50,000 documents on, else 1 (the result is the same for any value)",
                                  partial(_auto_or_integer, maximum=512), bookkeeping=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataSettings:
        return cls(**DATA.parse(data))


def _pin_memory(value: Any, key: str) -> str:
    if value not in ("auto", True, False):
        raise ConfigError(key, f"{value!r}", "auto, true, false")
    return str(value).lower()


@dataclass(frozen=True)
class PerformanceSettings:
    """How fast the same computation runs; none of these changes a loss value beyond float rounding."""

    attn_implementation: str = setting("auto", "auto = fused SDPA, eager when a loss term reads attention "
                                       "probabilities", partial(values.choice, choices=ATTENTION_IMPLEMENTATIONS))
    logit_chunk_rows: int | str | None = setting("auto", "rows per chunk of the logit losses (bounds fp32 "
                                                 "temporaries): auto = about 8 MiB each on CPU (cache-sized), "
                                                 "1024 rows on CUDA; null = all at once",
                                                 partial(_auto_or_integer, allow_none=True))
    fuse_logit_rows: bool = setting(True, "one shared pass over the logits for the terms over all tokens (ce, clm, "
                                    "mse); false = each term on its own (the reference path)", values.flag)
    fuse_lm_head: bool = setting(True, "the vocabulary projection runs inside the logit losses, chunk by chunk, so "
                                 "no full logits tensor exists (ZeRO-3 and fp16 run the models' own heads); false = "
                                 "the heads' full logits (the reference path)", values.flag)
    compile: bool = setting(False, "torch.compile the student's and the teacher's forward", values.flag)
    prefetch_batches: int = setting(2, "micro-batches collated and masked ahead by a background thread "
                                    "(0 = in the loop)", partial(values.integer, minimum=0, maximum=64))
    pin_memory: str = setting("auto", "pinned host batches for asynchronous copies: auto = on CUDA", _pin_memory)
    pad_to_multiple_of: int | None = setting(None, "null = 8 on CUDA (tensor-core shapes), 1 on CPU",
                                             partial(values.integer, maximum=128, allow_none=True))
    profile_phases: bool = setting(False, "synchronised per-phase timing into the run's info (slower; for "
                                   "profiling)", values.flag)

    @classmethod
    def from_dict(cls, performance: Mapping[str, Any]) -> PerformanceSettings:
        return cls(**PERFORMANCE.parse(performance))


def _monitors(value: Any, key: str = "monitors") -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(key, f"{value!r} is not a list", f"a list of {', '.join(MONITORS)}")
    return tuple(values.choice(v, key, MONITORS) for v in value)


def _directory(value: Any, key: str) -> Path | None:
    return None if value is None else Path(values.text(value, key, what="a directory"))


def _resume(value: Any, key: str) -> Path | None:
    return None if value is None else find_checkpoint_dir(values.text(value, key, what="a checkpoint directory"))


@dataclass(frozen=True)
class RunSettings:
    """How long, how often: the schedule length and the step callbacks' periods."""

    max_steps: int | None = setting(150, "optimizer steps; or set epochs (and max_steps=None). 150 x 16 sequences: "
                                    "~5 min on 2 cores", optional_integer)
    epochs: float | None = setting(None, "passes over the training documents, instead of max_steps (null)",
                                   partial(values.number, low=0.0, high=1000.0, low_open=True, allow_none=True))
    stop_at_step: int | None = setting(None, "end this run early at this step (schedule still planned for "
                                       "max_steps); resume later", optional_integer)
    log_every: int = setting(10, "optimizer steps between logged metric points", values.integer, bookkeeping=True)
    checkpoint_every: int | None = setting(100, "optimizer steps between checkpoints (null = only at the end)",
                                           optional_integer, bookkeeping=True)
    checkpoint_keep: int = setting(2, "keep the newest N checkpoints (older ones are deleted; the final one is "
                                   "always kept)", values.integer, bookkeeping=True)
    monitors: tuple[str, ...] = setting([], "DeepSpeed monitors that also get every logged metric: "
                                        + ", ".join(MONITORS), _monitors, bookkeeping=True)
    output_dir: Path | None = setting(None, "null = outputs/distill/<time>-<config hash>", _directory,
                                      bookkeeping=True)
    resume: Path | None = setting(None, "a <output_dir>/checkpoints directory to continue from", _resume,
                                  bookkeeping=True)
    progress_bar: bool = setting(True, "a tqdm bar; False: one plain log line per log point (for log files)",
                                 values.flag, bookkeeping=True)
    eval_max_sequences: int | None = setting(1000, "held-out sequences for the final masked-token accuracy of "
                                             "teacher and student (0 = skip)",
                                             partial(values.integer, minimum=0, allow_none=True))

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> RunSettings:
        if (cfg.get("max_steps") is None) == (cfg.get("epochs") is None):
            raise ConfigError("max_steps", "set exactly one of max_steps and epochs (the other null)",
                              "max_steps >= 1 with epochs=null, or epochs > 0 with max_steps=null")
        run = cls(**RUN.parse(cfg))
        if run.stop_at_step is not None and run.max_steps is not None and run.stop_at_step > run.max_steps:
            raise ConfigError("stop_at_step", f"{run.stop_at_step} is after the schedule's last step "
                              f"({run.max_steps}): the run would end at max_steps, not stop early",
                              f"an integer in 1..{run.max_steps - 1}, or null")
        return run


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


def _deepspeed(value: Any, key: str) -> DeepSpeedSettings:
    return DeepSpeedSettings.from_path(values.text(value, key, what="a JSON file"))


@dataclass(frozen=True)
class DistillConfig:
    seed: int = setting(42, "one seed for every rank: data order, masking, student init, dropout",
                        partial(values.integer, minimum=0, maximum=2**32 - 1))  # numpy's seed range
    teacher: str = setting("bert-tiny-prepared", "catalogue name (bert-tiny-prepared, minilm-l6-prepared, bert-tiny, "
                           "random-tiny, ...), a local directory, or a hub id when online",
                           partial(values.text, what="a catalogue name, directory or hub id"))
    student: StudentSettings
    loss: MixtureDeclaration
    masking: MaskingConfig
    data: DataSettings
    batch: BatchSettings
    optim: OptimSettings
    deepspeed: DeepSpeedSettings = setting(str(DS_CONFIGS / "zero2.json"), "DeepSpeed's own JSON: ZeRO stage, "
                                           "offload, precision (ds_configs/README.md)", _deepspeed)
    performance: PerformanceSettings
    run: RunSettings
    raw: Mapping[str, Any] = field(repr=False, compare=False)  # the config as given (for the run's digest)

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> DistillConfig:
        """Parse and validate everything that needs no model (the teacher's checks: ``check_against_teacher``)."""
        top = TOP.parse(cfg)
        return cls(
            seed=top["seed"],
            teacher=top["teacher"],
            student=StudentSettings.from_dict(values.block(cfg, "student", STUDENT.names())),
            loss=mixture_declaration(cfg),
            masking=MaskingConfig.from_dict(values.block(cfg, "masking", MASKING.names())),
            data=DataSettings.from_dict(values.block(cfg, "data", DATA.names())),
            batch=BatchSettings.from_dict(values.block(cfg, "batch", BATCH.names())),
            optim=OptimSettings.from_dict(values.block(cfg, "optim", OPTIM.names())),
            deepspeed=top["deepspeed_config"],
            performance=PerformanceSettings.from_dict(values.block(cfg, "performance", PERFORMANCE.names())),
            run=RunSettings.from_dict(cfg),
            raw=MappingProxyType(dict(cfg)),
        )


# Every distill setting, declared once: a block's dataclass fields above (their ``setting(...)``), or records
# where the parse is another package's (the loss mixture: kd_plugin.losses; masking: kd_plugin.masking).
EXTRA_LOSS_WEIGHTS, LOSS_OPTIONS = declarable_loss_config()
TOP = Block.of("", "the teacher, the seed and the DeepSpeed file", DistillConfig, deepspeed="deepspeed_config")
LOSS = Block.from_records(
    "", "the loss mixture (checked by kd_plugin.losses' MixtureDeclaration.validate)",
    T=Setting(2.0, "softmax temperature of the soft-target loss (teacher and student), 1 at inference",
              check_temperature),
    alpha_ce=Setting(5.0, "soft-target KL * T^2", check_weight),
    alpha_mlm=Setting(2.0, "masked-LM cross-entropy (masked-LM teachers)", check_weight),
    alpha_clm=Setting(0.0, "causal-LM (next-token) cross-entropy (causal-LM teachers: GPT-2, Llama, Qwen2)",
                      check_weight),
    alpha_cos=Setting(1.0, "cosine alignment of hidden states (last layer unless loss_options.cos.layers)",
                      check_weight),
    alpha_mse=Setting(0.0, "MSE between logits", check_weight),
    loss_weights=Setting(EXTRA_LOSS_WEIGHTS, "the registry's other terms (0 = off), e.g. loss_weights.hidden_mse=1"),
    loss_options=Setting(LOSS_OPTIONS, "per-term options, e.g. loss_options.ce.rows=masked, "
                         "loss_options.cos.layers=[[1,2]]"),
)
MASKING = Block.from_records(  # defaults, checks and docs declared with MaskingConfig (kd_plugin.masking)
    "masking", "dynamic masking of the masked-LM targets (kd_plugin.masking)",
    **{f.name: Setting(f.default, FIELD_DECLARATIONS[f.name][1], FIELD_DECLARATIONS[f.name][0])
       for f in fields(MaskingConfig)})
STUDENT = Block.of("student", "which student: its class, depth, the teacher layers it starts from", StudentSettings)
DATA = Block.of("data", "the corpus, how it is cut into sequences, and the held-out share", DataSettings)
PERFORMANCE = Block.of("performance", "how fast, never what is computed (see README \"Speed\")", PerformanceSettings,
                       bookkeeping=True)
RUN = Block.of("", "how long, how often: schedule length, logging, checkpoints, output", RunSettings)
DISTILL_BLOCKS = (TOP, LOSS, STUDENT, MASKING, DATA, BATCH, OPTIM, PERFORMANCE, RUN)


def distill_defaults() -> dict[str, Any]:
    """The distill experiment's default config (what ``print_config`` shows, less Sacred's ``tracking`` block)."""
    return nested_defaults(DISTILL_BLOCKS)


def distill_bookkeeping_keys() -> frozenset[str]:
    """The distill keys that change no trained weight and no measured number (where outputs go, what is shown,
    how fast): runs that differ only in these may be averaged as seeds (``analysis.seed_groups``)."""
    return bookkeeping_keys(DISTILL_BLOCKS)


def distill_docs() -> dict[str, str]:
    """``{dotted key: one-line doc}`` for every distill setting and block (``print_config``'s comments)."""
    return flat_docs(DISTILL_BLOCKS)
