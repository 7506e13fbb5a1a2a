"""The shared pass over the logit rows (``performance.fuse_logit_rows``) against the plain PyTorch formulas.

The formulas are written here with ``masked_select`` / ``F.kl_div`` / ``F.cross_entropy(ignore_index=-100)``
(as the original distiller computes them), independent of both the shared pass and the per-term kernels.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F

from kd_plugin.losses import DistillationOutputs, LossMixture, MixtureDeclaration, ModelDims
from kd_plugin.losses.fused_logit_rows import RowPart, fused_row_losses
from kd_plugin.losses.logit_kernels import cross_entropy_chunk, soft_target_kl_chunk

VOCAB, T = 97, 2.0
DIMS = {objective: ModelDims(8, 8, 1, 2, objective=objective) for objective in ("causal_lm", "masked_lm")}


def batch(lengths=(9, 6, 3), seq_len=9, seed=0, dtype=torch.float32):
    """Right-padded logits and causal (next-token) labels: (bs, seq_len, V) x2, mask and labels (bs, seq_len)."""
    g = torch.Generator().manual_seed(seed)
    bs = len(lengths)
    mask = (torch.arange(seq_len)[None, :] < torch.tensor(lengths)[:, None]).long()  # (bs, seq_len)
    ids = torch.randint(0, VOCAB, (bs, seq_len), generator=g)  # (bs, seq_len)
    labels = torch.full_like(ids, -100)  # (bs, seq_len)
    has_next = mask.bool() & mask.roll(-1, 1).bool()  # (bs, seq_len)
    has_next[:, -1] = False
    labels[has_next] = ids.roll(-1, 1)[has_next]
    student = (2 * torch.randn(bs, seq_len, VOCAB, generator=g)).to(dtype).requires_grad_()  # (bs, seq_len, V)
    teacher = (3 * torch.randn(bs, seq_len, VOCAB, generator=g)).to(dtype)  # (bs, seq_len, V)
    return student, teacher, mask, labels


def outputs(student, teacher, mask, labels, chunk_rows=None):
    return DistillationOutputs(student_logits=student, teacher_logits=teacher, attention_mask=mask, labels=labels,
                               logit_chunk_rows=chunk_rows)


def plain_terms(student, teacher, mask, labels):
    """The original distiller's formulas over the real rows (fp32)."""
    s, t = student.float(), teacher.float()
    sel = mask.bool().unsqueeze(-1).expand_as(s)  # (bs, seq_len, V)
    s_rows, t_rows = s.masked_select(sel).view(-1, VOCAB), t.masked_select(sel).view(-1, VOCAB)  # (n, V)
    ce = F.kl_div(F.log_softmax(s_rows / T, -1), F.softmax(t_rows / T, -1), reduction="batchmean") * T**2
    mse = F.mse_loss(s_rows, t_rows, reduction="sum") / s_rows.shape[0]
    clm = F.cross_entropy(s.view(-1, VOCAB), labels.view(-1), ignore_index=-100)
    return {"ce": ce, "mse": mse, "clm": clm}


@pytest.mark.parametrize("chunk_rows", [1, 4, None])
@pytest.mark.parametrize("lengths", [(9, 6, 3), (9, 9, 9)], ids=["padded", "no_padding"])
@pytest.mark.parametrize("weights", [{"ce": 5.0, "clm": 2.0}, {"ce": 5.0, "clm": 2.0, "mse": 0.5}, {"clm": 1.0}])
def test_shared_pass_equals_the_plain_formulas(weights, lengths, chunk_rows):
    student, teacher, mask, labels = batch(lengths)
    mixture = LossMixture(MixtureDeclaration(weights=weights, temperature=T), DIMS["causal_lm"], fuse_logit_rows=True)
    out = outputs(student, teacher, mask, labels, chunk_rows)
    assert set(mixture._row_parts(out)) == set(weights)  # every term went through the shared pass
    ours = mixture(out)
    plain = plain_terms(student, teacher, mask, labels)
    total = sum(w * plain[name] for name, w in weights.items())
    for name, w in weights.items():
        torch.testing.assert_close(ours[f"loss_{name}"], w * plain[name], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ours["loss"], total, atol=1e-6, rtol=1e-6)
    (grad,) = torch.autograd.grad(ours["loss"], student)
    (plain_grad,) = torch.autograd.grad(total, student)
    torch.testing.assert_close(grad, plain_grad, atol=1e-6, rtol=1e-5)
    assert not grad[~mask.bool()].any()  # padding rows get no gradient


def test_masked_lm_mixes_the_shared_pass_with_the_masked_rows_term():
    """``ce`` over all tokens in the shared pass, ``mlm`` on its own masked rows: the same total and gradient."""
    student, teacher, mask, _ = batch()
    g = torch.Generator().manual_seed(3)
    picked = (torch.rand(mask.shape, generator=g) < 0.3) & mask.bool()  # (bs, seq_len)
    labels = torch.randint(0, VOCAB, mask.shape, generator=g).masked_fill(~picked, -100)  # (bs, seq_len)
    weights = {"ce": 5.0, "mlm": 2.0}
    fused = LossMixture(MixtureDeclaration(weights=weights, temperature=T), DIMS["masked_lm"], fuse_logit_rows=True)
    out = outputs(student, teacher, mask, labels, 4)
    assert set(fused._row_parts(out)) == {"ce"}
    ours = fused(out)
    plain = plain_terms(student, teacher, mask, labels)
    mlm = F.cross_entropy(student.view(-1, VOCAB), labels.view(-1), ignore_index=-100)
    total = 5.0 * plain["ce"] + 2.0 * mlm
    torch.testing.assert_close(ours["loss_mlm"], 2.0 * mlm, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ours["loss"], total, atol=1e-6, rtol=1e-6)
    (grad,) = torch.autograd.grad(ours["loss"], student)
    torch.testing.assert_close(grad, torch.autograd.grad(total, student)[0], atol=1e-6, rtol=1e-5)


def test_rows_masked_soft_targets_keep_their_own_pass():
    student, teacher, mask, labels = batch()
    decl = MixtureDeclaration(weights={"ce": 1.0}, temperature=T, options={"ce": {"rows": "masked"}})
    mixture = LossMixture(decl, DIMS["masked_lm"], fuse_logit_rows=True)
    assert mixture._row_parts(outputs(student, teacher, mask, labels.clamp(max=0).masked_fill(~mask.bool(), -100))) == {}


def test_only_the_total_carries_the_gradient():
    student, teacher, mask, labels = batch()
    ours = LossMixture(MixtureDeclaration(weights={"ce": 5.0, "clm": 2.0}, temperature=T), DIMS["causal_lm"],
                       fuse_logit_rows=True)(outputs(student, teacher, mask, labels))
    assert ours["loss"].requires_grad
    assert not ours["loss_ce"].requires_grad and not ours["loss_clm"].requires_grad


def test_first_derivative_passes_gradcheck_in_float64():
    student, teacher, mask, labels = batch(lengths=(4, 2), seq_len=4)
    student = student.detach().double().requires_grad_()
    keep = mask.bool().flatten()  # (N,)
    clm = RowPart(partial(cross_entropy_chunk, may_ignore=True), labels.flatten(), None,
                  int(labels.ne(-100).sum()))
    ce = RowPart(partial(soft_target_kl_chunk, temperature=T), teacher.double().flatten(0, 1), keep, int(keep.sum()))
    assert torch.autograd.gradcheck(lambda s: fused_row_losses(s, [(5.0, ce), (2.0, clm)], 3)[0], (student,))


def test_padding_logits_change_no_value_and_get_no_gradient():
    """Whatever the models output at padding positions (here +-1e4 instead of random), values and gradients at
    the real rows are the same, and padding rows get exactly 0 (their coefficient is 0)."""
    weights = {"ce": 5.0, "clm": 2.0, "mse": 0.5}
    mixture = LossMixture(MixtureDeclaration(weights=weights, temperature=T), DIMS["causal_lm"], fuse_logit_rows=True)
    student, teacher, mask, labels = batch()
    pads = ~mask.bool()
    first = mixture(outputs(student, teacher, mask, labels))
    (first_grad,) = torch.autograd.grad(first["loss"], student)
    other_student = student.detach().masked_fill(pads.unsqueeze(-1), 1e4).requires_grad_()
    second = mixture(outputs(other_student, teacher.masked_fill(pads.unsqueeze(-1), -1e4), mask, labels))
    (second_grad,) = torch.autograd.grad(second["loss"], other_student)
    for key in first:
        torch.testing.assert_close(first[key], second[key], atol=0, rtol=0)
    torch.testing.assert_close(first_grad, second_grad, atol=0, rtol=0)
    assert not second_grad[pads].any()


def test_a_teacher_logit_of_minus_infinity_counts_zero_as_in_kl_div():
    student, teacher, mask, labels = batch(lengths=(9, 9, 9))
    teacher = teacher.clone()
    teacher[..., :5] = float("-inf")  # p_t = 0 there: 0 * log 0 = 0
    mixture = LossMixture(MixtureDeclaration(weights={"ce": 1.0}, temperature=T), DIMS["causal_lm"],
                          fuse_logit_rows=True)
    ours = mixture(outputs(student, teacher, mask, labels))
    plain = plain_terms(student, teacher, mask, labels)["ce"]
    assert torch.isfinite(plain)
    torch.testing.assert_close(ours["loss"], plain, atol=1e-6, rtol=1e-6)


def test_bf16_logits_match_fp32_to_bf16_rounding():
    student, teacher, mask, labels = batch()
    weights = {"ce": 5.0, "clm": 2.0}
    ours = LossMixture(MixtureDeclaration(weights=weights, temperature=T), DIMS["causal_lm"], fuse_logit_rows=True)
    s16 = student.detach().bfloat16().requires_grad_()
    low = ours(outputs(s16, teacher.bfloat16(), mask, labels))
    plain = plain_terms(s16.detach().float().requires_grad_(), teacher.bfloat16().float(), mask, labels)
    total = sum(w * plain[n] for n, w in weights.items())
    assert low["loss"].dtype == torch.float32
    torch.testing.assert_close(low["loss"], total, atol=1e-5, rtol=1e-5)  # computed in fp32 from the same values
    (grad,) = torch.autograd.grad(low["loss"], s16)
    assert grad.dtype == torch.bfloat16


def test_fp16_and_mostly_padded_batches_keep_the_term_passes():
    mixture = LossMixture(MixtureDeclaration(weights={"ce": 5.0, "clm": 2.0}, temperature=T), DIMS["causal_lm"],
                          fuse_logit_rows=True)
    student, teacher, mask, labels = batch()
    assert mixture._row_parts(outputs(student.detach().half(), teacher.half(), mask, labels)) == {}
    student, teacher, mask, labels = batch(lengths=(9, 2, 1, 1), seq_len=9)  # 13 real tokens of 36 rows
    assert mixture._row_parts(outputs(student, teacher, mask, labels)) == {}
    reference = LossMixture(MixtureDeclaration(weights={"ce": 5.0, "clm": 2.0}, temperature=T), DIMS["causal_lm"])
    torch.testing.assert_close(mixture(outputs(student, teacher, mask, labels))["loss"],
                               reference(outputs(student, teacher, mask, labels))["loss"])
