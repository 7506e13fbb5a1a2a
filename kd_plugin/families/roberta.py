"""RoBERTa and its relatives (``RobertaForMaskedLM``; XLM-R and CamemBERT share the classes): BERT's blocks,
positions numbered from ``padding_idx + 1``, MLM head ``lm_head``."""

from kd_plugin.families.family import ModelFamily, register_family

ROBERTA = register_family(ModelFamily(
    name="roberta",
    model_types=("roberta", "xlm-roberta", "camembert"),
    objective="masked_lm",
    layers="roberta.encoder.layer",
    embeddings=("roberta.embeddings",),
    final_norm=None,
    lm_head=("lm_head",),  # lm_head.{dense, layer_norm, decoder, bias}
    dropout_keys=("hidden_dropout_prob", "attention_probs_dropout_prob"),
    attention_dropout=("attention.self.dropout",),
    distilbert_source=True,
    position_embeddings="roberta.embeddings.position_embeddings",
))
