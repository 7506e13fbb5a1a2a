"""Students of every supported family: ``student.architecture=same`` keeps the teacher's class and computes
exactly the teacher's sub-network of the copied blocks; adapters declare every part; bad pairs are refused.

The reference sub-network is built from the teacher's own modules (a deep copy whose block list keeps only the
selected blocks), independently of the builder's state-dict renaming.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from transformers import (
    BertConfig,
    BertForMaskedLM,
    DistilBertConfig,
    DistilBertForMaskedLM,
    ElectraConfig,
    ElectraForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    RobertaConfig,
    RobertaForMaskedLM,
)

from kd_plugin.errors import ConfigError
from kd_plugin.families import FAMILIES, family_of
from kd_plugin.families.family import get_module
from kd_plugin.student import ModelRequirements, build_student
from kd_plugin.student.dropout import set_dropout

VOCAB, WIDTH, LAYERS = 101, 32, 6


def tiny(family: str) -> nn.Module:
    """A random 6-block LM of ``family``, small enough for exact CPU comparisons."""
    torch.manual_seed(0)
    common = dict(vocab_size=VOCAB, num_attention_heads=4)
    if family == "bert":
        model = BertForMaskedLM(BertConfig(**common, hidden_size=WIDTH, num_hidden_layers=LAYERS,
                                           intermediate_size=64, max_position_embeddings=32))
    elif family == "roberta":
        model = RobertaForMaskedLM(RobertaConfig(**common, hidden_size=WIDTH, num_hidden_layers=LAYERS,
                                                 intermediate_size=64, max_position_embeddings=34, pad_token_id=1))
    elif family == "distilbert":
        model = DistilBertForMaskedLM(DistilBertConfig(vocab_size=VOCAB, dim=WIDTH, n_layers=LAYERS, n_heads=4,
                                                       hidden_dim=64, max_position_embeddings=32))
    elif family == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=WIDTH, n_layer=LAYERS, n_head=4, n_positions=32,
                                           bos_token_id=0, eos_token_id=0))
    elif family == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common, hidden_size=WIDTH, num_hidden_layers=LAYERS,
                                             intermediate_size=64, num_key_value_heads=2, bos_token_id=0,
                                             eos_token_id=0, pad_token_id=0))
    elif family == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(
            **common, hidden_size=WIDTH, num_hidden_layers=LAYERS, intermediate_size=64, num_key_value_heads=2,
            use_sliding_window=True, sliding_window=4, max_window_layers=3, bos_token_id=0, eos_token_id=0,
            layer_types=["full_attention"] * 3 + ["sliding_attention"] * 3))
    else:
        raise ValueError(family)
    with torch.no_grad():  # non-trivial norms and biases, so a wrongly copied one shows
        for name, param in model.named_parameters():
            if "norm" in name.lower() or name.endswith("bias") or ".ln_" in name:
                param.add_(0.1 * torch.randn_like(param))
    return model.eval()


ALL = ["bert", "roberta", "distilbert", "gpt2", "llama", "qwen2"]


def batch(pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (bs 3, seq 10): lengths 10, 7, 4."""
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, VOCAB, (3, 10), generator=g)  # (bs, seq_len)
    mask = (torch.arange(10)[None, :] < torch.tensor([10, 7, 4])[:, None]).long()  # (bs, seq_len)
    return ids.masked_fill(mask == 0, pad), mask


def sub_network(teacher: nn.Module, layers: list[int]) -> nn.Module:
    """The teacher restricted to ``layers``, from its own modules (block list cut, per-layer lists cut)."""
    family = family_of(teacher.config)
    reference = copy.deepcopy(teacher)
    owner_path, _, name = family.layers.rpartition(".")
    owner = get_module(reference, owner_path)
    setattr(owner, name, nn.ModuleList([getattr(owner, name)[i] for i in layers]))
    reference.config.num_hidden_layers = len(layers)
    if getattr(reference.config, "layer_types", None):
        reference.config.layer_types = [reference.config.layer_types[i] for i in layers]
    for new_index, block in enumerate(get_module(reference, family.layers)):
        for module in block.modules():  # decoder attention modules know their index (for caches)
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    return reference


@pytest.mark.parametrize("family", ALL)
def test_same_architecture_student_is_the_teachers_sub_network(family):
    teacher = tiny(family)
    layers = [0, 2, 5]
    student, summary = build_student(teacher, layers, architecture="same")
    reference = sub_network(teacher, layers)
    assert type(student) is type(teacher) and summary.model_class == type(teacher).__name__
    assert summary.architecture == "same" and summary.teacher_layers_copied == layers and summary.n_layers == 3
    assert summary.family == family_of(teacher.config).name
    ids, mask = batch()
    kwargs = {} if family in ("bert", "roberta", "distilbert") else {"use_cache": False}
    with torch.no_grad():
        got = student(input_ids=ids, attention_mask=mask, output_hidden_states=True, **kwargs)
        want = reference(input_ids=ids, attention_mask=mask, output_hidden_states=True, **kwargs)
    keep = mask.bool()  # (bs, seq_len)
    assert len(got.hidden_states) == len(want.hidden_states) == 4
    for a, b in zip(got.hidden_states, want.hidden_states, strict=True):
        torch.testing.assert_close(a[keep], b[keep], atol=1e-6, rtol=0)
    torch.testing.assert_close(got.logits[keep], want.logits[keep], atol=1e-6, rtol=0)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_tied_lm_heads_stay_tied_and_untied_ones_are_copied(family):
    teacher = tiny(family)
    student, _ = build_student(teacher, "alternate", 2, architecture="same")
    tied = teacher.get_output_embeddings().weight is teacher.get_input_embeddings().weight
    assert (student.get_output_embeddings().weight is student.get_input_embeddings().weight) == tied
    assert torch.equal(student.get_output_embeddings().weight, teacher.get_output_embeddings().weight)


def test_qwen2_per_layer_attention_types_follow_the_copied_blocks():
    teacher = tiny("qwen2")
    student, _ = build_student(teacher, [1, 4], architecture="same")
    assert student.config.layer_types == ["full_attention", "sliding_attention"]
    assert teacher.config.layer_types == ["full_attention"] * 3 + ["sliding_attention"] * 3  # unchanged


def test_distilgpt2_extraction_takes_teacher_blocks_0_2_4_7_9_11():
    """The original ``scripts/extract.py`` for GPT-2 copies wte, wpe, blocks [0, 2, 4, 7, 9, 11] of 12 (in that
    order, renumbered 0..5), ln_f and lm_head; re-computed here key by key from the teacher's state dict."""
    torch.manual_seed(5)
    teacher = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=WIDTH, n_layer=12, n_head=4, n_positions=32)).eval()
    student, summary = build_student(teacher, "distilbert_release", 6, architecture="same")
    assert summary.teacher_layers_copied == [0, 2, 4, 7, 9, 11]
    state = teacher.state_dict()
    expected = {f"transformer.{w}": state[f"transformer.{w}"] for w in ("wte.weight", "wpe.weight")}
    for std_idx, teacher_idx in enumerate([0, 2, 4, 7, 9, 11]):
        for key in state:
            prefix = f"transformer.h.{teacher_idx}."
            if key.startswith(prefix):
                expected[f"transformer.h.{std_idx}.{key[len(prefix):]}"] = state[key]
    expected["transformer.ln_f.weight"] = state["transformer.ln_f.weight"]
    expected["transformer.ln_f.bias"] = state["transformer.ln_f.bias"]
    expected["lm_head.weight"] = state["lm_head.weight"]
    got = student.state_dict()
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def test_random_init_copies_nothing_and_is_seeded():
    teacher = tiny("gpt2")
    a, summary = build_student(teacher, "random_init", 2, seed=7, architecture="same")
    b, _ = build_student(teacher, "random_init", 2, seed=7, architecture="same")
    c, _ = build_student(teacher, "random_init", 2, seed=8, architecture="same")
    assert summary.teacher_layers_copied == [] and summary.n_layers == 2
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.transformer.h[0].attn.c_attn.weight, c.transformer.h[0].attn.c_attn.weight)
    assert not torch.equal(a.transformer.h[0].attn.c_attn.weight, teacher.transformer.h[0].attn.c_attn.weight)


@pytest.mark.parametrize("family", ALL)
def test_every_student_parameter_outside_the_blocks_is_declared_by_the_adapter(family):
    teacher = tiny(family)
    adapter = family_of(teacher.config)
    outside = {k for k in teacher.state_dict() if not k.startswith(adapter.layers + ".")}
    assert outside and all(k.startswith(adapter.non_layer_parts()) for k in outside), outside
    assert len(adapter.blocks(teacher)) == LAYERS


@pytest.mark.parametrize("family", ALL)
def test_student_dropout_sets_every_dropout_and_the_saved_config(family):
    teacher = tiny(family)
    student, _ = build_student(teacher, "first", 2, architecture="same")
    set_dropout(student, 0.3)
    adapter = family_of(student.config)
    assert all(getattr(student.config, key) == 0.3 for key in adapter.dropout_keys)
    assert all(m.p == 0.3 for m in student.modules() if isinstance(m, nn.Dropout))
    for block in adapter.blocks(student):
        for path in adapter.attention_dropout:
            owner_path, _, name = path.rpartition(".")
            value = getattr(get_module(block, owner_path) if owner_path else block, name)
            assert (value.p if isinstance(value, nn.Dropout) else value) == 0.3


@pytest.mark.parametrize("family", ALL)
def test_terms_that_compare_attentions_turn_the_students_attention_dropout_off(family):
    teacher = tiny(family)
    requirements = ModelRequirements.of({"attentions"})
    student, _ = build_student(teacher, "first", 2, architecture="same", requirements=requirements)
    adapter = family_of(student.config)
    for block in adapter.blocks(student):
        for path in adapter.attention_dropout:
            owner_path, _, name = path.rpartition(".")
            value = getattr(get_module(block, owner_path) if owner_path else block, name)
            assert (value.p if isinstance(value, nn.Dropout) else value) == 0.0
    assert student.config._attn_implementation == "eager"


def test_a_family_without_an_adapter_is_one_error_naming_the_supported_families():
    teacher = ElectraForMaskedLM(ElectraConfig(vocab_size=VOCAB, embedding_size=16, hidden_size=WIDTH,
                                               num_hidden_layers=2, num_attention_heads=4, intermediate_size=64))
    with pytest.raises(ConfigError) as err:
        build_student(teacher, "first", 1, architecture="same")
    assert err.value.key == "teacher" and "'electra'" in err.value.problem
    for name in FAMILIES.names():
        assert name in err.value.allowed


def test_a_distilbert_student_needs_a_bert_or_roberta_teacher():
    with pytest.raises(ConfigError) as err:
        build_student(tiny("gpt2"), "first", 2, architecture="distilbert")
    assert err.value.key == "student.architecture" and "gpt2" in err.value.problem and "same" in err.value.allowed


def test_more_student_layers_than_the_teacher_has_is_refused():
    with pytest.raises(ConfigError, match=r"student\.n_layers: 7 layers is more than the teacher's 6"):
        build_student(tiny("llama"), "first", 7, architecture="same")


def test_frozen_position_embeddings_stay_as_copied_while_the_rest_trains():
    """The original code's --freeze_pos_embs, on a GPT-2 student: one optimizer step moves the token embeddings
    and leaves the position table untouched; a rotary family (Llama) has no table to freeze."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig

    from kd_plugin.errors import ConfigError
    from kd_plugin.families import family_of
    from kd_plugin.families.family import freeze_position_embeddings
    from kd_plugin.optimization import parameter_groups
    from kd_plugin.student import build_student

    torch.manual_seed(0)
    teacher = GPT2LMHeadModel(GPT2Config(n_layer=4, n_embd=16, n_head=2, vocab_size=50, n_positions=32))
    student, _ = build_student(teacher, "alternate", None, architecture="same")
    freeze_position_embeddings(student, family_of(student.config))
    wpe, wte = student.transformer.wpe.weight.detach().clone(), student.transformer.wte.weight.detach().clone()
    optimizer = torch.optim.AdamW(parameter_groups(student, 0.0), lr=1e-2)
    ids = torch.randint(0, 50, (2, 10))
    student(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    assert torch.equal(student.transformer.wpe.weight, wpe) and not torch.equal(student.transformer.wte.weight, wte)
    assert all(p is not student.transformer.wpe.weight for g in optimizer.param_groups for p in g["params"])
    with pytest.raises(ConfigError, match="student.freeze_position_embeddings: a llama model has no learned"):
        freeze_position_embeddings(student, family_of(LlamaConfig()))
