"""A model family: where a transformers model keeps its blocks, embeddings, final norm and LM head.

Distillation needs to know, for the teacher's architecture, which objective it was trained with (masked or
causal language modelling) and where its parts live, to build a student of fewer layers from it. One
:class:`ModelFamily` per architecture, registered in ``FAMILIES`` from its own module
(``kd_plugin/families/<family>.py``); adding a family is one such file. Everything else (student builders,
teacher checks, export, model card) asks :func:`family_of` and never names a family.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from torch import nn
from transformers import PretrainedConfig

from kd_plugin.errors import ConfigError
from kd_plugin.registry import Registry

OBJECTIVES = ("masked_lm", "causal_lm")


@dataclass(frozen=True)
class ModelFamily:
    """Where the parts of one architecture live (module paths are dotted attribute paths from the LM class)."""

    name: str
    model_types: tuple[str, ...]  # config.model_type values of this family
    objective: str  # "masked_lm" (bidirectional, [MASK] targets) or "causal_lm" (next-token targets)
    layers: str  # the nn.ModuleList of transformer blocks, e.g. "transformer.h"
    embeddings: tuple[str, ...]  # token (and position, token-type) embeddings, copied as they are
    final_norm: str | None  # the norm after the last block (None: none, e.g. BERT's post-norm blocks)
    lm_head: tuple[str, ...]  # the LM head's modules (for BERT: transform + decoder)
    dropout_keys: tuple[str, ...]  # config keys of every dropout probability (student.dropout sets them all)
    attention_dropout: tuple[str, ...]  # attribute paths, relative to a block, of the attention-probability
    # dropout: an nn.Dropout module or a float attribute (set to 0 when a loss term compares attentions)
    per_layer_config: tuple[str, ...] = ()  # config lists with one entry per layer (sliced like the layers)
    position_embeddings: str | None = None  # the learned position-embedding table (None: rotary, e.g. Llama)
    distilbert_source: bool = False  # a BERT-style encoder a DistilBERT student can be copied from

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"family {self.name}: objective {self.objective!r} is not one of {OBJECTIVES}")

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return get_module(model, self.layers)

    def set_attention_dropout(self, model: nn.Module, p: float) -> None:
        """Set the attention-probability dropout of every block to ``p`` (a module's ``p`` or a float)."""
        for block in self.blocks(model):
            for path in self.attention_dropout:
                owner_path, _, name = path.rpartition(".")
                owner = get_module(block, owner_path) if owner_path else block
                if isinstance(getattr(owner, name), nn.Dropout):
                    getattr(owner, name).p = float(p)
                else:
                    setattr(owner, name, float(p))

    def non_layer_parts(self) -> tuple[str, ...]:
        """Every module path outside the blocks that a student copies from its teacher."""
        return (*self.embeddings, *((self.final_norm,) if self.final_norm else ()), *self.lm_head)


def freeze_position_embeddings(model: nn.Module, family: ModelFamily) -> nn.Module:
    """Stop training the learned position embeddings of ``model`` (the original Distil* code's
    ``--freeze_pos_embs``); a ConfigError when the family has none to freeze."""
    if family.position_embeddings is None:
        raise ConfigError("student.freeze_position_embeddings", f"a {family.name} model has no learned position "
                          "embeddings (its positions are rotary)", "false for this family")
    get_module(model, family.position_embeddings).weight.requires_grad_(False)
    return model


def get_module(model: nn.Module, path: str) -> nn.Module:
    for name in path.split("."):
        model = getattr(model, name)
    return model


FAMILIES: Registry[ModelFamily] = Registry("model family")


def register_family(family: ModelFamily) -> ModelFamily:
    FAMILIES.register(family.name)(family)
    return family


def families() -> Iterator[ModelFamily]:
    return (FAMILIES.get(name) for name in FAMILIES.names())


def supported() -> str:
    """``bert (bert), gpt2 (gpt2), llama (llama, qwen2), ...``: for error messages."""
    return ", ".join(f"{f.name} ({', '.join(f.model_types)})" for f in families())


def family_of(config: PretrainedConfig, key: str = "teacher") -> ModelFamily:
    """The family of a model config; a model type without an adapter is a ``ConfigError`` on ``key``."""
    model_type = getattr(config, "model_type", None)
    for family in families():
        if model_type in family.model_types:
            return family
    raise ConfigError(key, f"no model-family adapter for model type {model_type!r}",
                      f"a model of a supported family: {supported()} (a new family is one file in "
                      "kd_plugin/families/)")


def n_layers_of(config: PretrainedConfig) -> int:
    """The number of blocks (``num_hidden_layers`` is mapped onto ``n_layer``, ``n_layers``, ... by transformers)."""
    return int(config.num_hidden_layers)
