"""What pads a batch: the tokenizer's own pad token or, for a tokenizer without one (GPT-2, Llama), its
end-of-text token when ``data.pad_token=eos`` (the ``causal_lm`` named config sets it).

Which id fills the padding changes no number: batches are right-padded, padded positions are masked out of
attention and excluded from every loss, target and token count. The original DistilGPT2 code padded with
GPT-2's unknown token, which is the same ``<|endoftext|>``.
"""

from __future__ import annotations

from kd_plugin.errors import ConfigError

PAD_KEY = "data.pad_token"


def check_pad_token(tokenizer, setting: str | None, teacher: str) -> None:
    """Refuse, before compute, a tokenizer that cannot pad under ``setting``."""
    if tokenizer.pad_token_id is not None:
        return
    if setting is None:
        raise ConfigError(PAD_KEY, f"the tokenizer of {teacher!r} has no pad token",
                          "eos (pad with its end-of-text token; padding is masked out of attention and every loss; "
                          "`with causal_lm` sets it), or a teacher whose tokenizer has a pad token")
    if setting == "eos" and tokenizer.eos_token_id is None:
        raise ConfigError(PAD_KEY, f"the tokenizer of {teacher!r} has neither a pad token nor an end-of-text token",
                          "a teacher whose tokenizer has a pad or eos token")


def set_pad_token(tokenizer, setting: str | None, model=None) -> None:
    """Give a tokenizer without a pad token the one ``setting`` names; record it in ``model``'s config (sequence
    classification of a decoder finds each sequence's last token by it)."""
    if tokenizer.pad_token_id is None and setting == "eos":
        tokenizer.pad_token = tokenizer.eos_token
    if model is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
