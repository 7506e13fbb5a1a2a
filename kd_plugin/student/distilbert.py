"""``student.architecture=distilbert``: a DistilBERT student from a BERT-family teacher (the paper's student).

The student is a ``DistilBertForMaskedLM``: same width, heads and vocabulary as the teacher, fewer layers, no
token-type embeddings and no pooler. Weights are copied with the renaming below (module names of
transformers 5.x, teacher on the left; ``<base>`` is ``bert`` or ``roberta``):

    <base>.embeddings.word_embeddings              -> distilbert.embeddings.word_embeddings
    <base>.embeddings.position_embeddings[o:]      -> distilbert.embeddings.position_embeddings
        (+ token_type_embeddings[0] in every row when fold_token_type_embedding)
    <base>.embeddings.LayerNorm                    -> distilbert.embeddings.LayerNorm
    <base>.encoder.layer[t].attention.self.query   -> distilbert.transformer.layer[s].attention.q_lin
                                   .self.key       ->                                   .attention.k_lin
                                   .self.value     ->                                   .attention.v_lin
                                   .output.dense   ->                                   .attention.out_lin
                                   .output.LayerNorm ->                                 .sa_layer_norm
    <base>.encoder.layer[t].intermediate.dense     -> distilbert.transformer.layer[s].ffn.lin1
    <base>.encoder.layer[t].output.dense           ->                                  .ffn.lin2
    <base>.encoder.layer[t].output.LayerNorm       ->                                  .output_layer_norm
    cls.predictions.transform.dense | lm_head.dense -> vocab_transform
    cls.predictions.transform.LayerNorm | lm_head.layer_norm -> vocab_layer_norm
    cls.predictions.decoder | lm_head.decoder      -> vocab_projector (weight tied to word embeddings when the
                                                      teacher ties them)

Positions: BERT numbers positions 0, 1, 2, ...; RoBERTa-family models number the non-pad tokens from
``padding_idx + 1`` (pads get ``padding_idx``). The student uses DistilBERT's 0, 1, 2, ..., so for RoBERTa the
offset ``o = padding_idx + 1`` rows are dropped and ``max_position_embeddings`` shrinks by ``o``. This is exact
for right-padded inputs (every real token sits before every pad, so its RoBERTa position is ``o + i``); with
left padding or pads inside a sequence the positions differ.

Token types: DistilBERT has none. BERT's MLM pre-training sees single-segment inputs whose token type is 0 (and
RoBERTa has a single type), so adding row 0 into every position row makes the student compute exactly the
teacher sub-network on such inputs. ``fold_token_type_embedding=False`` drops them, as the public DistilBERT
extraction script did.

Known inexactness: DistilBERT hard-codes LayerNorm ``eps=1e-12``; a teacher with another ``layer_norm_eps``
(the released RoBERTa checkpoints use 1e-5) gives a student that is close to, not exactly, the sub-network. A
warning says so.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DistilBertConfig, DistilBertForMaskedLM, PreTrainedModel

from kd_plugin.errors import ConfigError
from kd_plugin.families import family_of

TEACHER_KEY = "teacher"
SUPPORTED_ACTIVATIONS = ("gelu", "relu")
DISTILBERT_LAYER_NORM_EPS = 1e-12

# family -> (MLM head attribute, position offset is padding_idx + 1); the families marked distilbert_source
SOURCE_FAMILIES = {
    "bert": ("cls", False),
    "roberta": ("lm_head", True),
}


@dataclass
class _TeacherParts:
    """The teacher modules the copy reads, with their family-specific names resolved."""

    embeddings: nn.Module
    layers: nn.ModuleList
    head_dense: nn.Linear
    head_activation: str
    head_layer_norm: nn.LayerNorm
    decoder: nn.Linear
    decoder_bias: torch.Tensor
    position_offset: int


def _teacher_parts(teacher: PreTrainedModel) -> _TeacherParts:
    config = teacher.config
    family = family_of(config)
    allowed = "a masked-LM teacher of family " + ", ".join(sorted(SOURCE_FAMILIES)) + ", or student.architecture=same"
    if family.name not in SOURCE_FAMILIES:
        raise ConfigError(
            "student.architecture", f"cannot build a DistilBERT student from a {family.name} teacher", allowed
        )
    head_name, roberta_positions = SOURCE_FAMILIES[family.name]
    base = getattr(teacher, teacher.base_model_prefix, None)
    head = getattr(teacher, head_name, None)
    if base is None or head is None or not hasattr(base, "encoder"):
        raise ConfigError(
            TEACHER_KEY,
            f"{type(teacher).__name__} has no masked-LM head ({head_name!r})",
            f"{allowed}ForMaskedLM",
        )
    if config.is_decoder or config.add_cross_attention:
        raise ConfigError(
            TEACHER_KEY, "the teacher is a decoder / has cross-attention", "an encoder-only teacher"
        )

    if head_name == "cls":  # BERT: cls.predictions.{transform.{dense, LayerNorm}, decoder, bias}
        predictions = head.predictions
        head_dense, head_layer_norm = predictions.transform.dense, predictions.transform.LayerNorm
        head_activation = config.hidden_act  # BertPredictionHeadTransform uses ACT2FN[hidden_act]
        decoder, decoder_bias = predictions.decoder, predictions.bias
    else:  # RoBERTa family: lm_head.{dense, layer_norm, decoder, bias}; RobertaLMHead hard-codes gelu
        head_dense, head_layer_norm = head.dense, head.layer_norm
        head_activation = "gelu"
        decoder, decoder_bias = head.decoder, head.bias
    if decoder.bias is not None:
        decoder_bias = decoder.bias

    embeddings = base.embeddings
    return _TeacherParts(
        embeddings=embeddings,
        layers=base.encoder.layer,
        head_dense=head_dense,
        head_activation=head_activation,
        head_layer_norm=head_layer_norm,
        decoder=decoder,
        decoder_bias=decoder_bias,
        position_offset=embeddings.padding_idx + 1 if roberta_positions else 0,
    )


def _check_activation(teacher: PreTrainedModel, parts: _TeacherParts) -> str:
    activation = teacher.config.hidden_act
    allowed = ", ".join(SUPPORTED_ACTIVATIONS)
    if not isinstance(activation, str) or activation not in SUPPORTED_ACTIVATIONS:
        raise ConfigError(
            "teacher.hidden_act", f"DistilBERT does not support activation {activation!r}", allowed
        )
    if parts.head_activation != activation:  # DistilBERT uses one activation for the FFN and the MLM head
        raise ConfigError(
            "teacher.hidden_act",
            f"the teacher's FFN uses {activation!r} but its MLM head uses {parts.head_activation!r}; "
            "DistilBERT uses one activation for both",
            f"{parts.head_activation} (matching the head)",
        )
    return activation


def _teacher_ties_embeddings(teacher: PreTrainedModel) -> bool:
    output_embeddings = teacher.get_output_embeddings()
    return output_embeddings is not None and output_embeddings.weight is teacher.get_input_embeddings().weight


def student_config(teacher: PreTrainedModel, n_layers: int) -> DistilBertConfig:
    """The DistilBERT config mirroring the teacher's width, vocabulary and dropout, with n_layers layers."""
    parts = _teacher_parts(teacher)
    activation = _check_activation(teacher, parts)
    config = teacher.config
    max_positions = config.max_position_embeddings - parts.position_offset
    if max_positions < 1:
        raise ConfigError(
            "teacher.max_position_embeddings",
            f"{config.max_position_embeddings} positions leave none after the offset {parts.position_offset}",
            f"more than {parts.position_offset}",
        )
    student = DistilBertConfig(
        vocab_size=config.vocab_size,
        max_position_embeddings=max_positions,
        sinusoidal_pos_embds=False,
        n_layers=n_layers,
        n_heads=config.num_attention_heads,
        dim=config.hidden_size,
        hidden_dim=config.intermediate_size,
        dropout=config.hidden_dropout_prob,
        attention_dropout=config.attention_probs_dropout_prob,
        activation=activation,
        initializer_range=config.initializer_range,
        pad_token_id=config.pad_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        tie_word_embeddings=_teacher_ties_embeddings(teacher),
    )
    student.architectures = ["DistilBertForMaskedLM"]
    return student


def _copy_(destination: nn.Module, source: nn.Module) -> None:
    """Copy weight and bias of a Linear or LayerNorm in place (keeps tied parameters tied)."""
    destination.weight.copy_(source.weight)
    destination.bias.copy_(source.bias)


@torch.no_grad()
def _copy_from_teacher(
    student: DistilBertForMaskedLM, parts: _TeacherParts, layers: list[int], fold_token_type_embedding: bool
) -> None:
    embeddings, student_embeddings = parts.embeddings, student.distilbert.embeddings
    n_positions = student.config.max_position_embeddings
    offset = parts.position_offset

    student_embeddings.word_embeddings.weight.copy_(embeddings.word_embeddings.weight)  # (vocab_size, dim)
    positions = embeddings.position_embeddings.weight[offset : offset + n_positions]  # (n_positions, dim)
    if fold_token_type_embedding:
        positions = positions + embeddings.token_type_embeddings.weight[0]  # (n_positions, dim)
    student_embeddings.position_embeddings.weight.copy_(positions)
    _copy_(student_embeddings.LayerNorm, embeddings.LayerNorm)

    for student_block, teacher_index in zip(student.distilbert.transformer.layer, layers, strict=True):
        teacher_layer = parts.layers[teacher_index]
        attention = teacher_layer.attention
        _copy_(student_block.attention.q_lin, attention.self.query)
        _copy_(student_block.attention.k_lin, attention.self.key)
        _copy_(student_block.attention.v_lin, attention.self.value)
        _copy_(student_block.attention.out_lin, attention.output.dense)
        _copy_(student_block.sa_layer_norm, attention.output.LayerNorm)
        _copy_(student_block.ffn.lin1, teacher_layer.intermediate.dense)
        _copy_(student_block.ffn.lin2, teacher_layer.output.dense)
        _copy_(student_block.output_layer_norm, teacher_layer.output.LayerNorm)

    _copy_(student.vocab_transform, parts.head_dense)
    _copy_(student.vocab_layer_norm, parts.head_layer_norm)
    projector = student.vocab_projector
    if student.config.tie_word_embeddings:
        if projector.weight is not student_embeddings.word_embeddings.weight:
            raise RuntimeError("DistilBertForMaskedLM did not tie vocab_projector to the word embeddings")
    else:
        projector.weight.copy_(parts.decoder.weight)  # (vocab_size, dim)
    projector.bias.copy_(parts.decoder_bias)  # (vocab_size,)


def build_distilbert(teacher: PreTrainedModel, layers: list[int], depth: int, seed: int | None,
                     fold_token_type_embedding: bool) -> DistilBertForMaskedLM:
    """A ``DistilBertForMaskedLM`` of ``depth`` layers copied from teacher layers ``layers`` (see the module
    docstring), or freshly initialised when ``layers`` is empty (``random_init``)."""
    parts = _teacher_parts(teacher)
    config = student_config(teacher, depth)
    layer_norm_eps = getattr(teacher.config, "layer_norm_eps", DISTILBERT_LAYER_NORM_EPS)
    if layers and layer_norm_eps != DISTILBERT_LAYER_NORM_EPS:
        warnings.warn(
            f"teacher layer_norm_eps={layer_norm_eps} but DistilBERT hard-codes {DISTILBERT_LAYER_NORM_EPS}: "
            "the student is close to, not exactly, the teacher sub-network",
            stacklevel=3,
        )
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        student = DistilBertForMaskedLM(config)
    student.to(device=teacher.device, dtype=teacher.dtype)
    if layers:
        _copy_from_teacher(student, parts, layers, fold_token_type_embedding)
    return student
