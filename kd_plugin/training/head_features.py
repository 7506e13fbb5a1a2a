"""Run an LM with its vocabulary projection skipped: the model returns the projection's input features.

Every supported family's head ends in one ``nn.Linear`` onto the vocabulary, the module transformers names
``get_output_embeddings()`` (BERT ``cls.predictions.decoder``, DistilBERT ``vocab_projector``, RoBERTa
``lm_head.decoder``, GPT-2 and Llama ``lm_head``), and nothing follows it in the forward pass. While
:func:`head_features` is active that module's forward returns its input, so the model's ``logits`` output holds
the features (bs, seq_len, dim), and the loss terms apply the projection to the rows they read
(:class:`~kd_plugin.losses.projected_logits.ProjectedLogits`). The module, its parameters and their names stay
as they are (checkpoints, export and evaluation see the usual model); outside the context the head is whole.

Not used under ZeRO-3 (the projection's weight is gathered only inside the module's own forward) nor for a
head that is not a plain linear layer: the model then returns its logits as usual.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def _features(features: torch.Tensor) -> torch.Tensor:
    return features  # (bs, seq_len, dim): the projection's input, unprojected


def projection_head(model: nn.Module) -> nn.Linear | None:
    """The model's vocabulary projection, if it is a plain linear layer (else None: keep the model's head)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return head if type(head) is nn.Linear else None


@contextmanager
def head_features(model: nn.Module, enabled: bool = True) -> Iterator[nn.Linear | None]:
    """Within the context, ``model(...)`` returns the head's input features as ``logits``; yields the head
    (None when disabled or the model has no plain linear head: the model's output is then its logits)."""
    head = projection_head(model) if enabled else None
    if head is None:
        yield None
        return
    head.forward = _features  # an instance attribute: nn.Module.__call__ finds it before the class's forward
    try:
        yield head
    finally:
        del head.forward
