"""The chunked logit losses against the plain PyTorch formulas they replace (values and autograd gradients)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from kd_plugin.losses.logit_kernels import logit_mse, masked_lm_cross_entropy, select_rows, soft_target_kl

N_ROWS, VOC = 40, 30522  # a realistic vocabulary (bert-base-uncased), few rows to stay fast
CHUNKS = [1, 7, N_ROWS, None]  # 7 does not divide 40
TEMPERATURES = [1.0, 2.0, 4.0]


def make_logits(dtype=torch.float32, n_rows=N_ROWS, voc=VOC, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = (2 * torch.randn(n_rows, voc, generator=g)).to(dtype).requires_grad_()  # (n_rows, voc_size)
    t = (3 * torch.randn(n_rows, voc, generator=g)).to(dtype)  # (n_rows, voc_size)
    labels = torch.randint(0, voc, (n_rows,), generator=g)  # (n_rows,)
    return s, t, labels


# The plain formulas, on the same values upcast to fp32 (what the loss terms computed before).
def reference_kl(s, t, T):
    return F.kl_div(F.log_softmax(s.float() / T, -1), F.softmax(t.float() / T, -1), reduction="batchmean") * T**2


def reference_ce(s, labels):
    return F.cross_entropy(s.float(), labels)


def reference_mse(s, t):
    return ((s.float() - t.float()) ** 2).sum() / s.shape[0]


def value_and_grad(loss_fn, s):
    value = loss_fn(s)
    (grad,) = torch.autograd.grad(value, s)
    return value, grad


def assert_matches(kernel, reference, s, rtol=1e-6, atol=1e-6):
    value, grad = value_and_grad(kernel, s)
    ref_value, ref_grad = value_and_grad(reference, s)
    assert value.dtype == torch.float32 and value.shape == ()
    torch.testing.assert_close(value, ref_value, rtol=rtol, atol=atol)
    torch.testing.assert_close(grad, ref_grad, rtol=rtol, atol=atol)


@pytest.mark.parametrize("chunk_rows", CHUNKS)
@pytest.mark.parametrize("T", TEMPERATURES)
def test_soft_target_kl_equals_kl_div_batchmean(T, chunk_rows):
    s, t, _ = make_logits()
    assert_matches(lambda s: soft_target_kl(s, t, T, chunk_rows=chunk_rows), lambda s: reference_kl(s, t, T), s)


@pytest.mark.parametrize("chunk_rows", CHUNKS)
def test_masked_lm_cross_entropy_equals_f_cross_entropy(chunk_rows):
    s, _, labels = make_logits()
    assert_matches(lambda s: masked_lm_cross_entropy(s, labels, chunk_rows=chunk_rows),
                   lambda s: reference_ce(s, labels), s)


@pytest.mark.parametrize("chunk_rows", CHUNKS)
def test_logit_mse_equals_sum_of_squares_over_rows(chunk_rows):
    s, t, _ = make_logits()
    # The value is ~1.3e5 (a sum over 30522 columns): 1e-6 relative is a few fp32 ulps of the sum.
    assert_matches(lambda s: logit_mse(s, t, chunk_rows=chunk_rows), lambda s: reference_mse(s, t), s)


def test_kl_where_teacher_probabilities_underflow_to_zero():
    """p_t == 0 terms count 0 (as kl_div's xlogy): a masked (-inf) teacher logit and a very peaked teacher."""
    s, t, _ = make_logits(n_rows=6, voc=50)
    t = t * 200  # (n_rows, voc_size) most softmax(t) entries are exactly 0 in fp32
    t[:, :5] = float("-inf")
    assert (F.softmax(t, -1) == 0).float().mean() > 0.5
    for T in TEMPERATURES:
        value, grad = value_and_grad(lambda s, T=T: soft_target_kl(s, t, T, chunk_rows=4), s)
        assert torch.isfinite(value) and torch.isfinite(grad).all()
        assert_matches(lambda s, T=T: soft_target_kl(s, t, T, chunk_rows=4), lambda s, T=T: reference_kl(s, t, T), s)


@pytest.mark.parametrize("chunk_rows", [7, None])
def test_upstream_gradient_scales_the_stored_gradient(chunk_rows):
    """grad_output != 1: each loss weighted by 5 and added to another term of the same student logits."""
    s, t, labels = make_logits()
    pairs = [
        (lambda s: soft_target_kl(s, t, 2.0, chunk_rows=chunk_rows), lambda s: reference_kl(s, t, 2.0)),
        (lambda s: masked_lm_cross_entropy(s, labels, chunk_rows=chunk_rows), lambda s: reference_ce(s, labels)),
        (lambda s: logit_mse(s, t, chunk_rows=chunk_rows), lambda s: reference_mse(s, t)),
    ]
    for kernel, reference in pairs:
        assert_matches(lambda s, f=kernel: 5.0 * f(s) + s.square().mean(),
                       lambda s, f=reference: 5.0 * f(s) + s.square().mean(), s, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_logits(dtype):
    """Half inputs: fp32 value from the same values upcast; gradient in the input dtype within one ulp of
    the reference's (which autograd also rounds to that dtype)."""
    s, t, labels = make_logits(dtype=dtype)
    one_ulp = 2.0**-7 if dtype == torch.bfloat16 else 2.0**-10
    pairs = [
        (lambda s: soft_target_kl(s, t, 2.0, chunk_rows=7), lambda s: reference_kl(s, t, 2.0)),
        (lambda s: masked_lm_cross_entropy(s, labels, chunk_rows=7), lambda s: reference_ce(s, labels)),
        (lambda s: logit_mse(s, t, chunk_rows=7), lambda s: reference_mse(s, t)),
    ]
    for kernel, reference in pairs:
        value, grad = value_and_grad(kernel, s)
        ref_value, ref_grad = value_and_grad(reference, s)
        assert value.dtype == torch.float32 and grad.dtype == dtype
        torch.testing.assert_close(value, ref_value, rtol=1e-6, atol=1e-6)  # same fp32 math on exact upcasts
        torch.testing.assert_close(grad.float(), ref_grad.float(), rtol=one_ulp, atol=1e-7)


def test_fp16_gradient_survives_a_dynamic_loss_scale():
    """grad_output = 2^16 (DeepSpeed's initial fp16 loss scale, above fp16's max 65504) stays finite."""
    s, t, _ = make_logits(dtype=torch.float16)
    scale = 2.0**16
    value, grad = value_and_grad(lambda s: soft_target_kl(s, t, 2.0, chunk_rows=7) * scale, s)
    ref_value, ref_grad = value_and_grad(lambda s: reference_kl(s, t, 2.0) * scale, s)
    assert torch.isfinite(grad).all()
    # The kept gradient is fp16 before the scale is applied: entries below fp16's subnormal step (2^-24)
    # are rounded there, then multiplied by scale / n_rows; the reference rounds only after scaling.
    torch.testing.assert_close(grad.float(), ref_grad.float(), rtol=2.0**-10, atol=2.0**-24 * scale / N_ROWS)


def three_losses(t, labels, chunk_rows=3):
    """Each kernel as a function of the student logits."""
    return {
        "kl": lambda s: soft_target_kl(s, t, 2.0, chunk_rows=chunk_rows),
        "ce": lambda s: masked_lm_cross_entropy(s, labels, chunk_rows=chunk_rows),
        "mse": lambda s: logit_mse(s, t, chunk_rows=chunk_rows),
    }


def test_empty_selection_is_a_connected_zero():
    logits = torch.randn(2, 5, 30, requires_grad=True)  # (bs, seq_len, voc_size)
    teacher = torch.randn(2, 5, 30)  # (bs, seq_len, voc_size)
    none = torch.empty(0, dtype=torch.long)  # (0,)
    for name, loss in three_losses(select_rows(teacher, none), none).items():
        value = loss(select_rows(logits, none))
        assert value.grad_fn is not None, name
        assert value.dtype == torch.float32 and value.shape == ()
        assert torch.equal(value.detach(), torch.zeros(())), name
        (grad,) = torch.autograd.grad(value, logits)
        assert torch.equal(grad, torch.zeros_like(logits)), name  # zeros, so no NaN either


def test_select_rows_equals_boolean_mask_selection():
    logits = torch.randn(2, 5, 30)  # (bs, seq_len, voc_size)
    mask = torch.tensor([[1, 1, 0, 1, 0], [0, 1, 1, 0, 0]], dtype=torch.bool)  # (bs, seq_len)
    row_index = mask.flatten().nonzero().squeeze(1)  # (n_rows,)
    assert torch.equal(select_rows(logits, row_index), logits[mask])


def test_teacher_logits_get_no_gradient():
    """A teacher tensor that requires grad is detached: its .grad stays None (not a zero tensor)."""
    s, t, _ = make_logits(n_rows=5, voc=30)
    t.requires_grad_()
    for name, loss in three_losses(t, torch.zeros(5, dtype=torch.long)).items():
        loss(s).backward()
        assert t.grad is None, name
        assert s.grad is not None and s.grad.abs().sum() > 0, name
    # A student that does not require grad gives a constant, whatever the teacher.
    assert not soft_target_kl(s.detach(), t, 2.0).requires_grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_only_the_gradient_is_kept_for_backward(dtype):
    """Autograd keeps one tensor, shaped and typed like the student logits: no softmax, no fp32 copies."""
    s, t, labels = make_logits(dtype=dtype, n_rows=20, voc=300)
    packed = []

    def pack(tensor):
        packed.append(tensor)
        return tensor

    for name, loss in three_losses(t, labels, chunk_rows=7).items():
        packed.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            value = loss(s)
        assert [(p.shape, p.dtype) for p in packed] == [(s.shape, dtype)], name
        assert [(p.shape, p.dtype) for p in value.grad_fn.saved_tensors] == [(s.shape, dtype)], name
        stashed = [k for k, v in vars(value.grad_fn).items() if isinstance(v, torch.Tensor)]
        assert stashed == [], name  # nothing kept on ctx behind save_for_backward's back
    # The hook does see what the plain formula keeps: several full-size fp32 tensors.
    packed.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        reference_kl(s, t, 2.0)
    assert sum(p.shape == s.shape and p.dtype == torch.float32 for p in packed) >= 2


class RecordOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        indices = args[1] if name.startswith("index") and len(args) > 1 and isinstance(args[1], list) else []
        if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices):
            name += "[bool mask]"  # boolean-mask indexing: nonzero inside the kernel (a sync on CUDA)
        self.ops.add(name)
        return func(*args, **(kwargs or {}))


HOST_SYNC_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "index[bool mask]", "index_put[bool mask]",
                 "index_put_[bool mask]"}


def test_forward_and_backward_never_read_a_device_value_on_the_host():
    """``.item()``, ``float()``, ``bool()`` go through _local_scalar_dense; boolean indexing through nonzero."""
    logits = torch.randn(2, 5, 30, requires_grad=True)  # (bs, seq_len, voc_size)
    teacher = torch.randn(2, 5, 30)  # (bs, seq_len, voc_size)
    row_index = torch.tensor([0, 3, 4, 6, 9])  # (n_rows,)
    labels = torch.tensor([1, 2, 3, 4, 5])  # (n_rows,)
    with RecordOps() as recorder:
        losses = three_losses(select_rows(teacher, row_index), labels, chunk_rows=2).values()
        sum(loss(select_rows(logits, row_index)) for loss in losses).backward()
    assert {"index_select", "index_add"} <= recorder.ops  # it saw the forward and the backward
    assert not recorder.ops & HOST_SYNC_OPS, recorder.ops & HOST_SYNC_OPS
    # and it would see a sync (the control: the old masked-LM term's guard and boolean selection).
    with RecordOps() as recorder:
        bool(labels.ne(-100).any())
        logits[logits > 0]
    assert {"_local_scalar_dense", "index[bool mask]"} <= recorder.ops


def test_float64_gradcheck():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(5, 11, dtype=torch.float64, generator=g, requires_grad=True)  # (n_rows, voc_size)
    t = 2 * torch.randn(5, 11, dtype=torch.float64, generator=g)  # (n_rows, voc_size)
    labels = torch.randint(0, 11, (5,), generator=g)  # (n_rows,)
    assert soft_target_kl(s, t, 2.0).dtype == torch.float64  # float64 is computed in float64
    assert torch.autograd.gradcheck(lambda s: soft_target_kl(s, t, 2.0, chunk_rows=2), (s,))
    assert torch.autograd.gradcheck(lambda s: masked_lm_cross_entropy(s, labels, chunk_rows=2), (s,))
    assert torch.autograd.gradcheck(lambda s: logit_mse(s, t, chunk_rows=2), (s,))


def test_rejects_bad_arguments():
    s, t, labels = make_logits(n_rows=3, voc=7)
    with pytest.raises(ValueError, match="chunk_rows"):
        soft_target_kl(s, t, 2.0, chunk_rows=0)
    with pytest.raises(ValueError, match="temperature"):
        soft_target_kl(s, t, 0.0)
    with pytest.raises(ValueError, match="same shape"):
        logit_mse(s, t[:2])
    with pytest.raises(ValueError, match="labels"):
        masked_lm_cross_entropy(s, labels[:2])
