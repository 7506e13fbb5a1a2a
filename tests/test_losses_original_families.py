"""The loss mixture on GPT-2 and RoBERTa teachers equals the original Distil* code's formulas (re-computed here,
independently, from ``distiller.py``'s ``step()``; the original code is not a dependency).

On fixed right-padded batches: DistilGPT2's path (no masking; ``L_ce`` over every real position, ``L_clm`` on
the shifted labels with padding ignored, ``L_cos`` on the last hidden states of the real positions, both models
called with ``attention_mask=None`` as the original does) and DistilRoBERTa's masked-LM path (``L_ce`` over the
real positions, ``L_mlm`` on the masked positions). Each term and the total within 1e-6 in fp32, and their
gradients with respect to the student's weights, through each term's own pass and through the shared pass over
the logit rows (``performance.fuse_logit_rows``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, RobertaConfig, RobertaForMaskedLM

from kd_plugin.losses import LossMixture, MixtureDeclaration, ModelDims
from kd_plugin.objectives import NextTokenTargets
from kd_plugin.student import build_student
from kd_plugin.training.distillation_module import DistillationModule

VOCAB, T = 211, 2.0
WEIGHTS = {"ce": 5.0, "cos": 1.0, "mse": 0.5}


def right_padded(pad: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (4, 12), generator=g)  # (bs, seq_len)
    mask = (torch.arange(12)[None, :] < torch.tensor([12, 9, 5, 2])[:, None]).long()  # (bs, seq_len)
    return ids.masked_fill(mask == 0, pad), mask


def original_common(s_logits, t_logits, s_hidden, t_hidden, attention_mask):
    """distiller.py: L_ce (restrict_ce_to_mask=False), L_mse, L_cos over the attention mask's positions."""
    mask = attention_mask.bool().unsqueeze(-1).expand_as(s_logits)  # (bs, seq_length, voc_size)
    s_logits_slct = torch.masked_select(s_logits, mask).view(-1, s_logits.size(-1))  # (bs * seq_length, voc_size)
    t_logits_slct = torch.masked_select(t_logits, mask).view(-1, s_logits.size(-1))
    loss_ce = nn.KLDivLoss(reduction="batchmean")(
        F.log_softmax(s_logits_slct / T, dim=-1), F.softmax(t_logits_slct / T, dim=-1)) * T ** 2
    loss_mse = nn.MSELoss(reduction="sum")(s_logits_slct, t_logits_slct) / s_logits_slct.size(0)
    dim = s_hidden.size(-1)
    hmask = attention_mask.bool().unsqueeze(-1).expand_as(s_hidden)  # (bs, seq_length, dim)
    s_slct = torch.masked_select(s_hidden, hmask).view(-1, dim)  # (bs * seq_length, dim)
    t_slct = torch.masked_select(t_hidden, hmask).view(-1, dim)
    target = s_slct.new(s_slct.size(0)).fill_(1)  # (bs * seq_length,)
    loss_cos = nn.CosineEmbeddingLoss(reduction="mean")(s_slct, t_slct, target)
    return {"ce": loss_ce, "mse": loss_mse, "cos": loss_cos}


def project(student, teacher, weights, objective, fuse=False):
    dims = ModelDims(student.config.hidden_size, teacher.config.hidden_size, student.config.num_hidden_layers,
                     teacher.config.num_hidden_layers, objective=objective)
    mixture = LossMixture(MixtureDeclaration(weights=weights, temperature=T), dims, fuse_logit_rows=fuse)
    return DistillationModule(student, mixture, teacher)


def compare(ours: dict, original: dict, weights: dict, student: nn.Module) -> None:
    for term, weight in weights.items():
        torch.testing.assert_close(ours[f"loss_{term}"], weight * original[term], atol=1e-6, rtol=1e-6)
    total = sum(weight * original[term] for term, weight in weights.items())
    torch.testing.assert_close(ours["loss"], total, atol=1e-6, rtol=1e-6)
    params = [p for p in student.parameters() if p.requires_grad]
    ours_grad = torch.autograd.grad(ours["loss"], params, retain_graph=True, allow_unused=True)
    original_grad = torch.autograd.grad(total, params, allow_unused=True)
    for a, b in zip(ours_grad, original_grad, strict=True):
        if b is not None:
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("fuse", [False, True], ids=["term_passes", "shared_pass"])
def test_distilgpt2_path_equals_the_original_distiller(fuse):
    torch.manual_seed(0)
    teacher = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=48, n_layer=4, n_head=4, n_positions=32,
                                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)).eval()
    student, _ = build_student(teacher, "alternate", 2, architecture="same")
    with torch.no_grad():  # the student drifts from its initialisation, so the terms are not trivially 0
        for p in student.parameters():
            p.add_(0.02 * torch.randn_like(p))
    student.train()
    for p in teacher.parameters():
        p.requires_grad_(False)
    input_ids, attention_mask = right_padded(pad=VOCAB - 1)
    weights = {**WEIGHTS, "clm": 2.0}

    # original: student(input_ids=input_ids, attention_mask=None); lm_labels[~attn_mask] = -100; shifted CE
    s_out = student(input_ids=input_ids, attention_mask=None, output_hidden_states=True)
    with torch.no_grad():
        t_out = teacher(input_ids=input_ids, attention_mask=None, output_hidden_states=True)
    lm_labels = input_ids.new(input_ids.size()).copy_(input_ids)  # (bs, seq_length)
    lm_labels[~attention_mask.bool()] = -100
    shift_logits = s_out.logits[..., :-1, :].contiguous()  # (bs, seq_length - 1, voc_size)
    shift_labels = lm_labels[..., 1:].contiguous()  # (bs, seq_length - 1)
    loss_clm = nn.CrossEntropyLoss(ignore_index=-100)(shift_logits.view(-1, shift_logits.size(-1)),
                                                      shift_labels.view(-1))
    original = {**original_common(s_out.logits, t_out.logits, s_out.hidden_states[-1], t_out.hidden_states[-1],
                                  attention_mask), "clm": loss_clm}

    module = project(student, teacher, weights, "causal_lm", fuse)
    inputs, labels = NextTokenTargets().make(input_ids, attention_mask)
    assert torch.equal(inputs, input_ids)  # nothing is corrupted for a causal LM
    ours = module(input_ids=inputs, attention_mask=attention_mask, labels=labels)
    compare(ours, original, weights, student)


@pytest.mark.parametrize("fuse", [False, True], ids=["term_passes", "shared_pass"])
def test_distilroberta_path_equals_the_original_distiller(fuse):
    torch.manual_seed(1)
    teacher = RobertaForMaskedLM(RobertaConfig(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=4,
                                               num_attention_heads=4, intermediate_size=96, pad_token_id=1,
                                               max_position_embeddings=40, hidden_dropout_prob=0.0,
                                               attention_probs_dropout_prob=0.0)).eval()
    student, _ = build_student(teacher, "alternate", 2, architecture="same")
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.02 * torch.randn_like(p))
    student.train()
    for p in teacher.parameters():
        p.requires_grad_(False)
    input_ids, attention_mask = right_padded(pad=1, seed=4)
    g = torch.Generator().manual_seed(9)
    picked = (torch.rand(input_ids.shape, generator=g) < 0.3) & attention_mask.bool()  # (bs, seq_length)
    lm_labels = input_ids.masked_fill(~picked, -100)  # (bs, seq_length)
    masked_ids = input_ids.masked_fill(picked, 4)  # (bs, seq_length): <mask>
    weights = {**WEIGHTS, "mlm": 2.0}

    # original (mlm): student(input_ids=input_ids, attention_mask=attention_mask); CE over all positions
    s_out = student(input_ids=masked_ids, attention_mask=attention_mask, output_hidden_states=True)
    with torch.no_grad():
        t_out = teacher(input_ids=masked_ids, attention_mask=attention_mask, output_hidden_states=True)
    loss_mlm = nn.CrossEntropyLoss(ignore_index=-100)(s_out.logits.view(-1, VOCAB), lm_labels.view(-1))
    original = {**original_common(s_out.logits, t_out.logits, s_out.hidden_states[-1], t_out.hidden_states[-1],
                                  attention_mask), "mlm": loss_mlm}

    module = project(student, teacher, weights, "masked_lm", fuse)
    ours = module(input_ids=masked_ids, attention_mask=attention_mask, labels=lm_labels)
    compare(ours, original, weights, student)


@pytest.mark.parametrize("fuse", [False, True], ids=["term_passes", "shared_pass"])
@pytest.mark.parametrize("weights", [{"clm": 1.0}, {"ce": 1.0}, {"cos": 1.0}, {"ce": 5.0, "clm": 2.0}])
def test_padding_changes_no_causal_term(weights, fuse):
    """A sequence's terms do not depend on what pads the others: padded with two different ids, same values."""
    torch.manual_seed(2)
    teacher = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=32)).eval()
    student, _ = build_student(teacher, "first", 1, architecture="same")
    module = project(student, teacher, weights, "causal_lm", fuse).eval()
    values = []
    for pad in (0, VOCAB - 1):
        ids, mask = right_padded(pad=pad, seed=6)
        inputs, labels = NextTokenTargets().make(ids, mask)
        values.append(module(input_ids=inputs, attention_mask=mask, labels=labels)["loss"])
    torch.testing.assert_close(values[0], values[1], atol=1e-6, rtol=1e-6)
