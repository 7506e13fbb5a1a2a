"""The LM head's projection inside the logit losses (``performance.fuse_lm_head``) against the models' own heads.

The reference is what the trainer did before: each model returns its full (bs, seq_len, voc_size) logits and
the losses read them. With the projection fused, each family's head returns its input features and the losses
project only the rows they read; values and gradients (to every student parameter, the tied embedding
included) must be the same to fp32 rounding, and no tensor of every row's logits may exist.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import (
    BertConfig,
    BertForMaskedLM,
    DistilBertConfig,
    DistilBertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    RobertaConfig,
    RobertaForMaskedLM,
)

from kd_plugin.losses import LossMixture, MixtureDeclaration, ModelDims
from kd_plugin.losses.fused_logit_rows import RowPart, fused_row_losses
from kd_plugin.losses.logit_kernels import cross_entropy_chunk, logit_mse_chunk, soft_target_kl_chunk
from kd_plugin.losses.projected_logits import ProjectedLogits
from kd_plugin.training.distillation_module import DistillationModule
from kd_plugin.training.head_features import head_features

VOCAB = 61
TINY = dict(num_hidden_layers=2, num_attention_heads=2)


def family_models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {
        "bert": BertForMaskedLM(BertConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, **TINY)),
        "distilbert": DistilBertForMaskedLM(DistilBertConfig(vocab_size=VOCAB, dim=16, hidden_dim=32, n_layers=2,
                                                             n_heads=2)),
        "roberta": RobertaForMaskedLM(RobertaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, **TINY)),
        "gpt2": GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2, bos_token_id=0,
                                           eos_token_id=0)),
        "llama": LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32,
                                              num_key_value_heads=2, bos_token_id=0, eos_token_id=0, **TINY)),
    }


@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta", "gpt2", "llama"])
def test_each_familys_features_project_to_its_own_logits_and_the_head_is_restored(family):
    model = family_models()[family].eval()
    ids = torch.randint(3, VOCAB, (2, 7))  # (bs, seq_len)
    logits = model(input_ids=ids).logits  # (bs, seq_len, V)
    with head_features(model) as head:
        features = model(input_ids=ids).logits  # (bs, seq_len, dim)
    assert head is model.get_output_embeddings() and features.shape[-1] == head.in_features != VOCAB
    projected = ProjectedLogits.of(features, head)
    torch.testing.assert_close(projected.project(features), logits, atol=1e-6, rtol=1e-6)
    rows = torch.tensor([0, 5, 13])
    torch.testing.assert_close(projected.rows(rows), logits.flatten(0, 1)[rows], atol=1e-6, rtol=1e-6)
    assert "forward" not in vars(head)  # the class's forward again
    torch.testing.assert_close(model(input_ids=ids).logits, logits)


def test_a_disabled_context_or_a_head_that_is_not_linear_keeps_the_models_logits():
    model = family_models()["bert"].eval()
    ids = torch.randint(3, VOCAB, (1, 4))
    with head_features(model, enabled=False) as head:
        assert head is None and model(input_ids=ids).logits.shape[-1] == VOCAB
    model.cls.predictions.decoder = torch.nn.Sequential(model.cls.predictions.decoder)  # not a plain Linear
    model.get_output_embeddings = lambda: model.cls.predictions.decoder
    with head_features(model) as head:
        assert head is None and model(input_ids=ids).logits.shape[-1] == VOCAB


def random_projection(n_rows=23, dim=8, seed=0, bias=True, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n_rows, dim, generator=g, dtype=dtype).requires_grad_()  # (N, dim)
    weight = torch.randn(VOCAB, dim, generator=g, dtype=dtype).requires_grad_()  # (V, dim)
    b = (torch.randn(VOCAB, generator=g, dtype=dtype).requires_grad_() if bias else None)  # (V,)
    teacher = ProjectedLogits(torch.randn(n_rows, 12, generator=g, dtype=dtype),
                              torch.randn(VOCAB, 12, generator=g, dtype=dtype), None)
    labels = torch.randint(0, VOCAB, (n_rows,), generator=g).masked_fill(torch.rand(n_rows, generator=g) < 0.2, -100)
    keep = torch.rand(n_rows, generator=g) < 0.8  # (N,)
    return features, weight, b, teacher, labels, keep


def parts_of(teacher_target, labels, keep):
    from functools import partial
    n_keep = int(keep.sum())
    return [(5.0, RowPart(partial(soft_target_kl_chunk, temperature=2.0), teacher_target, keep, n_keep)),
            (0.5, RowPart(logit_mse_chunk, teacher_target, keep, n_keep)),
            (2.0, RowPart(partial(cross_entropy_chunk, may_ignore=True), labels, None, int(labels.ne(-100).sum())))]


@pytest.mark.parametrize("chunk_rows", [1, 5, None])
@pytest.mark.parametrize("bias", [True, False])
def test_the_projected_pass_equals_the_pass_over_materialised_logits(chunk_rows, bias):
    """Values and the gradients to features, weight and bias, against autograd through ``F.linear`` + the pass."""
    features, weight, b, teacher, labels, keep = random_projection(bias=bias)
    ours, values = fused_row_losses(ProjectedLogits(features, weight, b), parts_of(teacher, labels, keep), chunk_rows)
    logits = F.linear(features, weight, b)  # (N, V), the head's output
    ref, ref_values = fused_row_losses(logits, parts_of(teacher.project(teacher.features), labels, keep), None)
    torch.testing.assert_close(values, ref_values, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-6)
    inputs = [t for t in (features, weight, b) if t is not None]
    grads = torch.autograd.grad(2.5 * ours, inputs)
    ref_grads = torch.autograd.grad(2.5 * ref, inputs)
    for grad, ref_grad in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(grad, ref_grad, atol=1e-6, rtol=1e-5)


def test_the_projected_pass_passes_gradcheck_in_float64():
    features, weight, b, teacher, labels, keep = random_projection(n_rows=7, dim=3, dtype=torch.float64)

    def total(f, w, bias):
        return fused_row_losses(ProjectedLogits(f, w, bias), parts_of(teacher, labels, keep), 3)[0]

    assert torch.autograd.gradcheck(total, (features, weight, b), eps=1e-6, atol=1e-6)


def pair(objective: str):
    """A 2-layer teacher and a 1-layer student of one family, random weights, and their loss mixture."""
    torch.manual_seed(1)
    if objective == "masked_lm":
        make = lambda n: BertForMaskedLM(BertConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32,  # noqa: E731
                                                    num_hidden_layers=n, num_attention_heads=2))
        weights = {"ce": 5.0, "mlm": 2.0, "cos": 1.0}
    else:
        make = lambda n: GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=n, n_head=2,  # noqa: E731
                                                    bos_token_id=0, eos_token_id=0))
        weights = {"ce": 5.0, "clm": 2.0, "cos": 1.0}
    teacher, student = make(2).eval(), make(1).eval()  # no dropout: two forwards see the same student
    for p in teacher.parameters():
        p.requires_grad_(False)
    dims = ModelDims(16, 16, 1, 2, 2, 2, objective=objective)
    mixture = LossMixture(MixtureDeclaration(weights=weights, temperature=2.0), dims, fuse_logit_rows=True)
    return teacher, student, mixture


def batch(objective: str, lengths=(9, 7, 9, 8)):
    g = torch.Generator().manual_seed(2)
    seq_len = max(lengths)
    mask = (torch.arange(seq_len)[None, :] < torch.tensor(lengths)[:, None]).long()  # (bs, seq_len)
    ids = torch.randint(3, VOCAB, mask.shape, generator=g)  # (bs, seq_len)
    if objective == "masked_lm":
        picked = (torch.rand(mask.shape, generator=g) < 0.3) & mask.bool()
        labels = ids.masked_fill(~picked, -100)
    else:
        labels = torch.full_like(ids, -100)
        has_next = mask.bool() & mask.roll(-1, 1).bool()
        has_next[:, -1] = False
        labels[has_next] = ids.roll(-1, 1)[has_next]
    return dict(input_ids=ids, attention_mask=mask, labels=labels)


def step(module: DistillationModule, inputs) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    module.zero_grad(set_to_none=True)
    losses = module(**inputs)
    losses["loss"].backward()
    return ({k: v.detach() for k, v in losses.items()},
            {name: p.grad.clone() for name, p in module.student.named_parameters() if p.grad is not None})


@pytest.mark.parametrize("chunk_rows", [4, None])
@pytest.mark.parametrize("objective", ["masked_lm", "causal_lm"])
def test_the_fused_head_gives_the_models_own_heads_losses_and_gradients(objective, chunk_rows):
    teacher, student, mixture = pair(objective)
    inputs = batch(objective)
    reference = step(DistillationModule(student, mixture, teacher, chunk_rows, fuse_lm_head=False), inputs)
    fused = step(DistillationModule(student, mixture, teacher, chunk_rows, fuse_lm_head=True), inputs)
    assert fused[0].keys() == reference[0].keys() and len(reference[0]) == 4
    for key, value in reference[0].items():
        torch.testing.assert_close(fused[0][key], value, atol=1e-6, rtol=1e-6)
    assert fused[1].keys() == reference[1].keys()
    assert student.get_output_embeddings().weight is student.get_input_embeddings().weight  # tied: one gradient
    for name, grad in reference[1].items():
        torch.testing.assert_close(fused[1][name], grad, atol=1e-6, rtol=1e-5, msg=name)


class VocabularyRows(TorchDispatchMode):
    """The most rows of any vocabulary-wide tensor (last dimension V) an operation creates: logits, their
    probabilities, their gradients (views, such as the transposed projection weight, hold no new data)."""

    def __init__(self):
        super().__init__()
        self.rows = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        inputs = {a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)}
        for out in result if isinstance(result, (tuple, list)) else (result,):
            if (isinstance(out, torch.Tensor) and out.dim() >= 2 and out.shape[-1] == VOCAB
                    and out.untyped_storage().data_ptr() not in inputs):
                self.rows = max(self.rows, out.numel() // VOCAB)
        return result


@pytest.mark.parametrize("objective", ["masked_lm", "causal_lm"])
def test_with_the_fused_head_no_tensor_of_every_rows_logits_exists(objective):
    teacher, student, mixture = pair(objective)
    inputs = batch(objective)
    n_rows = inputs["input_ids"].numel()  # bs * seq_len
    most_rows = {}
    for fuse in (False, True):
        with VocabularyRows() as seen:
            step(DistillationModule(student, mixture, teacher, 4, fuse_lm_head=fuse), inputs)
        most_rows[fuse] = seen.rows
    assert most_rows[False] == n_rows  # the measurement sees the heads' full logits when they exist
    masked = int(inputs["labels"].ne(-100).sum()) if objective == "masked_lm" else 0
    assert most_rows[True] == max(4, masked) < n_rows / 2  # a chunk of 4 rows, or the masked rows `mlm` reads


def test_under_bf16_autocast_the_fused_head_matches_the_heads_to_bf16_rounding():
    teacher, student, mixture = pair("causal_lm")
    teacher = teacher.to(torch.bfloat16)
    inputs = batch("causal_lm")
    results = {}
    for fuse in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            module = DistillationModule(student, mixture, teacher, 4, fuse_lm_head=fuse)
            module.zero_grad(set_to_none=True)
            losses = module(**inputs)
        losses["loss"].backward()
        assert {p.grad.dtype for p in student.parameters()} == {torch.float32}
        results[fuse] = (losses, torch.cat([p.grad.flatten() for p in student.parameters()]))
    for key in results[False][0]:
        torch.testing.assert_close(results[True][0][key], results[False][0][key], atol=2e-2, rtol=2e-2)
    grad, ref = results[True][1], results[False][1]
    assert F.cosine_similarity(grad, ref, dim=0) > 0.999
    assert (grad - ref).norm() < 0.03 * ref.norm()
