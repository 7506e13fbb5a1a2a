"""Next-token accuracy and perplexity on a held-out split: the number a causal-LM teacher and its student share.

Over every position ``p`` of the first ``max_sequences`` sequences whose next token is real (the targets of
:func:`kd_plugin.objectives.next_token_labels`; nothing is masked or sampled, so the score depends on the model
only)::

    accuracy   = |{p : argmax_v logits[p, v] == x[p + 1]}| / |P|
    loss       = mean_p -log softmax(logits[p])[x[p + 1]]        (natural log, fp32)
    perplexity = exp(loss)

Sequences are right-padded per batch with the tokenizer's pad id; padded positions are masked out of attention
and have no target, so the batch size does not change the numbers beyond float rounding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from datasets import Dataset

from kd_plugin.data.batching import collate_batch
from kd_plugin.errors import ConfigError
from kd_plugin.masking import IGNORE_INDEX
from kd_plugin.objectives import next_token_labels
from kd_plugin.runtime.progress import track


@torch.no_grad()
def next_token_accuracy(model: torch.nn.Module, tokenized_split: Dataset, tokenizer,
                        max_sequences: int | None = None, batch_size: int = 16, progress: bool | None = None,
                        desc: str = "held-out") -> dict[str, float | int]:
    """``{"accuracy", "loss", "perplexity", "n_targets", "n_sequences"}``; the model's mode is restored.
    ``progress``: a bar, plain lines or nothing over the batches (:func:`kd_plugin.runtime.progress.track`)."""
    if max_sequences is not None and (not isinstance(max_sequences, int) or max_sequences < 1):
        raise ConfigError("eval.max_sequences", f"got {max_sequences!r}", "an integer >= 1 or null (all)")
    n = len(tokenized_split) if max_sequences is None else min(max_sequences, len(tokenized_split))
    if n == 0:
        raise ConfigError("eval.split", "the split is empty", "a split with at least one sequence")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct, n_targets, loss_sum = 0, 0, 0.0
    try:
        for begin in track(range(0, n, batch_size), math.ceil(n / batch_size), desc, progress):
            rows = tokenized_split[begin:min(begin + batch_size, n)]["input_ids"]
            batch = collate_batch([{"input_ids": r} for r in rows], tokenizer.pad_token_id)
            input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]  # (bs, max_len) each
            labels = next_token_labels(input_ids, attention_mask)  # (bs, max_len)
            selected = labels != IGNORE_INDEX  # (bs, max_len)
            logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
            picked = logits[selected.to(device)].float()  # (n_sel, vocab_size)
            gold = labels[selected].to(device)  # (n_sel,)
            loss_sum += float(F.cross_entropy(picked, gold, reduction="sum"))
            correct += int((picked.argmax(dim=-1) == gold).sum())
            n_targets += int(gold.numel())
    finally:
        model.train(was_training)
    loss = loss_sum / n_targets if n_targets else float("nan")
    return {"accuracy": correct / n_targets if n_targets else float("nan"), "loss": loss,
            "perplexity": math.exp(loss) if n_targets else float("nan"), "n_targets": n_targets,
            "n_sequences": n}
