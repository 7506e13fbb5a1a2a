"""The student builder: layer strategies, exact sub-network equivalence, bad declarations, save/reload."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import transformers
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertTokenizerFast,
    DistilBertForMaskedLM,
    RobertaConfig,
    RobertaForMaskedLM,
    XLMRobertaConfig,
    XLMRobertaForMaskedLM,
)

from kd_plugin.errors import ConfigError
from kd_plugin.student import LAYER_STRATEGIES, StudentSummary, build_student, select_layers

SEQ_LEN = 9
TINY = dict(vocab_size=97, hidden_size=32, num_attention_heads=4, intermediate_size=64)
ATOL = 1e-5


def bert_teacher(num_hidden_layers: int = 6, **overrides) -> BertForMaskedLM:
    torch.manual_seed(0)
    config = BertConfig(
        **{**TINY, "num_hidden_layers": num_hidden_layers, "max_position_embeddings": 16, **overrides}
    )
    return BertForMaskedLM(config).eval()


def roberta_teacher(config_class=RobertaConfig, model_class=RobertaForMaskedLM, num_hidden_layers: int = 6):
    torch.manual_seed(1)
    config = config_class(
        **TINY,
        num_hidden_layers=num_hidden_layers,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        type_vocab_size=1,
        max_position_embeddings=SEQ_LEN + 2,
    )
    return model_class(config).eval()


def right_padded_batch(pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three sequences of lengths 9, 6 and 3, right padded with pad_token_id."""
    generator = torch.Generator().manual_seed(2)
    input_ids = torch.randint(3, TINY["vocab_size"], (3, SEQ_LEN), generator=generator)  # (bs, seq_len)
    lengths = torch.tensor([SEQ_LEN, 6, 3])  # (bs,)
    attention_mask = (torch.arange(SEQ_LEN)[None, :] < lengths[:, None]).long()  # (bs, seq_len)
    input_ids = input_ids.masked_fill(attention_mask == 0, pad_token_id)  # (bs, seq_len)
    return input_ids, attention_mask


@torch.no_grad()
def teacher_sub_network(teacher, input_ids, attention_mask, layers, with_token_type=True, position_offset=0):
    """Hidden states of the teacher restricted to `layers`, computed from the teacher's own modules."""
    base = teacher.base_model
    embeddings = base.embeddings
    positions = torch.arange(input_ids.size(1)) + position_offset  # (seq_len,)
    hidden = embeddings.word_embeddings(input_ids)  # (bs, seq_len, dim)
    hidden = hidden + embeddings.position_embeddings(positions)  # (bs, seq_len, dim)
    if with_token_type:
        hidden = hidden + embeddings.token_type_embeddings.weight[0]  # (bs, seq_len, dim)
    hidden = embeddings.LayerNorm(hidden)  # (bs, seq_len, dim)
    min_value = torch.finfo(hidden.dtype).min
    padding = 1.0 - attention_mask[:, None, None, :].to(hidden.dtype)  # (bs, 1, 1, seq_len)
    extended_mask = padding * min_value  # (bs, 1, 1, seq_len)
    hidden_states = [hidden]
    for index in layers:
        hidden = base.encoder.layer[index](hidden, extended_mask)  # (bs, seq_len, dim)
        hidden_states.append(hidden)
    return hidden_states


def assert_close_on_tokens(actual, expected, attention_mask):
    keep = attention_mask.bool()  # (bs, seq_len)
    torch.testing.assert_close(actual[keep], expected[keep], atol=ATOL, rtol=1e-4)


# 1. BERT teacher: the student is exactly the teacher sub-network


def test_hand_computation_reproduces_the_full_bert_teacher():
    teacher = bert_teacher()
    input_ids, attention_mask = right_padded_batch(teacher.config.pad_token_id)
    expected = teacher_sub_network(teacher, input_ids, attention_mask, range(6))[-1]
    with torch.no_grad():
        actual = teacher.bert(input_ids, attention_mask=attention_mask)[0]  # (bs, seq_len, dim)
    assert_close_on_tokens(actual, expected, attention_mask)


@pytest.mark.parametrize("fold", [True, False])
def test_alternate_student_equals_bert_sub_network(fold):
    teacher = bert_teacher()
    student, summary = build_student(teacher, "alternate", n_layers=3, fold_token_type_embedding=fold)
    assert isinstance(student, DistilBertForMaskedLM)
    assert summary.teacher_layers_copied == [0, 2, 4]
    assert summary.fold_token_type_embedding is fold
    input_ids, attention_mask = right_padded_batch(teacher.config.pad_token_id)

    expected = teacher_sub_network(teacher, input_ids, attention_mask, [0, 2, 4], with_token_type=fold)
    with torch.no_grad():
        output = student(input_ids, attention_mask=attention_mask, output_hidden_states=True)
        expected_logits = teacher.cls(expected[-1])  # (bs, seq_len, vocab_size)

    assert len(output.hidden_states) == len(expected) == 4
    for actual_state, expected_state in zip(output.hidden_states, expected, strict=True):
        assert_close_on_tokens(actual_state, expected_state, attention_mask)
    assert_close_on_tokens(output.logits, expected_logits, attention_mask)


def test_folding_matters_when_token_type_row_is_not_zero():
    teacher = bert_teacher()
    input_ids, attention_mask = right_padded_batch(teacher.config.pad_token_id)
    folded, _ = build_student(teacher, "alternate", n_layers=3, fold_token_type_embedding=True)
    dropped, _ = build_student(teacher, "alternate", n_layers=3, fold_token_type_embedding=False)
    with torch.no_grad():
        difference = (folded(input_ids).logits - dropped(input_ids).logits).abs().max()
    assert difference > 1e-3


def test_student_keeps_teacher_dtype():
    teacher = bert_teacher().to(torch.bfloat16)
    student, _ = build_student(teacher, "first", n_layers=2)
    assert {p.dtype for p in student.parameters()} == {torch.bfloat16}
    torch.testing.assert_close(
        student.distilbert.transformer.layer[1].attention.q_lin.weight,
        teacher.bert.encoder.layer[1].attention.self.query.weight,
        atol=0,
        rtol=0,
    )


def test_untied_teacher_gives_untied_student():
    teacher = bert_teacher(tie_word_embeddings=False)
    student, _ = build_student(teacher, "last", n_layers=2)
    assert student.config.tie_word_embeddings is False
    assert student.vocab_projector.weight is not student.distilbert.embeddings.word_embeddings.weight
    torch.testing.assert_close(student.vocab_projector.weight, teacher.cls.predictions.decoder.weight)
    torch.testing.assert_close(student.vocab_projector.bias, teacher.cls.predictions.bias)


# 2. RoBERTa-family teachers: positions shifted by padding_idx + 1


@pytest.mark.parametrize(
    ("config_class", "model_class"),
    [(RobertaConfig, RobertaForMaskedLM), (XLMRobertaConfig, XLMRobertaForMaskedLM)],
)
def test_student_equals_roberta_sub_network(config_class, model_class):
    teacher = roberta_teacher(config_class, model_class)
    offset = teacher.config.pad_token_id + 1
    input_ids, attention_mask = right_padded_batch(teacher.config.pad_token_id)

    all_layers = teacher_sub_network(teacher, input_ids, attention_mask, range(6), position_offset=offset)
    with torch.no_grad():
        full = teacher.roberta(input_ids, attention_mask=attention_mask)[0]  # (bs, seq_len, dim)
    assert_close_on_tokens(full, all_layers[-1], attention_mask)  # the hand computation is the teacher's

    student, summary = build_student(teacher, "distilbert_release", n_layers=3)
    assert summary.teacher_layers_copied == [0, 2, 5]
    assert student.config.max_position_embeddings == SEQ_LEN
    expected = teacher_sub_network(teacher, input_ids, attention_mask, [0, 2, 5], position_offset=offset)
    with torch.no_grad():
        output = student(input_ids, attention_mask=attention_mask, output_hidden_states=True)
        expected_logits = teacher.lm_head(expected[-1])  # (bs, seq_len, vocab_size)
    for actual_state, expected_state in zip(output.hidden_states, expected, strict=True):
        assert_close_on_tokens(actual_state, expected_state, attention_mask)
    assert_close_on_tokens(output.logits, expected_logits, attention_mask)


def test_roberta_teacher_with_other_layer_norm_eps_warns():
    teacher = roberta_teacher()
    teacher.config.layer_norm_eps = 1e-5
    with pytest.warns(UserWarning, match="layer_norm_eps"):
        build_student(teacher, "first", n_layers=1)


# 3. Strategies


@pytest.mark.parametrize(
    ("strategy", "n_layers", "teacher_layers", "expected"),
    [
        ("alternate", 6, 12, [0, 2, 4, 6, 8, 10]),
        ("alternate", 2, 4, [0, 2]),
        ("distilbert_release", 6, 12, [0, 2, 4, 7, 9, 11]),
        ("distilbert_release", 4, 12, [0, 2, 9, 11]),
        ("distilbert_release", 3, 6, [0, 2, 5]),
        ("first", 3, 12, [0, 1, 2]),
        ("last", 3, 12, [9, 10, 11]),
        ("uniform", 6, 12, [1, 3, 5, 7, 9, 11]),
        ("uniform", 4, 12, [2, 5, 8, 11]),
        ("uniform", 4, 6, [0, 2, 3, 5]),
        ("uniform", 12, 12, list(range(12))),
        ("uniform", 1, 12, [11]),
        ([0, 5, 11], None, 12, [0, 5, 11]),
        ([0, 5, 11], 3, 12, [0, 5, 11]),
        ("random_init", 4, 12, []),
        ("distilbert_release", None, 12, [0, 2, 4, 7, 9, 11]),
    ],
)
def test_strategy_indices(strategy, n_layers, teacher_layers, expected):
    assert select_layers(strategy, n_layers, teacher_layers) == expected


@pytest.mark.parametrize("teacher_layers", range(1, 25))
def test_uniform_always_includes_top_layer_and_is_sorted(teacher_layers):
    for n_layers in range(1, teacher_layers + 1):
        layers = select_layers("uniform", n_layers, teacher_layers)
        assert layers[-1] == teacher_layers - 1
        assert layers == sorted(set(layers)) and len(layers) == n_layers


def test_registry_names():
    assert LAYER_STRATEGIES.names() == [
        "alternate",
        "distilbert_release",
        "first",
        "last",
        "random_init",
        "uniform",
    ]


def test_random_init_copies_nothing_and_is_seeded():
    teacher = bert_teacher()
    student, summary = build_student(teacher, "random_init", n_layers=2, seed=3)
    again, _ = build_student(teacher, "random_init", n_layers=2, seed=3)
    assert summary.teacher_layers_copied == [] and summary.n_layers == 2
    assert summary.fold_token_type_embedding is False
    assert student.config.n_layers == 2
    assert not torch.allclose(
        student.distilbert.embeddings.word_embeddings.weight, teacher.bert.embeddings.word_embeddings.weight
    )
    assert not torch.allclose(
        student.distilbert.transformer.layer[0].attention.q_lin.weight,
        teacher.bert.encoder.layer[0].attention.self.query.weight,
    )
    for (name, parameter), (_, other) in zip(
        student.named_parameters(), again.named_parameters(), strict=True
    ):
        assert torch.equal(parameter, other), name


def test_copied_layers_are_the_selected_ones():
    teacher = bert_teacher()
    student, _ = build_student(teacher, [1, 4, 5])
    for student_block, teacher_index in zip(student.distilbert.transformer.layer, [1, 4, 5], strict=True):
        teacher_layer = teacher.bert.encoder.layer[teacher_index]
        assert torch.equal(student_block.ffn.lin1.weight, teacher_layer.intermediate.dense.weight)
        assert torch.equal(student_block.output_layer_norm.bias, teacher_layer.output.LayerNorm.bias)


# 4. Bad declarations


@pytest.mark.parametrize(
    ("strategy", "n_layers", "key", "fragments"),
    [
        ([0, 12], None, "student.layers", ["out of range", "0..11"]),
        ([-1, 3], None, "student.layers", ["out of range", "0..11"]),
        ([2, 2, 5], None, "student.layers", ["duplicate", "0..11"]),
        ([5, 2], None, "student.layers", ["not sorted", "0..11"]),
        ([], None, "student.layers", ["empty", "0..11"]),
        ([0, 1], 3, "student.n_layers", ["disagrees", "2"]),
        ("first", 13, "student.n_layers", ["more than", "1..12"]),
        ("first", 0, "student.n_layers", ["at least one", "1..12"]),
        ("alternate", 7, "student.n_layers", ["alternate", "1..6"]),
        ("distilbert_release", 8, "student.n_layers", ["distilbert_release", "1..7"]),
        ("every_third", 4, "student.layers", ["unknown", "alternate, distilbert_release, first, last"]),
    ],
)
def test_bad_declarations_raise_config_error(strategy, n_layers, key, fragments):
    with pytest.raises(ConfigError) as caught:
        select_layers(strategy, n_layers, 12)
    message = str(caught.value)
    assert caught.value.key == key and message.startswith(f"{key}:")
    assert "; allowed: " in message
    for fragment in fragments:
        assert fragment in message


def test_build_student_rejects_bad_declarations_before_building():
    teacher = bert_teacher(num_hidden_layers=4)
    with pytest.raises(ConfigError, match=r"student\.n_layers: .*allowed: .*1\.\.4"):
        build_student(teacher, "first", n_layers=5)
    with pytest.raises(ConfigError, match=r"student\.layers: unknown"):
        build_student(teacher, "nope", n_layers=2)


def test_unsupported_activation_raises_config_error():
    teacher = bert_teacher(num_hidden_layers=2, hidden_act="silu")
    with pytest.raises(ConfigError, match=r"teacher\.hidden_act: .*'silu'.*allowed: gelu, relu"):
        build_student(teacher, "first", n_layers=1)


# 5. Architecture


def test_student_has_no_token_types_or_pooler_and_is_smaller():
    teacher = bert_teacher()
    student, summary = build_student(teacher, "distilbert_release", n_layers=3)
    names = [name for name, _ in student.named_parameters()]
    assert not any("token_type" in name or "pooler" in name for name in names)
    assert not hasattr(student.distilbert.embeddings, "token_type_embeddings")
    assert summary.n_parameters == student.num_parameters() < teacher.num_parameters()
    assert summary.teacher_n_parameters == teacher.num_parameters()
    assert summary.n_non_embedding_parameters < summary.n_parameters
    assert student.vocab_projector.weight is student.distilbert.embeddings.word_embeddings.weight
    assert isinstance(summary, StudentSummary)
    assert summary.to_dict() == {
        "strategy": "distilbert_release",
        "teacher_layers_copied": [0, 2, 5],
        "n_layers": 3,
        "n_parameters": summary.n_parameters,
        "n_non_embedding_parameters": summary.n_non_embedding_parameters,
        "teacher_n_parameters": summary.teacher_n_parameters,
        "fold_token_type_embedding": True,
        "architecture": "distilbert",
        "model_class": "DistilBertForMaskedLM",
        "family": "bert",
        "objective": "masked_lm",
    }


# 6. save_pretrained -> from_pretrained -> fill-mask pipeline


def test_save_reload_and_fill_mask_pipeline(tmp_path):
    words = ["the", "cat", "dog", "sat", "on", "mat", "a", "ran"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    vocab += [f"w{i}" for i in range(TINY["vocab_size"] - len(vocab))]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # transformers 5: BertTokenizerFast(vocab_file=...) silently ignores the file; `vocab=` takes the path.
    tokenizer = BertTokenizerFast(
        vocab=str(tmp_path / "vocab.txt"), model_input_names=["input_ids", "attention_mask"]
    )
    assert tokenizer.convert_tokens_to_ids("cat") == 6

    student, _ = build_student(bert_teacher(), "distilbert_release", n_layers=3)
    student.save_pretrained(tmp_path / "student")
    reloaded = DistilBertForMaskedLM.from_pretrained(tmp_path / "student").eval()
    assert reloaded.config.architectures == ["DistilBertForMaskedLM"]
    original_state, reloaded_state = student.state_dict(), reloaded.state_dict()
    assert original_state.keys() == reloaded_state.keys()
    for name, tensor in original_state.items():
        assert torch.equal(tensor, reloaded_state[name]), name
    assert reloaded.vocab_projector.weight is reloaded.distilbert.embeddings.word_embeddings.weight

    fill_mask = transformers.pipeline("fill-mask", model=reloaded, tokenizer=tokenizer, top_k=5)
    predictions = fill_mask("the cat [MASK] on the mat")

    encoded = tokenizer("the cat [MASK] on the mat", return_tensors="pt")
    with torch.no_grad():
        logits = reloaded(**encoded).logits  # (1, seq_len, vocab_size)
    mask_position = (encoded["input_ids"][0] == tokenizer.mask_token_id).nonzero().item()
    probabilities = logits[0, mask_position].softmax(-1)  # (vocab_size,)
    top = probabilities.topk(5)
    assert [p["token"] for p in predictions] == top.indices.tolist()
    torch.testing.assert_close(
        torch.tensor([p["score"] for p in predictions]), top.values, atol=1e-6, rtol=1e-5
    )
