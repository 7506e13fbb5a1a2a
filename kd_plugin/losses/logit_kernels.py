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
backward. Here each loss is a per-chunk formula (``*_chunk`` below: its rows' losses and their gradient,
computed together from closed forms) run by the pass of :mod:`kd_plugin.losses.fused_logit_rows`, alone (the
functions below, on already selected rows) or with the other terms over all tokens (the loss mixture). The
pass walks the rows in chunks of ``chunk_rows``, upcasts each to fp32 (float64 stays float64), and keeps only
the gradient, in the student logits' dtype. Backward is one multiplication by ``grad_output / n_rows``;
nothing is recomputed.

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

from functools import partial

import torch

from kd_plugin.losses.fused_logit_rows import ChunkLossAndGrad, RowPart, fused_row_losses
from kd_plugin.losses.projected_logits import ProjectedLogits

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


def write_scaled(out: torch.Tensor, grad: torch.Tensor, coef: float | torch.Tensor, accumulate: bool) -> None:
    """``out = coef * grad`` or ``out += coef * grad``, one pass over the chunk (``grad`` may be reused)."""
    if accumulate:
        if isinstance(coef, torch.Tensor):
            out.addcmul_(grad, coef)  # (chunk, V) += (chunk, V) * (chunk, 1)
        else:
            out.add_(grad, alpha=coef)  # (chunk, V)
    else:
        torch.mul(grad, coef, out=out)  # (chunk, V)


def select_rows(logits: torch.Tensor | ProjectedLogits, row_index: torch.Tensor) -> torch.Tensor:
    """The token rows ``row_index`` of ``logits``, by integer index (no host sync, unlike a boolean mask).

    (bs, seq_len, voc_size), (n_rows,) -> (n_rows, voc_size); ``row_index`` indexes the flattened
    ``bs * seq_len`` positions. Projected logits project only those rows.
    """
    if isinstance(logits, ProjectedLogits):
        return logits.rows(row_index)  # (n_rows, voc_size)
    return logits.flatten(0, -2).index_select(0, row_index)  # (n_rows, voc_size)


def _mean_over_rows(student_logits: torch.Tensor, target: torch.Tensor, chunk: ChunkLossAndGrad,
                    chunk_rows: int | None) -> torch.Tensor:
    """One term's mean over the given rows: the shared pass of :mod:`kd_plugin.losses.fused_logit_rows` with this
    term alone, every row counting. (n_rows, voc_size) -> () fp32 (float64 for float64 input)."""
    return fused_row_losses(student_logits, [(1.0, RowPart(chunk, target, None, student_logits.shape[0]))],
                            chunk_rows)[0]


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
    return _mean_over_rows(student_logits, teacher_logits.detach(), chunk, chunk_rows)  # ()


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
    return _mean_over_rows(student_logits, labels, cross_entropy_chunk, chunk_rows)  # ()


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
    return _mean_over_rows(student_logits, teacher_logits.detach(), logit_mse_chunk, chunk_rows)  # ()
