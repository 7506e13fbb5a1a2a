"""DistilBERT (``DistilBertForMaskedLM``): a distilled student can itself be a teacher of a smaller one."""

from kd_plugin.families.family import ModelFamily, register_family

DISTILBERT = register_family(ModelFamily(
    name="distilbert",
    model_types=("distilbert",),
    objective="masked_lm",
    layers="distilbert.transformer.layer",
    embeddings=("distilbert.embeddings",),  # word and position embeddings, LayerNorm (no token types)
    final_norm=None,
    lm_head=("vocab_transform", "vocab_layer_norm", "vocab_projector"),
    dropout_keys=("dropout", "attention_dropout"),
    attention_dropout=("attention.dropout",),
    position_embeddings="distilbert.embeddings.position_embeddings",
))
