"""The size/speed report: exact parameter counts and a student with fewer layers measured faster."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from transformers import BertConfig, BertForMaskedLM, BertModel, DistilBertConfig, DistilBertModel  # noqa: E402

from kd_plugin.downstream.size_speed import SpeedSettings, compare, count_parameters, size_speed_report  # noqa: E402

TINY = dict(vocab_size=500, hidden_size=64, num_attention_heads=2, intermediate_size=128, max_position_embeddings=64)


def test_parameter_counts_are_exact():
    torch.manual_seed(0)
    model = BertModel(BertConfig(num_hidden_layers=3, **TINY), add_pooling_layer=False)
    counts = count_parameters(model)
    assert counts.total == sum(p.numel() for p in model.parameters())
    embeddings = model.embeddings
    n_embedding = sum(m.weight.numel() for m in (embeddings.word_embeddings, embeddings.position_embeddings,
                                                 embeddings.token_type_embeddings))
    assert counts.embedding == n_embedding == (500 + 64 + 2) * 64
    assert counts.non_embedding == counts.total - n_embedding
    assert counts.to_dict() == {"total": counts.total, "embedding": n_embedding, "non_embedding": counts.total - n_embedding}


def test_tied_weights_are_counted_once():
    model = BertForMaskedLM(BertConfig(num_hidden_layers=1, tie_word_embeddings=True, **TINY))
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    unique = {id(p): p.numel() for p in model.parameters()}
    assert count_parameters(model).total == sum(unique.values())
    naive = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    assert count_parameters(model).total == naive - 500 * 64 - 500  # decoder weight and bias are shared tensors


def test_student_with_fewer_layers_is_faster_and_the_report_has_its_ratios():
    torch.manual_seed(0)
    teacher = BertModel(BertConfig(num_hidden_layers=8, **TINY), add_pooling_layer=False)
    student = DistilBertModel(DistilBertConfig(vocab_size=500, dim=64, n_layers=1, n_heads=2, hidden_dim=128,
                                               max_position_embeddings=64))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # shared cores: one thread keeps the timing stable
    try:
        report = size_speed_report(student, teacher, SpeedSettings(batch_size=8, seq_length=48, repeats=3, warmup=1,
                                                                   min_repeat_seconds=0.05))
    finally:
        torch.set_num_threads(threads)
    t, s = report["teacher"], report["student"]
    assert (t["layers"], s["layers"]) == (8, 1)
    assert t["parameters"]["total"] == count_parameters(teacher).total
    assert s["parameters"]["total"] == count_parameters(student).total
    assert report["parameter_ratio"] == pytest.approx(s["parameters"]["total"] / t["parameters"]["total"])
    assert report["speedup"] == pytest.approx(s["sequences_per_second"] / t["sequences_per_second"])
    assert report["speedup"] > 1.5, report  # 8 layers vs 1: several times faster in principle
    assert len(t["seconds_per_batch_repeats"]) == 3 and report["settings"]["threads"] == 1
    assert s["sequences_per_second"] == pytest.approx(8 / s["seconds_per_batch"])


def test_compare_loads_encoders_by_name_without_heads_or_pooler():
    report = compare("random-tiny", settings=SpeedSettings(batch_size=2, seq_length=8, repeats=1, warmup=1,
                                                            min_repeat_seconds=0.0))
    assert "teacher" not in report and "speedup" not in report
    params = report["student"]["parameters"]
    # random-tiny: BERT, hidden 32, 4 layers, bert-base vocabulary; no pooler counted
    layer = 4 * (32 * 32 + 32) + 2 * 32 + (32 * 64 + 64) + (64 * 32 + 32) + 2 * 32  # attention, LNs, FFN
    embedding = (30522 + 512 + 2) * 32
    assert params == {"total": embedding + 2 * 32 + 4 * layer, "embedding": embedding,
                      "non_embedding": 2 * 32 + 4 * layer}


def test_counts_ignore_non_embedding_modules_with_embedding_in_their_name():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding_projection = nn.Linear(4, 4)  # a Linear, whatever its name
            self.table = nn.Embedding(10, 4)

    counts = count_parameters(Odd())
    assert (counts.total, counts.embedding) == (20 + 40, 40)
