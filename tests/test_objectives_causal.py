"""The causal-LM objective: next-token targets built by hand, and the held-out next-token accuracy/perplexity
compared with a direct computation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import GPT2Config, GPT2LMHeadModel

from kd_plugin.evaluation.next_token_accuracy import next_token_accuracy
from kd_plugin.objectives import OBJECTIVES, next_token_labels


def test_next_token_labels_by_hand():
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    assert next_token_labels(ids, mask).tolist() == [[6, 7, 8, -100], [10, -100, -100, -100]]


def test_each_objective_names_its_hard_label_term_and_auto_class():
    assert (OBJECTIVES.get("causal_lm").hard_label_term, OBJECTIVES.get("masked_lm").hard_label_term) == ("clm", "mlm")
    assert OBJECTIVES.get("causal_lm").auto_model == "AutoModelForCausalLM"
    assert OBJECTIVES.get("causal_lm").pipeline_tag == "text-generation"


class _Tokenizer:
    pad_token_id = 0


def test_next_token_accuracy_and_perplexity_equal_a_direct_computation():
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=32)).eval()
    g = torch.Generator().manual_seed(1)
    rows = [torch.randint(1, 50, (n,), generator=g).tolist() for n in (7, 3, 11, 5, 2)]
    split = Dataset.from_dict({"input_ids": rows})
    correct = total = 0
    nll = 0.0
    with torch.no_grad():
        for row in rows:  # one sequence at a time: no padding at all
            logits = model(torch.tensor([row])).logits[0, :-1]  # (len - 1, vocab)
            gold = torch.tensor(row[1:])
            nll += float(F.cross_entropy(logits, gold, reduction="sum"))
            correct += int((logits.argmax(-1) == gold).sum())
            total += len(row) - 1
    for batch_size in (1, 2, 16):  # padding in a batch changes nothing
        got = next_token_accuracy(model, split, _Tokenizer(), batch_size=batch_size)
        assert got["n_targets"] == total == 23 and got["n_sequences"] == 5
        assert got["accuracy"] == pytest.approx(correct / total)
        assert got["loss"] == pytest.approx(nll / total, rel=1e-5)
        assert got["perplexity"] == pytest.approx(math.exp(nll / total), rel=1e-5)
    assert next_token_accuracy(model, split, _Tokenizer(), max_sequences=2)["n_targets"] == 6 + 2


def _word_level_tokenizer(**special):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, "<s>": 1, "[CLS]": 2, "[SEP]": 3, "a": 4, "b": 5}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="a"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, **special)


@pytest.mark.parametrize(("special", "expected"), [
    ({"cls_token": "[CLS]", "sep_token": "[SEP]", "bos_token": "<s>", "eos_token": "<|endoftext|>"}, (2, 3)),  # BERT
    ({"bos_token": "<s>", "eos_token": "<|endoftext|>"}, (1, 0)),  # RoBERTa, GPT-2, Llama
    ({"eos_token": "<|endoftext|>"}, (0, 0)),  # Qwen2: no bos, chunks start with the document separator
])
def test_chunks_are_wrapped_in_the_tokenizers_own_boundary_tokens(special, expected):
    from kd_plugin.data import special_token_ids

    assert special_token_ids(_word_level_tokenizer(**special)) == expected


def test_a_tokenizer_without_boundary_tokens_is_one_error():
    from kd_plugin.data import special_token_ids
    from kd_plugin.errors import ConfigError

    with pytest.raises(ConfigError, match="data.tokenizer: .*neither cls/sep nor bos/eos"):
        special_token_ids(_word_level_tokenizer())
