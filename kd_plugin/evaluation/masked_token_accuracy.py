"""Masked-token accuracy on a held-out split: the number a teacher, a prepared teacher and a student share.

Every model is measured on the **same masks**: sequence ``i`` of the split (after ``max_sequences``) is masked
by :class:`kd_plugin.masking.DynamicMasker` with a generator seeded from ``(seed, i)`` and uniform selection
(no frequency smoothing), so the masks depend neither on the model, nor on ``batch_size``, nor on the order the
batches run in. With ``n_real`` the real (non-special) tokens of sequence ``i``, ``ceil(mlm_probability *
n_real)`` of them are selected; each selected token becomes ``[MASK]`` / a random token / stays unchanged with
the fractions of ``masking`` (default 80/10/10, the training corruption). Over the selected positions ``M``::

    accuracy = |{p in M : argmax_v logits[p, v] == original[p]}| / |M|
    loss     = mean_{p in M} -log softmax(logits[p])[original[p]]     (natural log, fp32)

Only ``input_ids`` and ``attention_mask`` reach the model (DistilBERT has no token types; BERT's default is 0).
For ``BertForMaskedLM`` and ``DistilBertForMaskedLM`` the vocabulary projection runs on the selected positions
only (:func:`masked_position_logits`; the same numbers, ~7x less work for BERT-tiny, whose cost is that
projection); any other masked-LM goes through its ``forward`` and the full ``logits``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset

from kd_plugin.data.batching import collate_batch
from kd_plugin.errors import ConfigError
from kd_plugin.masking import IGNORE_INDEX, DynamicMasker, MaskingConfig
from kd_plugin.runtime.progress import track


def sequence_generator(seed: int, index: int) -> torch.Generator:
    """The masking RNG of sequence ``index``: a function of (seed, index) only."""
    state = np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def fixed_masks(
    sequences: Sequence[Sequence[int]], masker: DynamicMasker, seed: int, first_index: int = 0
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(masked ids, labels) per sequence, each (length,), masked one sequence at a time (see module doc)."""
    masked, labels = [], []
    for offset, ids in enumerate(sequences):
        row = torch.as_tensor(ids, dtype=torch.long)[None, :]  # (1, length)
        m, lab = masker.mask(row, torch.ones_like(row), sequence_generator(seed, first_index + offset))
        masked.append(m[0])
        labels.append(lab[0])
    return masked, labels


def masked_position_logits(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, selected: torch.Tensor
) -> torch.Tensor:
    """Logits at the ``selected`` positions, (n_sel, vocab_size), in the order of ``input_ids[selected]``.

    ``input_ids``, ``attention_mask``, ``selected`` (bool) are (bs, seq_len) on the model's device.
    """
    from transformers import BertForMaskedLM, DistilBertForMaskedLM

    if isinstance(model, BertForMaskedLM):
        hidden = model.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (bs, seq, H)
        return model.cls(hidden[selected])  # (n_sel, vocab_size)
    if isinstance(model, DistilBertForMaskedLM):
        output = model.distilbert(input_ids=input_ids, attention_mask=attention_mask)
        hidden = output.last_hidden_state  # (bs, seq_len, dim)
        x = model.activation(model.vocab_transform(hidden[selected]))  # (n_sel, dim)
        return model.vocab_projector(model.vocab_layer_norm(x))  # (n_sel, vocab_size)
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits  # (bs, seq_len, vocab_size)
    return logits[selected]  # (n_sel, vocab_size)


def _pad(rows: list[torch.Tensor], value: int) -> torch.Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=torch.long)  # (bs, max_len)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


@torch.no_grad()
def masked_lm_accuracy(
    model: torch.nn.Module,
    tokenized_split: Dataset,
    tokenizer,
    max_sequences: int | None = None,
    batch_size: int = 32,
    seed: int = 0,
    mlm_probability: float = 0.15,
    masking: MaskingConfig | None = None,
    progress: bool | None = None,
    desc: str = "held-out",
) -> dict[str, float | int]:
    """Masked-token top-1 accuracy and cross-entropy of a masked-LM on ``tokenized_split``.

    ``tokenized_split`` has an ``input_ids`` column (e.g. ``TokenizedCorpus.held_out``); the first
    ``max_sequences`` rows are used (all when None). ``masking`` sets the 80/10/10 fractions (its
    ``mlm_probability`` is replaced by the argument and ``smoothing`` is ignored: selection is uniform).
    Returns ``{"accuracy", "loss", "n_masked", "n_sequences"}``; the model's train/eval mode is restored.
    ``progress``: a bar, plain lines or nothing over the batches (:func:`kd_plugin.runtime.progress.track`).
    """
    if max_sequences is not None and (not isinstance(max_sequences, int) or max_sequences < 1):
        raise ConfigError("eval.max_sequences", f"got {max_sequences!r}", "an integer >= 1 or null (all)")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError("eval.batch_size", f"got {batch_size!r}", "an integer >= 1")
    if "input_ids" not in tokenized_split.column_names:
        raise ConfigError("eval.split", f"no input_ids column in {tokenized_split.column_names}", "a tokenized split")
    n = len(tokenized_split) if max_sequences is None else min(max_sequences, len(tokenized_split))
    if n == 0:
        raise ConfigError("eval.split", "the split is empty", "a split with at least one sequence")

    config = replace(masking or MaskingConfig(), mlm_probability=mlm_probability, smoothing=0.0)
    masker = DynamicMasker(
        config,
        vocab_size=len(tokenizer),
        mask_token_id=tokenizer.mask_token_id,
        pad_token_id=tokenizer.pad_token_id,
        special_token_ids=tokenizer.all_special_ids,
    )
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct, n_masked, loss_sum = 0, 0, 0.0
    try:
        for begin in track(range(0, n, batch_size), math.ceil(n / batch_size), desc, progress):
            end = min(begin + batch_size, n)
            rows = tokenized_split[begin:end]["input_ids"]
            masked, labels = fixed_masks(rows, masker, seed, first_index=begin)
            attention_mask = collate_batch([{"input_ids": r} for r in rows], 0)["attention_mask"]  # (bs, max_len)
            input_ids = _pad(masked, tokenizer.pad_token_id)  # (bs, max_len)
            targets = _pad(labels, IGNORE_INDEX)  # (bs, max_len)
            selected = targets != IGNORE_INDEX  # (bs, max_len)
            if not bool(selected.any()):
                continue
            picked = masked_position_logits(  # (n_sel, vocab_size)
                model, input_ids.to(device), attention_mask.to(device), selected.to(device)
            ).float()
            gold = targets[selected].to(device)  # (n_sel,)
            loss_sum += float(F.cross_entropy(picked, gold, reduction="sum"))
            correct += int((picked.argmax(dim=-1) == gold).sum())
            n_masked += int(gold.numel())
    finally:
        model.train(was_training)
    return {
        "accuracy": correct / n_masked if n_masked else float("nan"),
        "loss": loss_sum / n_masked if n_masked else float("nan"),
        "n_masked": n_masked,
        "n_sequences": n,
    }
