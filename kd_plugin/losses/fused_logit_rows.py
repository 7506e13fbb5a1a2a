"""One pass over the student's logit rows for every logit term that averages over all real tokens (and, with
one term, what each logit term of :mod:`kd_plugin.losses.logit_kernels` runs on its own rows).

Each logit term on its own (``logit_kernels``) selects its rows with ``index_select`` (a copy of
(n_rows, voc_size) for each model), walks them in chunks, stores its own (n_rows, voc_size) gradient, and its
backward scatters that gradient into a zeroed (bs * seq_len, voc_size) tensor that autograd then adds to the
other terms'. DistilGPT2's recipe (``ce`` over every real token, ``clm`` over every token with a next token)
reads almost the same rows twice and so pays all of it twice: three row copies, two stored gradients, two
zero-filled scatters and an addition, all vocabulary-sized.

Here the terms that read all token rows share one pass over the flat logits, in place:

    for each chunk of flat rows (a view, no copy):  s = student chunk upcast to fp32 once
        for each term k:  row losses r_k (chunk,); G[chunk] (+)= c_k * g_k, g_k the gradient of the term's
                          row sum, written straight into the stored gradient G (fp32 logits) in one pass
        rows that do not count (padding; a position without a next token) get r_k = 0 and c_k = 0

    L_k = sum of r_k / n_k        (n_k: the term's row count, a host int)
    total = sum_k w_k * L_k       dtotal/ds = (w_max / n_max) * G,  c_k = (w_k / w_max) * (n_max / n_k)

So there is no row copy, one stored gradient, no scatter and no addition; padding rows cost their share of the
softmaxes (the mixture uses this pass only when real tokens are at least half of the rows, as in the trainer's
length-grouped batches). ``c_k <= n_max / n_k`` keeps the stored gradient within the magnitudes the single-term
kernels store (the weight and ``1 / n`` are applied in backward); fp16 logits are not fused (a relative weight
of 1e-6 would underflow fp16 in ``g_k``): the mixture keeps the single-term path for them.

The student's logits may also come as :class:`~kd_plugin.losses.projected_logits.ProjectedLogits` (the LM head's
features and its vocabulary projection, ``performance.fuse_lm_head``): each chunk of logits is then computed
from the chunk's features, and its gradient turned at once into the features', the projection weight's and the
bias's (``_FusedProjectedRowLosses``), so neither model's logits exist beyond one chunk. A teacher target may be
projected the same way.

Values and gradients equal the single-term kernels' to fp32 rounding, with or without the projection inside
(``tests/test_losses_fused_rows.py``, ``tests/test_losses_projected_logits.py``). Nothing here reads a device
value on the host.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kd_plugin.losses.projected_logits import ProjectedLogits, rows_of

# The per-chunk formula of a loss: (student chunk s in the compute dtype (chunk, V), the matching chunk of the
# target, a coefficient c (a float, or a (chunk, 1) tensor of per-row coefficients), an output chunk `out`
# (chunk, V) in the compute dtype, accumulate) -> the loss of each row (chunk,); it writes c * d(row losses)/ds
# into `out` (accumulate=False) or adds it (accumulate=True), folding c into that one write: no extra pass.
ChunkLossAndGrad = Callable[[torch.Tensor, torch.Tensor, "float | torch.Tensor", torch.Tensor, bool], torch.Tensor]


def compute_dtype_of(dtype: torch.dtype) -> torch.dtype:
    """fp32 for the half types and fp32; float64 stays float64 (for gradcheck)."""
    return torch.promote_types(dtype, torch.float32)


def row_chunks(n_rows: int, chunk_rows: int | None) -> list[tuple[int, int]]:
    """(start, stop) of each chunk of rows; ``None`` is one chunk of all rows; no chunk for zero rows."""
    step = n_rows if chunk_rows is None else chunk_rows
    return [(start, min(start + step, n_rows)) for start in range(0, n_rows, max(step, 1))]


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


@dataclass(frozen=True)
class RowPart:
    """One term's share of the pass: its chunk formula, its target at every flat row, the rows that count."""

    chunk: ChunkLossAndGrad  # writes (or adds) its coefficient times its gradient, returns its row losses
    target: torch.Tensor | ProjectedLogits  # (N, voc_size) teacher logits, detached, or the teacher's projected
    # logits; or (N,) label ids, -100 where none
    keep: torch.Tensor | None  # (N,) bool: rows that count (None = every row, or the -100 labels decide)
    n_rows: int  # how many rows count: the term's normaliser (a host int, never read from the device)


def _scales(weights: tuple[float, ...], parts: tuple[RowPart, ...]) -> tuple[list[float], float]:
    """Each part's coefficient ``c_k`` in the stored gradient, and the factor backward applies to it."""
    w_max = max(weights)
    n_max = max(max(part.n_rows for part in parts), 1)
    scales = [(w / w_max) * (n_max / max(part.n_rows, 1)) for w, part in zip(weights, parts, strict=True)]
    return scales, w_max / n_max


def _run_parts(s_chunk: torch.Tensor, out: torch.Tensor, start: int, stop: int, parts: tuple[RowPart, ...],
               scales: list[float], sums: list[torch.Tensor]) -> None:
    """Every part on one chunk of rows: adds its row losses to ``sums[k]`` and writes ``sum_k c_k * g_k`` into
    ``out``. s_chunk, out: (chunk, voc_size) in the compute dtype."""
    for k, part in enumerate(parts):
        coef = scales[k]
        if part.keep is not None:
            keep = part.keep[start:stop]  # (chunk,)
            coef = keep.unsqueeze(1).to(s_chunk.dtype) * coef  # (chunk, 1): 0 on rows that do not count
        row_losses = part.chunk(s_chunk, rows_of(part.target, start, stop), coef, out, k > 0)  # (chunk,)
        if part.keep is not None:
            row_losses = row_losses.masked_fill(~keep, 0.0)  # (chunk,)
        sums[k] = sums[k] + row_losses.sum()  # ()


def _weighted_values(ctx, sums: list[torch.Tensor], weights: tuple[float, ...], parts: tuple[RowPart, ...]):
    """``(sum_k w_k * L_k, (L_1, ..., L_K))`` from the parts' row-loss sums; the values are not differentiable."""
    values = torch.stack([total / max(part.n_rows, 1) for total, part in zip(sums, parts, strict=True)])  # (K,)
    weight_vector = torch.tensor(weights, dtype=values.dtype, device=values.device)  # (K,)
    ctx.mark_non_differentiable(values)
    return (weight_vector * values).sum(), values  # (), (K,)


class _FusedRowLosses(torch.autograd.Function):
    """``(total, values)``: ``total = sum_k w_k * L_k`` (differentiable), ``values = (L_1, ..., L_K)`` (not)."""

    @staticmethod
    def forward(ctx, student_rows, weights: tuple[float, ...], parts: tuple[RowPart, ...], chunk_rows: int | None):
        compute_dtype = compute_dtype_of(student_rows.dtype)
        scales, ctx.gradient_scale = _scales(weights, parts)
        sums = [torch.zeros((), dtype=compute_dtype, device=student_rows.device) for _ in parts]  # each ()
        gradient = torch.empty(student_rows.shape, dtype=student_rows.dtype, device=student_rows.device)  # (N, V)
        for start, stop in row_chunks(student_rows.shape[0], chunk_rows):
            s_chunk = student_rows[start:stop].to(compute_dtype)  # (chunk, voc_size), a view for fp32 logits
            out = chunk_output(gradient, start, stop, compute_dtype)  # (chunk, voc_size), written by the parts
            _run_parts(s_chunk, out, start, stop, parts, scales, sums)
            if out.dtype != gradient.dtype:
                gradient[start:stop].copy_(out)  # (chunk, voc_size) cast to the logits' dtype
            del s_chunk, out
        ctx.save_for_backward(gradient)
        ctx.chunk_rows, ctx.compute_dtype = chunk_rows, compute_dtype
        return _weighted_values(ctx, sums, weights, parts)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_total, _grad_values):
        (gradient,) = ctx.saved_tensors  # (N, voc_size)
        scale = grad_total.to(ctx.compute_dtype) * ctx.gradient_scale  # ()
        return scale_saved_gradient(gradient, scale, ctx.compute_dtype, ctx.chunk_rows), None, None, None


class _FusedProjectedRowLosses(torch.autograd.Function):
    """The same pass over projected logits (``features @ weight^T + bias``, chunk by chunk): each chunk's logit
    gradient ``G`` (chunk, V) is turned at once into the features' rows ``G @ weight`` and added into
    ``weight``'s ``G^T @ features`` and ``bias``'s ``sum_rows G``; nothing vocabulary-sized outlives a chunk.

    Half-precision projections (bf16) run the three matmuls in bf16, as the head and its backward would; the
    weight's and bias's gradients are summed over chunks in fp32 and rounded once, at the end.
    """

    @staticmethod
    def forward(ctx, features, weight, bias, weights: tuple[float, ...], parts: tuple[RowPart, ...],
                chunk_rows: int | None):
        # features (N, dim) any float dtype; weight (V, dim) and bias (V,) in the projection's dtype
        with torch.autocast(features.device.type, enabled=False):  # the dtypes below are chosen explicitly
            compute_dtype = compute_dtype_of(weight.dtype)
            scales, ctx.gradient_scale = _scales(weights, parts)
            sums = [torch.zeros((), dtype=compute_dtype, device=features.device) for _ in parts]  # each ()
            grad_features = torch.empty_like(features)  # (N, dim)
            grad_weight = torch.zeros(weight.shape, dtype=compute_dtype, device=weight.device)  # (V, dim)
            grad_bias = None if bias is None else torch.zeros(bias.shape, dtype=compute_dtype, device=bias.device)
            for start, stop in row_chunks(features.shape[0], chunk_rows):
                f_chunk = features[start:stop].to(weight.dtype)  # (chunk, dim)
                s_chunk = F.linear(f_chunk, weight, bias).to(compute_dtype)  # (chunk, V)
                out = torch.empty_like(s_chunk)  # (chunk, V): sum_k c_k * g_k
                _run_parts(s_chunk, out, start, stop, parts, scales, sums)
                del s_chunk
                if grad_bias is not None:
                    grad_bias.add_(out.sum(dim=0))  # (V,)
                g = out.to(weight.dtype)  # (chunk, V), the logits' gradient as the head's backward sees it
                grad_features[start:stop].copy_(g @ weight)  # (chunk, dim)
                if g.dtype == compute_dtype:
                    grad_weight.addmm_(g.t(), f_chunk)  # (V, dim) += (V, chunk) @ (chunk, dim)
                else:
                    grad_weight.add_(g.t() @ f_chunk)  # (V, dim): the half-precision product, summed in fp32
                del out, g
            ctx.save_for_backward(grad_features, grad_weight, grad_bias)
            ctx.compute_dtype, ctx.weight_dtype = compute_dtype, weight.dtype
            return _weighted_values(ctx, sums, weights, parts)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_total, _grad_values):
        grad_features, grad_weight, grad_bias = ctx.saved_tensors  # (N, dim), (V, dim), (V,) or None
        scale = grad_total.to(ctx.compute_dtype) * ctx.gradient_scale  # ()
        d_features = (grad_features.to(ctx.compute_dtype) * scale).to(grad_features.dtype)  # (N, dim)
        d_weight = (grad_weight * scale).to(ctx.weight_dtype)  # (V, dim)
        d_bias = None if grad_bias is None else (grad_bias * scale).to(ctx.weight_dtype)  # (V,)
        return d_features, d_weight, d_bias, None, None, None


def fused_row_losses(
    student_logits: torch.Tensor | ProjectedLogits, weighted_parts: list[tuple[float, RowPart]],
    chunk_rows: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum_k w_k * L_k, (L_1, ..., L_K))`` for the parts, in one pass over the student's logits.

    ``student_logits`` (bs, seq_len, voc_size) or (N, voc_size), or :class:`ProjectedLogits` (the head's
    features and projection: the logits exist a chunk at a time); weights > 0. The values are detached (for
    logging): only the total carries the gradient.
    """
    if not weighted_parts or any(not w > 0 for w, _ in weighted_parts):
        raise ValueError("fused_row_losses needs at least one part, each with a weight > 0")
    weights = tuple(float(w) for w, _ in weighted_parts)
    parts = tuple(part for _, part in weighted_parts)
    if isinstance(student_logits, ProjectedLogits):
        return _FusedProjectedRowLosses.apply(student_logits.flat_features, student_logits.weight,
                                              student_logits.bias, weights, parts, chunk_rows)
    rows = student_logits.flatten(0, -2)  # (N, voc_size), a view
    return _FusedRowLosses.apply(rows, weights, parts, chunk_rows)
