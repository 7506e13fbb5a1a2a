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

# (chunk of student logits in the compute dtype, matching chunk of the target) -> (loss summed over the
# chunk's rows, gradient of that sum w.r.t. the chunk of student logits, in the compute dtype)
ChunkLossAndGrad = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def select_rows(logits: torch.Tensor, row_index: torch.Tensor) -> torch.Tensor:
    """The token rows ``row_index`` of ``logits``, by integer index (no host sync, unlike a boolean mask).

    (bs, seq_len, voc_size), (n_rows,) -> (n_rows, voc_size); ``row_index`` indexes the flattened
    ``bs * seq_len`` positions.
    """
    return logits.flatten(0, -2).index_select(0, row_index)  # (n_rows, voc_size)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for the half types and fp32; float64 stays float64 (for gradcheck)."""
    return torch.promote_types(dtype, torch.float32)


def _row_chunks(n_rows: int, chunk_rows: int | None) -> list[tuple[int, int]]:
    """(start, stop) of each chunk of rows; ``None`` is one chunk of all rows; no chunk for zero rows."""
    step = n_rows if chunk_rows is None else chunk_rows
    return [(start, min(start + step, n_rows)) for start in range(0, n_rows, max(step, 1))]


class _ChunkedRowLoss(torch.autograd.Function):
    """Mean over rows of a per-row loss, walked in row chunks; saves only d(sum of row losses)/d(student)."""

    @staticmethod
    def forward(ctx, student_logits, target, chunk_loss_and_grad: ChunkLossAndGrad, chunk_rows: int | None):
        n_rows = student_logits.shape[0]
        compute_dtype = _compute_dtype(student_logits.dtype)
        total = torch.zeros((), dtype=compute_dtype, device=student_logits.device)  # ()
        row_sum_grad = torch.empty(
            student_logits.shape, dtype=student_logits.dtype, device=student_logits.device
        )  # (n_rows, voc_size)
        for start, stop in _row_chunks(n_rows, chunk_rows):
            s_chunk = student_logits[start:stop].to(compute_dtype)  # (chunk, voc_size)
            chunk_loss, chunk_grad = chunk_loss_and_grad(s_chunk, target[start:stop])  # (), (chunk, voc_size)
            total = total + chunk_loss  # ()
            row_sum_grad[start:stop].copy_(chunk_grad)  # (chunk, voc_size) cast to the student dtype
            del s_chunk, chunk_grad
        ctx.save_for_backward(row_sum_grad)
        ctx.n_rows, ctx.chunk_rows, ctx.compute_dtype = n_rows, chunk_rows, compute_dtype
        return total / max(n_rows, 1)  # () zero when there are no rows

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        (row_sum_grad,) = ctx.saved_tensors  # (n_rows, voc_size)
        scale = grad_output.to(ctx.compute_dtype) / max(ctx.n_rows, 1)  # ()
        if row_sum_grad.dtype == ctx.compute_dtype:
            return row_sum_grad * scale, None, None, None  # (n_rows, voc_size)
        # Half-precision logits: scale in fp32, chunk by chunk (a loss scale of 2^16 overflows fp16).
        grad = torch.empty_like(row_sum_grad)  # (n_rows, voc_size)
        for start, stop in _row_chunks(ctx.n_rows, ctx.chunk_rows):
            grad[start:stop].copy_(row_sum_grad[start:stop].to(ctx.compute_dtype) * scale)  # (chunk, voc_size)
        return grad, None, None, None


def _check_chunk_rows(chunk_rows: int | None) -> None:
    if chunk_rows is not None and (not isinstance(chunk_rows, int) or chunk_rows < 1):
        raise ValueError(f"chunk_rows must be a positive int or None, got {chunk_rows!r}")


def _check_pair(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    if student_logits.dim() != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "expected student and teacher logits of the same shape (n_rows, voc_size), got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )


def _soft_target_kl_chunk(s: torch.Tensor, t: torch.Tensor, temperature: float):
    log_p_s = torch.log_softmax(s / temperature, dim=-1)  # (chunk, voc_size)
    log_p_t = torch.log_softmax(t.to(s.dtype) / temperature, dim=-1)  # (chunk, voc_size)
    p_t = log_p_t.exp()  # (chunk, voc_size)
    kl_terms = log_p_t.sub_(log_p_s).mul_(p_t)  # (chunk, voc_size) p_t * (log p_t - log p_s), in place
    kl_terms.masked_fill_(p_t == 0, 0.0)  # (chunk, voc_size) 0 * log 0 = 0, as F.kl_div (xlogy)
    loss = kl_terms.sum() * temperature**2  # ()
    del kl_terms
    grad = log_p_s.exp_().sub_(p_t).mul_(temperature)  # (chunk, voc_size) T * (p_s - p_t), in place
    return loss, grad


def _masked_lm_chunk(s: torch.Tensor, labels: torch.Tensor):
    log_p = torch.log_softmax(s, dim=-1)  # (chunk, voc_size)
    label_col = labels.unsqueeze(1)  # (chunk, 1)
    loss = -log_p.gather(1, label_col).sum()  # ()
    minus_one = torch.full(label_col.shape, -1.0, dtype=s.dtype, device=s.device)  # (chunk, 1)
    grad = log_p.exp_().scatter_add_(1, label_col, minus_one)  # (chunk, voc_size) softmax(s) - onehot
    return loss, grad


def _logit_mse_chunk(s: torch.Tensor, t: torch.Tensor):
    diff = s - t.to(s.dtype)  # (chunk, voc_size)
    loss = diff.square().sum()  # ()
    grad = diff.mul_(2.0)  # (chunk, voc_size) 2 * (s - t), in place
    return loss, grad


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
    chunk = partial(_soft_target_kl_chunk, temperature=float(temperature))
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
    return _ChunkedRowLoss.apply(student_logits, labels, _masked_lm_chunk, chunk_rows)  # ()


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
    return _ChunkedRowLoss.apply(student_logits, teacher_logits.detach(), _logit_mse_chunk, chunk_rows)  # ()
