"""GPT-2 (``GPT2LMHeadModel``): pre-norm decoder blocks ``transformer.h``, final ``ln_f``, LM head tied to ``wte``.

DistilGPT2 is this family with 6 of GPT-2's 12 blocks (the original extraction took blocks 0, 2, 4, 7, 9, 11).
"""

from kd_plugin.families.family import ModelFamily, register_family

GPT2 = register_family(ModelFamily(
    name="gpt2",
    model_types=("gpt2",),
    objective="causal_lm",
    layers="transformer.h",
    embeddings=("transformer.wte", "transformer.wpe"),
    final_norm="transformer.ln_f",
    lm_head=("lm_head",),
    dropout_keys=("resid_pdrop", "embd_pdrop", "attn_pdrop"),
    attention_dropout=("attn.attn_dropout",),
    position_embeddings="transformer.wpe",
))
