"""Llama-style decoders (``LlamaForCausalLM``, ``Qwen2ForCausalLM``; SmolLM and TinyLlama are Llama):
pre-norm blocks ``model.layers`` with rotary positions (no position embeddings), final RMSNorm ``model.norm``,
``lm_head`` (tied to ``embed_tokens`` when ``tie_word_embeddings``)."""

from kd_plugin.families.family import ModelFamily, register_family

LLAMA = register_family(ModelFamily(
    name="llama",
    model_types=("llama", "qwen2"),
    objective="causal_lm",
    layers="model.layers",
    embeddings=("model.embed_tokens",),
    final_norm="model.norm",
    lm_head=("lm_head",),
    dropout_keys=("attention_dropout",),
    attention_dropout=("self_attn.attention_dropout",),  # a float read by the attention function
    per_layer_config=("layer_types",),  # Qwen2: full or sliding-window attention, one entry per layer
))
