"""DistilBERT dynamic masking (Sanh et al. 2019), after ``prepare_batch_mlm`` in Hugging Face's distiller.py.

A fresh mask is drawn for every batch:

1. Each token id ``v`` has a selection weight (computed once, from corpus counts)::

       w(v) = max(count(v), 1) ** -smoothing    if counts are given and smoothing > 0
       w(v) = 1                                  otherwise
       w(v) = 0                                  for special ids (pad, mask, cls, sep, unk, ...)

   With smoothing = 0.7 (the paper's value) a token 100x rarer is 100 ** 0.7 ~= 25x more likely to be picked.
2. A position gets the weight of its token, and 0 where ``attention_mask == 0``. With ``n_real`` the number of
   real (attended, non-special) tokens in the whole batch::

       n_tgt = ceil(mlm_probability * n_real)

   positions are drawn by ``torch.multinomial`` without replacement, with probability proportional to the
   position weights. Special and padding positions have weight 0 and are never selected.
3. Each selected position independently becomes ``mask_token_id`` (mask_fraction), a token drawn uniformly from
   the non-special ids (random_fraction; it can be the original token), or is left unchanged (keep_fraction).
   The input is therefore unchanged at a selected position with probability
   ``keep_fraction + random_fraction / n_ids``, where ``n_ids`` is the number of non-special ids (or the whole
   vocabulary with ``random_tokens="whole_vocabulary"``).
4. ``labels`` hold the original id at selected positions and -100 (ignored by cross-entropy) elsewhere.

Differences from the original, each with a switch for exact comparisons: ``n_real`` excludes [CLS]/[SEP] (the
original counted them: ``count_special_tokens=True``; they are still never selected, and ``n_tgt`` is capped at
the number of selectable positions), random tokens are never special ids (the original drew from the whole
vocabulary: ``random_tokens="whole_vocabulary"``). All randomness comes from the caller's ``torch.Generator``
so a batch is reproducible from its seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from fractions import Fraction
from functools import partial
from typing import Any

import torch

from kd_plugin import validation as values
from kd_plugin.errors import ConfigError

IGNORE_INDEX = -100  # label value skipped by torch.nn.functional.cross_entropy
MASK, RANDOM, KEEP = 0, 1, 2  # outcome of a selected position, indices into the three fractions


RANDOM_TOKEN_CHOICES = ("non_special", "whole_vocabulary")
_SHARE = partial(values.number, low=0.0, high=1.0)
# Each field's check ((the value as given, the key the user typed) -> the value) and one-line doc, beside the
# fields whose defaults the dataclass holds: MaskingConfig.from_dict reads values with these checks, and
# kd_plugin.config declares the masking.* block (print_config's comments, the allowed values) from them.
FIELD_DECLARATIONS: dict[str, tuple[Callable[[Any, str], Any], str]] = {
    "mlm_probability": (partial(_SHARE, low_open=True), "share of the maskable tokens selected as targets"),
    "mask_fraction": (_SHARE, "share of the targets replaced by [MASK]"),
    "random_fraction": (_SHARE, "share of the targets replaced by a random token"),
    "keep_fraction": (_SHARE, "share of the targets left as they are"),
    "smoothing": (partial(values.number, low=0.0), "selection weight counts ** -smoothing (0 = uniform)"),
    "count_special_tokens": (values.flag, "True: the original code's count of maskable tokens includes [CLS]/[SEP]"),
    "random_tokens": (partial(values.choice, choices=RANDOM_TOKEN_CHOICES),
                      "non_special | whole_vocabulary: the original code's random replacements (may be special)"),
}


@dataclass(frozen=True)
class MaskingConfig:
    mlm_probability: float = 0.15
    mask_fraction: float = 0.8
    random_fraction: float = 0.1
    keep_fraction: float = 0.1
    smoothing: float = 0.7  # exponent of the token-frequency smoothing; 0 disables
    # The original code's behaviour, for exact comparisons (see the module docstring):
    count_special_tokens: bool = False  # True: n_tgt counts [CLS]/[SEP] too (they are still never selected)
    random_tokens: str = "non_special"  # "whole_vocabulary": random replacements may be special ids

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any], prefix: str = "masking") -> MaskingConfig:
        """A validated config from a ``masking.*`` block, every error naming ``<prefix>.<key>``."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise ConfigError(f"{prefix}.{unknown[0]}", "unknown key", ", ".join(known))
        return cls(**{**{f.name: f.default for f in fields(cls)}, **settings}).validate(prefix)

    def validate(self, prefix: str = "masking") -> MaskingConfig:
        """This config with every field read by its declared check (:data:`FIELD_DECLARATIONS`) and the three
        fractions summing to 1; every error names ``<prefix>.<key>``."""
        checked = replace(self, **{name: check(getattr(self, name), f"{prefix}.{name}")
                                   for name, (check, _) in FIELD_DECLARATIONS.items()})
        total = checked.mask_fraction + checked.random_fraction + checked.keep_fraction
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(
                f"{prefix}.mask_fraction + {prefix}.random_fraction + {prefix}.keep_fraction",
                f"the fractions sum to {total}",
                "fractions in [0, 1] summing to 1 (tolerance 1e-6)",
            )
        return checked


class DynamicMasker:
    """Draws the MLM targets of a batch; see the module docstring for the formula."""

    def __init__(
        self,
        config: MaskingConfig,
        vocab_size: int,
        mask_token_id: int,
        pad_token_id: int,
        special_token_ids: Iterable[int],
        token_counts: torch.Tensor | None = None,
    ):
        self.config = config.validate()
        if vocab_size < 2:
            raise ConfigError("masking.vocab_size", f"got {vocab_size}", "an int >= 2")
        special = {int(i) for i in special_token_ids} | {int(mask_token_id), int(pad_token_id)}
        if not all(0 <= i < vocab_size for i in special):
            raise ConfigError(
                "masking.special_token_ids", f"got {sorted(special)}", f"ids in [0, {vocab_size})"
            )
        self.vocab_size = vocab_size
        self.mask_token_id = int(mask_token_id)

        self.is_special = torch.zeros(vocab_size, dtype=torch.bool)  # (vocab_size,)
        self.is_special[sorted(special)] = True
        self.non_special_ids = (~self.is_special).nonzero().squeeze(1)  # (n_non_special,)
        # ids a RANDOM outcome draws from: non-special ids, or (the original code) the whole vocabulary
        self.random_ids = (self.non_special_ids if config.random_tokens == "non_special"
                           else torch.arange(vocab_size))  # (n_random,)
        if len(self.non_special_ids) == 0:
            raise ConfigError(
                "masking.special_token_ids", "every id is special", "at least one non-special id"
            )

        if token_counts is None or config.smoothing == 0:
            weights = torch.ones(vocab_size, dtype=torch.float64)  # (vocab_size,)
        else:
            if tuple(token_counts.shape) != (vocab_size,) or bool((token_counts < 0).any()):
                raise ConfigError(
                    "masking.token_counts",
                    f"got shape {tuple(token_counts.shape)}",
                    f"non-negative counts of shape ({vocab_size},), or None for uniform selection",
                )
            weights = token_counts.to(torch.float64).clamp(min=1) ** -config.smoothing  # (vocab_size,)
        weights[self.is_special] = 0.0
        self.token_weights = weights  # (vocab_size,)
        self.outcome_probs = torch.tensor(  # (3,) indexed by MASK, RANDOM, KEEP
            [config.mask_fraction, config.random_fraction, config.keep_fraction], dtype=torch.float64
        )

    def mask(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(masked_input_ids, labels)``, both (bs, seq_len); ``input_ids`` is not modified.

        All draws happen on ``generator.device``; the outputs are on the device of ``input_ids``.
        """
        if input_ids.dim() != 2 or tuple(attention_mask.shape) != tuple(input_ids.shape):
            raise ConfigError(
                "masking.input_ids",
                f"got input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)}",
                "two tensors of the same shape (bs, seq_len)",
            )
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= self.vocab_size):
            raise ConfigError("masking.input_ids", "token id out of range", f"ids in [0, {self.vocab_size})")
        device = generator.device

        ids = input_ids.to(device=device, dtype=torch.long)  # (bs, seq_len)
        attended = attention_mask.to(device).bool()  # (bs, seq_len)
        real = attended & ~self.is_special.to(device)[ids]  # (bs, seq_len)
        position_weights = self.token_weights.to(device)[ids] * real  # (bs, seq_len)
        n_counted = int((attended if self.config.count_special_tokens else real).sum())
        # Exact arithmetic: as floats, 0.15 * 100 == 15.000000000000002 and its ceil would be 16.
        n_tgt = min(math.ceil(Fraction(self.config.mlm_probability) * n_counted), int(real.sum()))

        masked_ids = ids.clone()  # (bs, seq_len)
        labels = torch.full_like(ids, IGNORE_INDEX)  # (bs, seq_len)
        if n_tgt > 0:
            targets = torch.multinomial(  # (n_tgt,) flat positions
                position_weights.flatten(), n_tgt, replacement=False, generator=generator
            )
            original = ids.flatten()[targets]  # (n_tgt,)
            outcome = torch.multinomial(  # (n_tgt,) MASK, RANDOM or KEEP
                self.outcome_probs.to(device), n_tgt, replacement=True, generator=generator
            )
            candidates = self.random_ids.to(device)  # (n_random,)
            random_ids = candidates[  # (n_tgt,)
                torch.randint(len(candidates), (n_tgt,), generator=generator, device=device)
            ]
            new_ids = torch.where(outcome == RANDOM, random_ids, original)  # (n_tgt,)
            new_ids = torch.where(outcome == MASK, self.mask_token_id, new_ids)  # (n_tgt,)
            masked_ids.view(-1)[targets] = new_ids
            labels.view(-1)[targets] = original

        return masked_ids.to(input_ids.device), labels.to(input_ids.device)


def count_tokens(batches_of_ids: Iterable[Sequence[int] | torch.Tensor], vocab_size: int) -> torch.Tensor:
    """Corpus token counts, (vocab_size,) long, for ``DynamicMasker(token_counts=...)``."""
    counts = torch.zeros(vocab_size, dtype=torch.long)  # (vocab_size,)
    for ids in batches_of_ids:
        flat = torch.as_tensor(ids, dtype=torch.long).flatten().cpu()  # (n_tokens,)
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= vocab_size):
            raise ConfigError(
                "masking.vocab_size", f"a token id is outside [0, {vocab_size})", "a larger vocab_size"
            )
        counts += torch.bincount(flat, minlength=vocab_size)
    return counts
