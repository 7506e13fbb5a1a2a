"""Vocabulary-sized logit losses computed in row chunks, with the gradient formed in the forward pass.

The three losses DistilBERT puts on the output logits, over ``n_rows`` already selected token rows
(``s`` = student logits, ``t`` = teacher logits, ``T`` = temperature, ``V`` = vocabulary):

    soft-target KL   L_ce  = T^2 / n_rows * sum_rows sum_V p_t * (log p_t - log p_s),
                     p_s = softmax(s / T), p_t = softmax(t / T)
                     dL_ce/ds = T * (p_s - p_t) / n_rows

    masked-LM CE     L_mlm = 1 / n_rows * sum_rows -log softmax(s)[label]
                     dL_mlm/ds = (softmax(s) - onehot(label)) / n_rows

    logit MSE        L_mse = 1 / n_rows * sum_rows sum_V (s - t)^2
                     dL_mse/ds = 2 * (s - t) / n_rows

The plain PyTorch form (``F.kl_div(F.log_softmax(s.float() / T), F.softmax(t.float() / T), "batchmean")``
etc.) materialises several (n_rows, V) fp32 tensors for both models and autograd keeps some of them until
backward. Here a custom ``autograd.Function`` walks the rows in chunks of ``chunk_rows``: each chunk is
upcast to fp32 (float64 stays float64), its loss and its gradient are computed together from closed forms,
and only the gradient is kept, in the student logits' dtype. Backward is one multiplication by
``grad_output / n_rows``; nothing is recomputed.

Nothing here synchronises the host with the device: no ``.item()``, no boolean-mask indexing. The caller
selects rows with integer indices (``select_rows``), so ``n_rows`` is a Python int; an empty selection
gives a zero loss that is still connected to the student logits (zero gradient, no NaN).

The stored gradient is that of the *sum* over rows (``n_rows`` times the gradient of the mean); the
``1 / n_rows`` is applied in backward together with ``grad_output``. For fp16 logits this keeps small
probabilities out of fp16's subnormal range, which a stored ``/ n_rows`` gradient would reach first.

The teacher logits are detached: they never receive a gradient (their ``.grad`` stays ``None``).
Double backward is not supported.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch

# Each chunk briefly holds about four (chunk_rows, voc_size) fp32 temporaries: 4 x 1024 x 30522 x 4 B = 0.5 GB.
DEFAULT_CHUNK_ROWS = 1024
# On CPU, chunks whose temporaries stay near the caches and under glibc's mmap threshold (32 MiB: larger blocks
# are mapped and page-faulted afresh at every allocation) are much faster: DistilGPT2's ce + clm over 16 x 100
# positions at a 30,522-token vocabulary take 271-296 ms with 16-128-row chunks and 610 ms with 1024-row ones in
# the shared pass (benchmarks/results/2026-12-05-cpu-logit-chunks.json); on CUDA large chunks keep launches few.
CPU_CHUNK_BYTES = 8 * 2**20


def auto_chunk_rows(voc_size: int, device_type: str) -> int:
    """``performance.logit_chunk_rows=auto``: rows per chunk for this vocabulary on this kind of device."""
    if device_type == "cpu":
        return max(1, CPU_CHUNK_BYTES // (4 * voc_size))
    return DEFAULT_CHUNK_ROWS


# The per-chunk formula of a loss: (student chunk s in the compute dtype (chunk, V), the matching chunk of the
# target, a coefficient c (a float, or a (chunk, 1) tensor of per-row coefficients), an output chunk `out`
# (chunk, V) in the compute dtype, accumulate) -> the loss of each row (chunk,); it writes c * d(row losses)/ds
# into `out` (accumulate=False) or adds it (accumulate=True), folding c into that one write: no extra pass.
ChunkLossAndGrad = Callable[[torch.Tensor, torch.Tensor, "float | torch.Tensor", torch.Tensor, bool], torch.Tensor]


def write_scaled(out: torch.Tensor, grad: torch.Tensor, coef: float | torch.Tensor, accumulate: bool) -> None:
    """``out = coef * grad`` or ``out += coef * grad``, one pass over the chunk (``grad`` may be reused)."""
    if accumulate:
        if isinstance(coef, torch.Tensor):
            out.addcmul_(grad, coef)  # (chunk, V) += (chunk, V) * (chunk, 1)
        else:
            out.add_(grad, alpha=coef)  # (chunk, V)
    else:
        torch.mul(grad, coef, out=out)  # (chunk, V)


def select_rows(logits: torch.Tensor, row_index: torch.Tensor) -> torch.Tensor:
    """The token rows ``row_index`` of ``logits``, by integer index (no host sync, unlike a boolean mask).

    (bs, seq_len, voc_size), (n_rows,) -> (n_rows, voc_size); ``row_index`` indexes the flattened
    ``bs * seq_len`` positions.
    """
    return logits.flatten(0, -2).index_select(0, row_index)  # (n_rows, voc_size)


def compute_dtype_of(dtype: torch.dtype) -> torch.dtype:
    """fp32 for the half types and fp32; float64 stays float64 (for gradcheck)."""
    return torch.promote_types(dtype, torch.float32)


def row_chunks(n_rows: int, chunk_rows: int | None) -> list[tuple[int, int]]:
    """(start, stop) of each chunk of rows; ``None`` is one chunk of all rows; no chunk for zero rows."""
    step = n_rows if chunk_rows is None else chunk_rows
    return [(start, min(start + step, n_rows)) for start in range(0, n_rows, max(step, 1))]


class _ChunkedRowLoss(torch.autograd.Function):
    """Mean over rows of a per-row loss, walked in row chunks; saves only d(sum of row losses)/d(student)."""

    @staticmethod
    def forward(ctx, student_logits, target, chunk_loss_and_grad: ChunkLossAndGrad, chunk_rows: int | None):
        n_rows = student_logits.shape[0]
        compute_dtype = compute_dtype_of(student_logits.dtype)
        total = torch.zeros((), dtype=compute_dtype, device=student_logits.device)  # ()
        row_sum_grad = torch.empty(
            student_logits.shape, dtype=student_logits.dtype, device=student_logits.device
        )  # (n_rows, voc_size)
        for start, stop in row_chunks(n_rows, chunk_rows):
            s_chunk = student_logits[start:stop].to(compute_dtype)  # (chunk, voc_size)
            out = chunk_output(row_sum_grad, start, stop, compute_dtype)  # (chunk, voc_size)
            total = total + chunk_loss_and_grad(s_chunk, target[start:stop], 1.0, out, False).sum()  # ()
            if out.dtype != row_sum_grad.dtype:
                row_sum_grad[start:stop].copy_(out)  # (chunk, voc_size) cast to the student dtype
            del s_chunk, out
        ctx.save_for_backward(row_sum_grad)
        ctx.n_rows, ctx.chunk_rows, ctx.compute_dtype = n_rows, chunk_rows, compute_dtype
        return total / max(n_rows, 1)  # () zero when there are no rows

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        (row_sum_grad,) = ctx.saved_tensors  # (n_rows, voc_size)
        scale = grad_output.to(ctx.compute_dtype) / max(ctx.n_rows, 1)  # ()
        return scale_saved_gradient(row_sum_grad, scale, ctx.compute_dtype, ctx.chunk_rows), None, None, None


def chunk_output(gradient: torch.Tensor, start: int, stop: int, compute_dtype: torch.dtype) -> torch.Tensor:
    """Where a chunk's gradient is written: the stored gradient's rows themselves when they are in the compute
    dtype (no copy), else a compute-dtype chunk the caller casts into them."""
    if gradient.dtype == compute_dtype:
        return gradient[start:stop]  # (chunk, voc_size), a view
    return torch.empty((stop - start, gradient.shape[1]), dtype=compute_dtype, device=gradient.device)


def scale_saved_gradient(saved: torch.Tensor, scale: torch.Tensor, compute_dtype: torch.dtype,
                         chunk_rows: int | None) -> torch.Tensor:
    """``saved * scale`` in the compute dtype, returned in ``saved``'s dtype; (n_rows, voc_size) -> same."""
    if saved.dtype == compute_dtype:
        return saved * scale  # (n_rows, voc_size)
    # Half-precision logits: scale in fp32, chunk by chunk (a loss scale of 2^16 overflows fp16).
    grad = torch.empty_like(saved)  # (n_rows, voc_size)
    for start, stop in row_chunks(saved.shape[0], chunk_rows):
        grad[start:stop].copy_(saved[start:stop].to(compute_dtype) * scale)  # (chunk, voc_size)
    return grad


def _check_chunk_rows(chunk_rows: int | None) -> None:
    if chunk_rows is not None and (not isinstance(chunk_rows, int) or chunk_rows < 1):
        raise ValueError(f"chunk_rows must be a positive int or None, got {chunk_rows!r}")


def _check_pair(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    if student_logits.dim() != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "expected student and teacher logits of the same shape (n_rows, voc_size), got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )


def soft_target_kl_chunk(s, t, coef, out, accumulate, temperature: float) -> torch.Tensor:
    """Rows of T^2 * KL(p_t || p_s), p = softmax(x / T); gradient T * (p_s - p_t).

    A teacher logit of -inf (p_t = 0) is clamped to -1e30 first, so 0 * log 0 counts 0 as in ``F.kl_div``.
    """
    inv_t = 1.0 / temperature
    log_p_s = torch.log_softmax(s * inv_t, dim=-1)  # (chunk, voc_size)
    log_p_t = torch.log_softmax((t.to(s.dtype) * inv_t).clamp_(min=-1e30), dim=-1)  # (chunk, voc_size)
    p_t = log_p_t.exp()  # (chunk, voc_size)
    row_losses = log_p_t.sub_(log_p_s).mul_(p_t).sum(dim=-1) * temperature**2  # (chunk,) in place
    del log_p_t
    grad = log_p_s.exp_().sub_(p_t)  # (chunk, voc_size) p_s - p_t, in place
    write_scaled(out, grad, coef * temperature, accumulate)
    return row_losses


def cross_entropy_chunk(s, labels, coef, out, accumulate, may_ignore: bool = False) -> torch.Tensor:
    """Rows of -log softmax(s)[label]; gradient softmax(s) - onehot(label).

    With ``may_ignore`` a label of -100 (no target) gives a row of loss 0 and gradient 0 (its coefficient is 0);
    without it every label must be a valid id."""
    label_col = (labels.clamp(min=0) if may_ignore else labels).unsqueeze(1)  # (chunk, 1) ignored rows read column 0
    log_p = torch.log_softmax(s, dim=-1)  # (chunk, voc_size)
    row_losses = -log_p.gather(1, label_col).squeeze(1)  # (chunk,)
    if may_ignore:
        keep = labels.ne(-100)  # (chunk,)
        row_losses = row_losses.masked_fill(~keep, 0.0)  # (chunk,)
        coef = keep.unsqueeze(1).to(s.dtype) * coef  # (chunk, 1) per-row coefficient, 0 where ignored
    write_scaled(out, log_p.exp_(), coef, accumulate)  # softmax(s) (chunk, voc_size)
    row_coef = coef if isinstance(coef, torch.Tensor) else torch.full(label_col.shape, coef, dtype=s.dtype,
                                                                       device=s.device)  # (chunk, 1)
    out.scatter_add_(1, label_col, -row_coef)  # (chunk, voc_size) - coef * onehot(label)
    return row_losses


def logit_mse_chunk(s, t, coef, out, accumulate) -> torch.Tensor:
    """Rows of sum_V (s - t)^2; gradient 2 * (s - t)."""
    diff = s - t.to(s.dtype)  # (chunk, voc_size)
    row_losses = diff.square().sum(dim=-1)  # (chunk,)
    write_scaled(out, diff, coef * 2.0, accumulate)
    return row_losses


def soft_target_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    chunk_rows: int | None = DEFAULT_CHUNK_ROWS,
) -> torch.Tensor:
    """T^2 * mean over rows of KL(softmax(t/T) || softmax(s/T)), summed over the vocabulary.

    Equal to ``F.kl_div(F.log_softmax(s.float() / T, -1), F.softmax(t.float() / T, -1), reduction="batchmean")
    * T**2``. Inputs (n_rows, voc_size), any float dtype; returns a fp32 scalar (float64 for float64 input).
    """
    _check_pair(student_logits, teacher_logits)
    _check_chunk_rows(chunk_rows)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    chunk = partial(soft_target_kl_chunk, temperature=float(temperature))
    return _ChunkedRowLoss.apply(student_logits, teacher_logits.detach(), chunk, chunk_rows)  # ()


def masked_lm_cross_entropy(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    chunk_rows: int | None = DEFAULT_CHUNK_ROWS,
) -> torch.Tensor:
    """Mean cross-entropy of the student at the masked rows, ``F.cross_entropy(s.float(), labels)``.

    Logits (n_rows, voc_size), labels (n_rows,) long, all valid (no ignore index: the rows are already the
    masked positions; an out-of-range label is not checked, as that would need a host sync).
    """
    if student_logits.dim() != 2 or labels.shape != student_logits.shape[:1]:
        raise ValueError(
            "expected logits (n_rows, voc_size) and labels (n_rows,), got "
            f"{tuple(student_logits.shape)} and {tuple(labels.shape)}"
        )
    _check_chunk_rows(chunk_rows)
    return _ChunkedRowLoss.apply(student_logits, labels, cross_entropy_chunk, chunk_rows)  # ()


def logit_mse(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    chunk_rows: int | None = DEFAULT_CHUNK_ROWS,
) -> torch.Tensor:
    """Sum over rows and vocabulary of (s - t)^2, divided by n_rows (``MSELoss(reduction="sum") / n``).

    Inputs (n_rows, voc_size); returns a fp32 scalar (float64 for float64 input).
    """
    _check_pair(student_logits, teacher_logits)
    _check_chunk_rows(chunk_rows)
    return _ChunkedRowLoss.apply(student_logits, teacher_logits.detach(), logit_mse_chunk, chunk_rows)  # ()
