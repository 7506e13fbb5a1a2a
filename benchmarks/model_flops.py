"""Model FLOPs of a distillation step per token, and the dense matmul peak they are compared with.

Model FLOPs count the useful work of the model, not what a kernel happens to execute (no padding, no
recomputation, no optimizer), the usual convention for "model FLOP utilisation":

- forward of a BERT-like encoder with an MLM head, per token:
  ``2 x (weights touched per token) + attention``, where the weights touched are, per layer, Q, K, V and the
  output projection (``4 d^2``) and the FFN (``2 d f``), plus the MLM head's transform (``d^2``) and decoder
  (``d V``); embedding look-ups are free. Attention scores ``Q K^T`` and the weighted sum ``A V`` cost
  ``2 x 2 x L x d`` per token per layer for a token in a sequence of ``L`` real tokens;
- a GPT-2 decoder the same, except that its LM head is the (tied) decoder alone (no ``d^2`` transform) and
  that causal attention touches on average half the keys (``2 x 2 x L/2 x d`` per token per layer, the usual
  convention for decoders);
- training the student = 3 x its forward (backward ~ 2 x forward); the frozen teacher = its forward only.

``L`` is the token-weighted mean sequence length ``sum(L_i^2) / sum(L_i)`` of the corpus (the attention cost of
a token grows with the length of its own sequence), so tokens/s x FLOPs/token is the model FLOP/s.

The peak is measured, not quoted: a dense ``n x n x n`` matmul (2048 on CPU, 8192 on CUDA) in the same process,
a few repeats after a warm-up, timed with ``time.perf_counter()`` between device synchronisations.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class EncoderShape:
    """What the FLOP count needs of a BERT-like masked-LM or a GPT-2 causal LM: layers, width d, FFN width f,
    vocabulary V, whether the LM head has a ``d x d`` transform before its decoder, whether attention is causal."""

    layers: int
    hidden: int
    intermediate: int
    vocab: int
    head_transform: bool = True  # BERT's MLM head: dense + LayerNorm, then the decoder; GPT-2's: the decoder alone
    causal: bool = False  # a token attends to the keys before it only: half the attention work on average

    @classmethod
    def of(cls, config) -> EncoderShape:
        """From a ``BertConfig``-like (``hidden_size``...), ``DistilBertConfig``-like (``dim``...) or
        ``GPT2Config`` config (``n_embd``..., reached as ``hidden_size`` / ``num_hidden_layers`` through its
        ``attribute_map``; FFN width ``n_inner`` or ``4 x n_embd``)."""
        if getattr(config, "model_type", None) == "gpt2":
            hidden = config.hidden_size
            return cls(config.num_hidden_layers, hidden, config.n_inner or 4 * hidden, config.vocab_size,
                       head_transform=False, causal=True)
        if hasattr(config, "n_layers"):
            return cls(config.n_layers, config.dim, config.hidden_dim, config.vocab_size)
        return cls(config.num_hidden_layers, config.hidden_size, config.intermediate_size, config.vocab_size)

    def forward_flops_per_token(self, seq_len: float, mlm_head: bool = True) -> float:
        d, f = self.hidden, self.intermediate
        keys = seq_len / 2 if self.causal else seq_len  # keys a token attends to, on average
        per_layer = 2 * (4 * d * d + 2 * d * f) + 2 * 2 * keys * d  # projections + FFN, then QK^T and AV
        head = 2 * ((d * d if self.head_transform else 0) + d * self.vocab) if mlm_head else 0
        return self.layers * per_layer + head

    def to_dict(self) -> dict:
        return asdict(self)


def attention_length(lengths: np.ndarray) -> float:
    """Token-weighted mean sequence length ``sum(L^2) / sum(L)``."""
    lengths = np.asarray(lengths, dtype=np.float64)  # (n_sequences,)
    return float((lengths**2).sum() / lengths.sum())


def distillation_flops_per_token(student: EncoderShape, teacher: EncoderShape, seq_len: float) -> dict[str, float]:
    """Model FLOPs per real token of one distillation step: student trained (3 x forward) + teacher forward."""
    student_forward = student.forward_flops_per_token(seq_len)
    teacher_forward = teacher.forward_flops_per_token(seq_len)
    return {
        "student_forward": student_forward,
        "teacher_forward": teacher_forward,
        "step": 3 * student_forward + teacher_forward,
    }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cpu_size(dtype: torch.dtype, budget_s: float) -> int:
    """2048, unless a 512 probe says one 2048 product would take over 2.5 x ``budget_s`` (64 x the probe): 512."""
    a = torch.randn(512, 512).to(dtype)  # (512, 512)
    a @ a  # the first product also pays the library's set-up
    start = time.perf_counter()
    a @ a
    probe = time.perf_counter() - start
    return 2048 if probe * 64 < 2.5 * budget_s else 512


def matmul_peak(
    dtype: torch.dtype, device: torch.device, n: int | None = None, repeats: int | None = None, budget_s: float = 2.0
) -> float:
    """Dense matmul FLOP/s of ``dtype`` on ``device``: ``2 n^3`` per product, averaged over the timed products.

    After the warm-up (3 products on CUDA, 1 on CPU), ``repeats`` products are timed (10 on CUDA; on CPU at most
    5, and no more once ``budget_s`` has passed). A CPU without native bf16 (AVX2 only) runs bf16 products at
    well under 1 GFLOP/s: there a 512 product replaces the 2048 one (:func:`_cpu_size`), so the peak never
    takes minutes; that peak is then honestly tiny.
    """
    device = torch.device(device)
    on_cuda = device.type == "cuda"
    n = n or (8192 if on_cuda else _cpu_size(dtype, budget_s))
    repeats = repeats or (10 if on_cuda else 5)
    a = torch.randn(n, n, device=device).to(dtype)  # (n, n)
    b = torch.randn(n, n, device=device).to(dtype)  # (n, n)
    for _ in range(3 if on_cuda else 1):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    done = 0
    while done < repeats and (on_cuda or done == 0 or time.perf_counter() - start < budget_s):
        a @ b  # on CUDA the launches queue up; the budget applies to the CPU, where each product blocks
        done += 1
    synchronize(device)
    seconds = time.perf_counter() - start
    del a, b
    return 2 * n**3 * done / seconds
