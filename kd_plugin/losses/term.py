"""The contract of a loss term and the registry that maps a declared name to its class.

A new term is one new module with ``@LOSS_TERMS.register("name")`` on a ``LossTerm`` subclass; the trainer
and the mixture never name terms, so nothing else changes (torchdistill's registry pattern).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from kd_plugin.errors import ConfigError
from kd_plugin.losses.fused_logit_rows import RowPart
from kd_plugin.losses.logit_kernels import ChunkLossAndGrad
from kd_plugin.losses.outputs import DistillationOutputs
from kd_plugin.losses.projected_logits import ProjectedLogits
from kd_plugin.registry import Registry


@dataclass(frozen=True)
class ModelDims:
    """What a term may need to know about the two models to validate itself before any compute."""

    student_hidden_size: int
    teacher_hidden_size: int
    student_layers: int
    teacher_layers: int
    student_heads: int = 0
    teacher_heads: int = 0
    objective: str = "masked_lm"  # the teacher's (and student's) training objective: masked_lm | causal_lm


class LossTerm(nn.Module):
    """One unweighted loss term. Subclasses set ``needs`` and implement ``forward``.

    ``needs`` tells the trainer which extra model outputs to request ("hidden_states", "attentions"), so
    hidden states are only materialised when some term reads them. ``objectives`` are the training objectives
    the term makes sense for (the masked-LM loss needs masked targets, the causal-LM loss next-token ones). Options come from the declaration
    (``loss_options.<name>.*`` in config) and are validated in ``__init__`` with ``ConfigError``.
    A term may own parameters (e.g. a projection); they are trained with the student.
    """

    needs: ClassVar[frozenset[str]] = frozenset()
    objectives: ClassVar[frozenset[str]] = frozenset({"masked_lm", "causal_lm"})

    def __init__(self, name: str, dims: ModelDims, temperature: float, **options: Any):
        super().__init__()
        if dims.objective not in self.objectives:
            raise ConfigError(  # renamed by the mixture to the key the weight was declared under (alpha_mlm)
                f"{WEIGHTS_KEY}.{name}", f"the {name} term needs a {' or '.join(sorted(self.objectives))} teacher, "
                f"this one is a {dims.objective} model", "0 (masked LMs train with alpha_mlm, causal LMs with "
                "alpha_clm; `with causal_lm` sets the causal recipe)")
        if options:
            raise ConfigError(
                f"loss_options.{name}", f"unknown option(s) {sorted(options)}", "(this term takes no options)"
            )
        self.name = name
        self.temperature = temperature

    def forward(self, outputs: DistillationOutputs) -> torch.Tensor:  # () scalar
        raise NotImplementedError

    def row_part(self, outputs: DistillationOutputs) -> RowPart | None:
        """This term's share of the mixture's single pass over every token row's logits
        (:mod:`kd_plugin.losses.fused_logit_rows`), or None: the term then runs its own ``forward``. Only terms
        whose value equals ``forward``'s (to rounding) over all real tokens take part."""
        return None


LOSS_TERMS: Registry[type[LossTerm]] = Registry("loss term")
# The config keys terms are declared under: a term's weight is ``loss_weights.<name>`` (the mixture renames it
# to the key actually used, e.g. ``alpha_ce``), its options ``loss_options.<name>.<option>``.
WEIGHTS_KEY = "loss_weights"
OPTIONS_KEY = "loss_options"

_NOT_OPTIONS = ("self", "name", "dims", "temperature", "options")


def default_options(term: type[LossTerm]) -> dict[str, Any]:
    """A term's declarable options with their defaults, read from its ``__init__`` signature."""
    return {
        p.name: p.default
        for p in inspect.signature(term.__init__).parameters.values()
        if p.name not in _NOT_OPTIONS and p.default is not inspect.Parameter.empty
    }


def check_options(name: str, options: dict[str, Any]) -> None:
    allowed = default_options(LOSS_TERMS.get(name))
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"loss_options.{name}.{unknown[0]}", "unknown option",
                          ", ".join(allowed) if allowed else "(this term takes no options)")


ROW_SELECTIONS = ("tokens", "masked")


def check_rows(rows: str, key: str, objective: str = "masked_lm") -> str:
    """Validate the token rows a logit-level term is averaged over (``masked`` exists for masked LMs only)."""
    if rows not in ROW_SELECTIONS:
        raise ConfigError(key, f"unknown row selection {rows!r}", "'tokens' (all non-pad tokens), 'masked'")
    if rows == "masked" and objective != "masked_lm":
        raise ConfigError(key, f"'masked' rows need a masked-LM teacher; this teacher is trained for {objective}",
                          "'tokens' (all non-pad positions, as the original distiller for GPT-2)")
    return rows


def token_row_part(outputs: DistillationOutputs, chunk: ChunkLossAndGrad,
                   target: torch.Tensor | ProjectedLogits) -> RowPart:
    """A :class:`RowPart` over all real tokens; ``target`` (bs, seq_len, ...) is flattened to one row per token
    (projected logits are computed per chunk of flat rows)."""
    n_tokens = outputs.token_row_index.shape[0]  # host int: the index's length, no device read
    keep = None if n_tokens == outputs.attention_mask.numel() else outputs.token_mask.flatten()  # (N,)
    rows = target if isinstance(target, ProjectedLogits) else target.detach().flatten(0, 1)
    return RowPart(chunk, rows, keep, n_tokens)


def row_index(rows: str, outputs: DistillationOutputs) -> torch.Tensor:
    """Flat indices of all real tokens, or of the masked positions only: (n_rows,)."""
    return outputs.token_row_index if rows == "tokens" else outputs.target_row_index
