"""BERT (``BertForMaskedLM``): post-norm encoder blocks, MLM head ``cls.predictions``."""

from kd_plugin.families.family import ModelFamily, register_family

BERT = register_family(ModelFamily(
    name="bert",
    model_types=("bert",),
    objective="masked_lm",
    layers="bert.encoder.layer",
    embeddings=("bert.embeddings",),  # word, position, token-type embeddings and their LayerNorm
    final_norm=None,  # post-norm: each block ends with its own LayerNorm
    lm_head=("cls",),  # cls.predictions.{transform.{dense, LayerNorm}, decoder, bias}
    dropout_keys=("hidden_dropout_prob", "attention_probs_dropout_prob"),
    attention_dropout=("attention.self.dropout",),
    distilbert_source=True,
    position_embeddings="bert.embeddings.position_embeddings",
))
