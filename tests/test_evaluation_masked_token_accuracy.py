"""Masked-token accuracy: a hand computation on tiny BERT / DistilBERT models, a model that copies its input,
fixed masks (independent of batch size and of the model), and clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import BertConfig, BertForMaskedLM, DistilBertConfig, DistilBertForMaskedLM

from kd_plugin.errors import ConfigError
from kd_plugin.evaluation import masked_lm_accuracy, masked_position_logits
from kd_plugin.evaluation.masked_token_accuracy import fixed_masks
from kd_plugin.masking import IGNORE_INDEX, DynamicMasker, MaskingConfig

VOCAB = 60
PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
N_NON_SPECIAL = VOCAB - 5


class TinyTokenizer:
    """The attributes masked_lm_accuracy reads from a tokenizer."""

    pad_token_id, mask_token_id = PAD, MASK
    all_special_ids = [PAD, UNK, CLS, SEP, MASK]

    def __len__(self) -> int:
        return VOCAB


class CopyModel(torch.nn.Module):
    """A "masked-LM" whose logits put all the mass on the input token: right exactly where the input is intact."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the evaluator a device

    def forward(self, input_ids, attention_mask):
        logits = 10.0 * torch.nn.functional.one_hot(input_ids, VOCAB).float()  # (bs, seq_len, vocab)
        return type("Output", (), {"logits": logits})()


def split(n: int = 12, seed: int = 0, max_len: int = 24) -> Dataset:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        body = rng.integers(5, VOCAB, size=int(rng.integers(3, max_len - 1))).tolist()
        rows.append([CLS, *body, SEP])
    return Dataset.from_dict({"input_ids": rows, "length": [len(r) for r in rows]})


def tiny_bert() -> BertForMaskedLM:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, pad_token_id=PAD)
    return BertForMaskedLM(config)


def tiny_distilbert() -> DistilBertForMaskedLM:
    torch.manual_seed(1)
    config = DistilBertConfig(vocab_size=VOCAB, dim=16, n_layers=2, n_heads=2, hidden_dim=32,
                              max_position_embeddings=64, pad_token_id=PAD)
    return DistilBertForMaskedLM(config)


def by_hand(model, data: Dataset, seed: int, mlm_probability: float = 0.15) -> tuple[float, float, int]:
    """One sequence at a time, no padding, the model's full forward: (accuracy, mean CE, n_masked)."""
    masker = DynamicMasker(MaskingConfig(mlm_probability=mlm_probability, smoothing=0.0), VOCAB, MASK, PAD,
                           TinyTokenizer.all_special_ids)
    model.eval()
    correct, losses = 0, []
    with torch.no_grad():
        for i, ids in enumerate(data["input_ids"]):
            state = np.random.SeedSequence([seed, i]).generate_state(1, dtype=np.uint64)[0]
            row = torch.tensor([ids])
            masked, labels = masker.mask(row, torch.ones_like(row), torch.Generator().manual_seed(int(state)))
            log_probs = torch.log_softmax(model(input_ids=masked).logits[0], dim=-1)  # (len, vocab)
            for pos in (labels[0] != IGNORE_INDEX).nonzero().flatten().tolist():
                gold = int(labels[0, pos])
                losses.append(-float(log_probs[pos, gold]))
                correct += int(int(log_probs[pos].argmax()) == gold)
    return correct / len(losses), sum(losses) / len(losses), len(losses)


@pytest.mark.parametrize("make_model", [tiny_bert, tiny_distilbert], ids=["bert", "distilbert"])
def test_equals_a_hand_computation(make_model):
    model, data = make_model(), split()
    accuracy, loss, n_masked = by_hand(model, data, seed=3)
    model.train()
    result = masked_lm_accuracy(model, data, TinyTokenizer(), batch_size=5, seed=3)
    assert result["n_masked"] == n_masked
    assert result["n_sequences"] == len(data)
    assert result["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert result["loss"] == pytest.approx(loss, rel=1e-5)
    assert model.training, "the model's train/eval mode is restored"


@pytest.mark.parametrize("make_model", [tiny_bert, tiny_distilbert], ids=["bert", "distilbert"])
def test_masked_position_shortcut_matches_the_full_forward(make_model):
    model = make_model().eval()
    ids = torch.randint(5, VOCAB, (3, 10))  # (bs, seq_len)
    attention_mask = torch.ones_like(ids)
    attention_mask[1, 7:] = 0
    selected = torch.rand(3, 10) < 0.4  # (bs, seq_len)
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=attention_mask).logits[selected]  # (n_sel, vocab)
        short = masked_position_logits(model, ids, attention_mask, selected)  # (n_sel, vocab)
    torch.testing.assert_close(short, full, rtol=1e-5, atol=1e-5)


def test_a_model_that_copies_its_input():
    data, tok, model = split(n=150, max_len=64), TinyTokenizer(), CopyModel()
    keep_only = MaskingConfig(mask_fraction=0.0, random_fraction=0.0, keep_fraction=1.0)
    mask_only = MaskingConfig(mask_fraction=1.0, random_fraction=0.0, keep_fraction=0.0)
    assert masked_lm_accuracy(model, data, tok, masking=keep_only)["accuracy"] == 1.0
    assert masked_lm_accuracy(model, data, tok, masking=mask_only)["accuracy"] == 0.0
    result = masked_lm_accuracy(model, data, tok)  # 80/10/10: intact with p = 0.1 + 0.1 / n_non_special
    p = 0.1 + 0.1 / N_NON_SPECIAL
    assert abs(result["accuracy"] - p) < 5 * math.sqrt(p * (1 - p) / result["n_masked"])


def test_masks_are_fixed_by_the_seed_and_independent_of_batch_size():
    model, data, tok = tiny_bert(), split(n=9), TinyTokenizer()
    results = [masked_lm_accuracy(model, data, tok, batch_size=bs, seed=5) for bs in (1, 4, 32)]
    for other in results[1:]:
        assert other["n_masked"] == results[0]["n_masked"]
        assert other["accuracy"] == results[0]["accuracy"]
        assert other["loss"] == pytest.approx(results[0]["loss"], rel=1e-6)
    masker = DynamicMasker(MaskingConfig(smoothing=0.0), VOCAB, MASK, PAD, TinyTokenizer.all_special_ids)
    rows = data["input_ids"]
    first, again, other = fixed_masks(rows, masker, 5), fixed_masks(rows, masker, 5), fixed_masks(rows, masker, 6)
    assert all(torch.equal(a, b) for a, b in zip(first[1], again[1], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first[1], other[1], strict=True))
    # the rows after max_sequences are not used, and the first rows keep their masks
    head = masked_lm_accuracy(model, data.select(range(5)), tok, seed=5)
    assert masked_lm_accuracy(model, data, tok, seed=5, max_sequences=5) == head


def test_bad_arguments_name_the_key():
    data, tok, model = split(n=4), TinyTokenizer(), tiny_bert()
    with pytest.raises(ConfigError, match="eval.max_sequences"):
        masked_lm_accuracy(model, data, tok, max_sequences=0)
    with pytest.raises(ConfigError, match="eval.batch_size"):
        masked_lm_accuracy(model, data, tok, batch_size=0)
    with pytest.raises(ConfigError, match="eval.split"):
        masked_lm_accuracy(model, data.select([]), tok)
    with pytest.raises(ConfigError, match="masking.mlm_probability"):
        masked_lm_accuracy(model, data, tok, mlm_probability=0.0)
