"""Logits kept as the LM head's input features and its vocabulary projection, computed only where a loss reads them.

An LM head ends in a linear projection onto the vocabulary (``logits = features @ W^T + b``; W (voc_size, dim)
is often tied to the input embeddings). Its output, (bs, seq_len, voc_size), is by far the largest tensor of a
distillation step for both models: at BERT-base size and 4096 tokens a micro-batch, 0.5 GB each in fp32, written
by the head, read by the losses, and mirrored by a gradient of the same size in backward. The loss terms only
need it a chunk of rows at a time, so :class:`ProjectedLogits` keeps the features (bs, seq_len, dim) and the
projection instead, and

* a term that selects rows (``mlm`` at the masked positions) projects just those rows (:meth:`rows`);
* the shared pass over every token (:mod:`kd_plugin.losses.fused_logit_rows`) projects one chunk of rows at a
  time (:meth:`chunk`), and forms the chunk's gradient with respect to the features, W and b in the same pass
  (no logits tensor of all rows exists for either model, nor its gradient).

The projection runs in ``weight``'s dtype, which the caller picks as the head would have run it (the autocast
dtype under autocast): a chunk's logits are then the same numbers the head's full output holds (the models' own
heads, ``performance.fuse_lm_head=false``, are the reference).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ProjectedLogits:
    """``features @ weight^T + bias`` on demand; ``features`` (bs, seq_len, dim) or (N, dim)."""

    features: torch.Tensor  # (bs, seq_len, dim): the input of the head's projection, in the model's dtype
    weight: torch.Tensor  # (voc_size, dim), in the dtype the projection runs in
    bias: torch.Tensor | None  # (voc_size,) in the same dtype, or None (GPT-2, Llama)

    @classmethod
    def of(cls, features: torch.Tensor, head: nn.Linear) -> ProjectedLogits:
        """The logits ``head`` would have produced from ``features``, deferred: its weight and bias are cast to
        the dtype the head runs in here (the autocast dtype when autocast is on; the cast is differentiable, so
        the gradient reaches the parameters in their own dtype, as autocast's does)."""
        device_type = features.device.type
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else head.weight.dtype
        bias = None if head.bias is None else head.bias.to(dtype)
        return cls(features, head.weight.to(dtype), bias)

    @property
    def dtype(self) -> torch.dtype:
        """The logits' dtype (what the head would have returned)."""
        return self.weight.dtype

    @property
    def flat_features(self) -> torch.Tensor:
        return self.features.flatten(0, -2)  # (N, dim), a view

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """(..., dim) -> (..., voc_size) logits."""
        return F.linear(features.to(self.weight.dtype), self.weight, self.bias)

    def rows(self, row_index: torch.Tensor) -> torch.Tensor:
        """The logits of the flat rows ``row_index`` (n_rows,) -> (n_rows, voc_size); differentiable."""
        return self.project(self.flat_features.index_select(0, row_index))

    def chunk(self, start: int, stop: int) -> torch.Tensor:
        """The logits of flat rows ``start:stop`` -> (stop - start, voc_size)."""
        return self.project(self.flat_features[start:stop])


def rows_of(target: torch.Tensor | ProjectedLogits, start: int, stop: int) -> torch.Tensor:
    """Flat rows ``start:stop`` of a target: (N, voc_size) logits or (N,) labels (a view), or projected logits
    (computed): (stop - start, voc_size) or (stop - start,)."""
    return target.chunk(start, stop) if isinstance(target, ProjectedLogits) else target[start:stop]
