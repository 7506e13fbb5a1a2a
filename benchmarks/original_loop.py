"""The original DistilBERT distillation step as a steppable loop: the baseline the trainer is measured against.

Written after Hugging Face's ``examples/research_projects/distillation`` (``distiller.py``, ``train.py``,
``grouped_batch_sampler.py``, ``lm_seqs_dataset.py``), MLM distillation as the paper's recipe runs it
(``objective="masked_lm"``, the default), or its GPT-2 path as DistilGPT2 ran it (``objective="causal_lm"``,
below). Per optimizer step, ``gradient_accumulation_steps`` times (all inside the timed region, as in the
original, whose DataLoader collates in the main process):

1. draw the next batch of indices (length-grouped by default, see :mod:`benchmarks.original_batches`), collate
   and pad it, move it to the device;
2. ``prepare_batch_mlm``: attention mask from the lengths; ``n_tgt = ceil(0.15 * sum(lengths))`` positions drawn
   by ``torch.multinomial`` without replacement with probability ``token_probs[token_id]``, where
   ``token_probs = max(count, 1) ** -0.7`` from the corpus counts and 0 for every special token; each target
   becomes [MASK] / itself / a random id of the whole vocabulary with probabilities 0.8 / 0.1 / 0.1;
   labels -100 elsewhere. (``kd_plugin.masking.DynamicMasker`` is not used: it counts real tokens without
   [CLS]/[SEP] and never draws special ids as random tokens, so it is not the original's masking.)
3. student forward with hidden states; teacher forward under ``no_grad``;
4. ``masked_select`` of both logits on attended positions -> (n_tokens, voc_size); loss =
   5.0 * KL(softmax(t/T) || softmax(s/T)) * T^2 (``KLDivLoss(batchmean)``, T = 2)
   + 2.0 * masked-LM cross-entropy over all positions (``ignore_index=-100``)
   + 1.0 * ``CosineEmbeddingLoss`` of the last hidden states on attended tokens;
5. the original's host reads of the losses (NaN check, then ``.item()`` of loss, ce, mlm and cos: they
   synchronise the device every micro-batch, as the original does);
6. ``(loss / gradient_accumulation_steps).backward()``; on the accumulation boundary: ``clip_grad_norm_(5.0)``,
   ``torch.optim.AdamW(lr 5e-4, betas (0.9, 0.98), eps 1e-6, weight decay 0)`` step, ``zero_grad``, and the
   linear warm-up/decay schedule (``get_linear_schedule_with_warmup``, 5 % warm-up of
   ``int(batches_per_epoch / accumulation * 3 epochs) + 1`` steps) steps.

``objective="causal_lm"`` (``distiller.py`` with ``self.mlm == False``, student_type gpt2): the same step with

- batches padded with the tokenizer's *unknown* token (``LmSeqsDataset.batch_sequences`` pads causal LMs with
  ``unk_token``; GPT-2's is ``<|endoftext|>``);
- ``prepare_batch_clm`` in place of masking: ``attn_mask = arange(seq_len) < lengths[:, None]``,
  ``clm_labels = token_ids`` with -100 on padded positions; inputs are not corrupted;
- the hard-label term ``alpha_clm`` * causal-LM cross-entropy of the shifted logits
  (``s_logits[..., :-1, :]`` against ``lm_labels[..., 1:]``, ``ignore_index=-100``) in place of
  ``alpha_mlm`` * masked-LM; L_ce and L_cos over the attended positions as above. Weights 5.0 / 2.0 / 1.0
  (ce / clm / cos), T = 2: DistilBERT's recipe with L_clm in L_mlm's place, as ``causal_lm`` configures the
  trainer (the original's ``train.py`` defaults would be alpha_clm 0.5).

  One deliberate difference: the original calls both GPT-2s with ``attention_mask=None``; this loop passes
  the attention mask, as kd_plugin's trainer does, so both sides call the models alike. With right padding
  and causal attention a real position never attends to a pad (pads come after every real token), so every
  number the losses read is the same either way (checked: identical logits and hidden states on real
  positions), and the cost of the forwards is the same within 2 % on the benchmark's length-grouped batches.

Precision:

- ``fp32``: everything in fp32, as the original without ``--fp16``;
- ``bf16``: ``torch.autocast(device_type, dtype=torch.bfloat16)`` around the forwards and the losses, the
  student's weights, gradients and AdamW states in fp32, the teacher cast to bf16. This is the like-for-like
  counterpart of the trainer's bf16 mode (bf16 compute, fp32 master weights, bf16 teacher); the original's
  own half precision (apex ``amp`` O1, fp16 with a loss scale, and ``round_batch`` padding to multiples of 8)
  is not reproduced: apex is not available and fp16 is not what the trainer runs.

Left out, as they are not part of the step: TensorBoard logging (every 500 iterations), checkpoints,
multi-GPU. The data is the trainer's tokenized corpus, loaded once into RAM as the original's dataset is
(the original's filters of sequences of <= 11 tokens and of > 50 % [UNK] are not applied, so both sides
train on the same sequences). Random draws use the loop's own generators (seeded), so two loops with the same
seed process identical batches and masks.

The loop trains its own copy of the student (and, in bf16, its own bf16 copy of the teacher), so the objects
passed in are never modified and can be shared with other sides.

``phase_breakdown(n)`` times ``n`` more steps phase by phase with the trainer's own timer and phase names
(``kd_plugin.training.phase_timer.PhaseTimer``: data, student / teacher forward, loss, backward, optimizer step),
so the two sides' breakdowns compare; outside it the timer is off and costs nothing in the timed windows.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

from benchmarks.harness import per_token_phases
from benchmarks.original_batches import batch_sequences, batch_stream, sequences_in_ram
from kd_plugin.training.phase_timer import PhaseTimer

PRECISIONS = ("fp32", "bf16")
OBJECTIVES = ("masked_lm", "causal_lm")


@dataclass(frozen=True)
class OriginalRecipe:
    """The public recipe's knobs, with ``train.py``'s names."""

    temperature: float = 2.0
    alpha_ce: float = 5.0
    alpha_mlm: float = 2.0
    alpha_clm: float = 0.0
    alpha_cos: float = 1.0
    mlm_mask_prop: float = 0.15
    word_mask: float = 0.8
    word_keep: float = 0.1
    word_rand: float = 0.1
    mlm_smoothing: float = 0.7
    learning_rate: float = 5e-4
    adam_epsilon: float = 1e-6
    weight_decay: float = 0.0
    warmup_prop: float = 0.05
    max_grad_norm: float = 5.0
    n_epoch: int = 3

    @classmethod
    def for_objective(cls, objective: str) -> OriginalRecipe:
        """The recipe's weights 5 / 2 / 1 with the objective's hard-label term (``alpha_mlm`` or ``alpha_clm``)."""
        return cls(alpha_mlm=0.0, alpha_clm=2.0) if objective == "causal_lm" else cls()


def token_probabilities(token_counts: torch.Tensor, special_ids: list[int], smoothing: float) -> torch.Tensor:
    """``train.py``: ``max(counts, 1) ** -mlm_smoothing``, 0 for special tokens; (vocab_size,) float32."""
    counts = np.asarray(token_counts, dtype=np.float64)  # (vocab_size,)
    token_probs = np.maximum(counts, 1) ** -smoothing  # (vocab_size,)
    token_probs[list(special_ids)] = 0.0
    return torch.from_numpy(token_probs).float()


class OriginalStyleLoop:
    """The original distillation loop, stepped from outside: ``run_steps(n)`` trains ``n`` optimizer steps."""

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        tokenizer,
        corpus,
        micro_batch: int,
        precision: str = "fp32",
        grouping: str = "grouped",
        gradient_accumulation_steps: int = 1,
        recipe: OriginalRecipe | None = None,
        seed: int = 0,
        name: str = "original-style loop",
        objective: str = "masked_lm",
    ):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if gradient_accumulation_steps < 1 or micro_batch < 1:
            raise ValueError("micro_batch and gradient_accumulation_steps must be >= 1")
        self.name = name
        self.precision = precision
        self.objective = objective
        self.mlm = objective == "masked_lm"
        self.recipe = recipe or OriginalRecipe.for_objective(objective)
        if self.mlm and not (self.recipe.alpha_mlm > 0 and self.recipe.alpha_clm == 0):
            raise ValueError("masked_lm: alpha_mlm > 0 and alpha_clm == 0 (train.py's check)")
        if not self.mlm and not (self.recipe.alpha_clm > 0 and self.recipe.alpha_mlm == 0):
            raise ValueError("causal_lm: alpha_clm > 0 and alpha_mlm == 0 (train.py's check)")
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.device = next(student.parameters()).device

        self.student = copy.deepcopy(student).float().train()
        self.teacher = (copy.deepcopy(teacher).to(torch.bfloat16) if precision == "bf16" else teacher).eval()
        self.vocab_size = self.student.config.vocab_size

        r = self.recipe
        self.token_ids, self.lengths = sequences_in_ram(corpus.train)
        if self.mlm:
            self.pad_token_id = int(tokenizer.pad_token_id)
            self.mask_token_id = int(tokenizer.mask_token_id)
            self.token_probs = token_probabilities(
                corpus.token_counts, tokenizer.all_special_ids, r.mlm_smoothing
            ).to(self.device)  # (vocab_size,)
            self.pred_probs = torch.tensor([r.word_mask, r.word_keep, r.word_rand], device=self.device)  # (3,)
        else:  # the original pads causal LMs with the unknown token (GPT-2: <|endoftext|>)
            pad = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else tokenizer.eos_token_id
            self.pad_token_id = int(pad)
        self.sampling_generator = torch.Generator().manual_seed(seed)  # RandomSampler's permutations
        self.masking_generator = torch.Generator(device=self.device).manual_seed(seed)
        max_model_input_size = int(getattr(teacher.config, "max_position_embeddings", 512))
        self.batches = batch_stream(self.lengths, micro_batch, grouping, max_model_input_size, self.sampling_generator)

        self.ce_loss_fct = nn.KLDivLoss(reduction="batchmean")
        self.lm_loss_fct = nn.CrossEntropyLoss(ignore_index=-100)
        self.cosine_loss_fct = nn.CosineEmbeddingLoss(reduction="mean")

        no_decay = ["bias", "LayerNorm.weight"]
        named = [(n, p) for n, p in self.student.named_parameters() if p.requires_grad]
        optimizer_grouped_parameters = [
            {"params": [p for n, p in named if not any(nd in n for nd in no_decay)], "weight_decay": r.weight_decay},
            {"params": [p for n, p in named if any(nd in n for nd in no_decay)], "weight_decay": 0.0},
        ]
        self.optimizer = torch.optim.AdamW(
            optimizer_grouped_parameters, lr=r.learning_rate, eps=r.adam_epsilon, betas=(0.9, 0.98)
        )
        num_steps_epoch = math.ceil(len(self.lengths) / micro_batch)
        num_train_optimization_steps = int(num_steps_epoch / gradient_accumulation_steps * r.n_epoch) + 1
        self.scheduler = get_linear_schedule_with_warmup(
            self.optimizer,
            num_warmup_steps=math.ceil(num_train_optimization_steps * r.warmup_prop),
            num_training_steps=num_train_optimization_steps,
        )
        self.n_iter = 0
        self.n_optimizer_steps = 0
        self.last_losses: dict[str, float] = {}
        self.timer = PhaseTimer(enabled=False, device=self.device)  # off: no cost in the timed windows

    # ------------------------------------------------------------------ the step
    def prepare_batch_mlm(
        self, token_ids: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Dynamic masking of ``distiller.py`` (without fp16's rounding to multiples of 8)."""
        attn_mask = torch.arange(token_ids.size(1), dtype=torch.long, device=lengths.device) < lengths[:, None]
        bs, max_seq_len = token_ids.size()
        mlm_labels = token_ids.new(token_ids.size()).copy_(token_ids)  # (bs, max_seq_len)

        x_prob = self.token_probs[token_ids.flatten()]  # (bs * max_seq_len,)
        n_tgt = math.ceil(self.recipe.mlm_mask_prop * lengths.sum().item())
        tgt_ids = torch.multinomial(
            x_prob / x_prob.sum(), n_tgt, replacement=False, generator=self.masking_generator
        )  # (n_tgt,)
        pred_mask = torch.zeros(bs * max_seq_len, dtype=torch.bool, device=token_ids.device)  # (bs * max_seq_len,)
        pred_mask[tgt_ids] = 1
        pred_mask = pred_mask.view(bs, max_seq_len)  # (bs, max_seq_len)
        pred_mask[token_ids == self.pad_token_id] = 0

        _token_ids_real = token_ids[pred_mask]  # (n_pred,)
        _token_ids_rand = _token_ids_real.clone().random_(self.vocab_size, generator=self.masking_generator)
        _token_ids_mask = _token_ids_real.clone().fill_(self.mask_token_id)  # (n_pred,)
        probs = torch.multinomial(
            self.pred_probs, len(_token_ids_real), replacement=True, generator=self.masking_generator
        )  # (n_pred,) 0 = mask, 1 = keep, 2 = random
        _token_ids = (
            _token_ids_mask * (probs == 0).long()
            + _token_ids_real * (probs == 1).long()
            + _token_ids_rand * (probs == 2).long()
        )  # (n_pred,)
        token_ids = token_ids.masked_scatter(pred_mask, _token_ids)  # (bs, max_seq_len)
        mlm_labels[~pred_mask] = -100
        return token_ids, attn_mask, mlm_labels

    def prepare_batch_clm(
        self, token_ids: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``distiller.py``'s causal-LM batch: attention mask from the lengths, labels -100 on padding."""
        attn_mask = torch.arange(token_ids.size(1), dtype=torch.long, device=lengths.device) < lengths[:, None]
        clm_labels = token_ids.new(token_ids.size()).copy_(token_ids)  # (bs, max_seq_len)
        clm_labels[~attn_mask] = -100
        return token_ids, attn_mask, clm_labels

    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def step(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, lm_labels: torch.Tensor) -> None:
        """Forward of student and teacher, the loss mixture, backward, and the update on accumulation boundaries."""
        r = self.recipe
        phase = self.timer.phase  # a no-op unless phase_breakdown() is measuring
        with self._autocast():
            with phase("student_forward"):
                s_out = self.student(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
                s_logits, s_hidden_states = s_out.logits, s_out.hidden_states  # (bs, seq_length, voc_size)
            with phase("teacher_forward"), torch.no_grad():
                t_out = self.teacher(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
                t_logits, t_hidden_states = t_out.logits, t_out.hidden_states  # (bs, seq_length, voc_size)
            assert s_logits.size() == t_logits.size()

            with phase("loss"):
                mask = attention_mask.unsqueeze(-1).expand_as(s_logits)  # (bs, seq_length, voc_size)
                s_logits_slct = torch.masked_select(s_logits, mask)  # (n_tokens * voc_size,)
                s_logits_slct = s_logits_slct.view(-1, s_logits.size(-1))  # (n_tokens, voc_size)
                t_logits_slct = torch.masked_select(t_logits, mask)  # (n_tokens * voc_size,)
                t_logits_slct = t_logits_slct.view(-1, s_logits.size(-1))  # (n_tokens, voc_size)
                loss_ce = (
                    self.ce_loss_fct(
                        nn.functional.log_softmax(s_logits_slct / r.temperature, dim=-1),
                        nn.functional.softmax(t_logits_slct / r.temperature, dim=-1),
                    )
                    * r.temperature**2
                )
                loss = r.alpha_ce * loss_ce
                hard_losses = {}
                if r.alpha_mlm > 0.0:
                    loss_mlm = self.lm_loss_fct(s_logits.view(-1, s_logits.size(-1)), lm_labels.view(-1))
                    loss = loss + r.alpha_mlm * loss_mlm
                    hard_losses["loss_mlm"] = loss_mlm
                if r.alpha_clm > 0.0:
                    shift_logits = s_logits[..., :-1, :].contiguous()  # (bs, seq_length - 1, voc_size)
                    shift_labels = lm_labels[..., 1:].contiguous()  # (bs, seq_length - 1)
                    loss_clm = self.lm_loss_fct(shift_logits.view(-1, shift_logits.size(-1)), shift_labels.view(-1))
                    loss = loss + r.alpha_clm * loss_clm
                    hard_losses["loss_clm"] = loss_clm

                s_hidden = s_hidden_states[-1]  # (bs, seq_length, dim)
                t_hidden = t_hidden_states[-1]  # (bs, seq_length, dim)
                mask = attention_mask.unsqueeze(-1).expand_as(s_hidden)  # (bs, seq_length, dim)
                dim = s_hidden.size(-1)
                s_hidden_slct = torch.masked_select(s_hidden, mask).view(-1, dim)  # (n_tokens, dim)
                t_hidden_slct = torch.masked_select(t_hidden, mask).view(-1, dim)  # (n_tokens, dim)
                target = s_hidden_slct.new(s_hidden_slct.size(0)).fill_(1)  # (n_tokens,)
                loss_cos = self.cosine_loss_fct(s_hidden_slct, t_hidden_slct, target)
                loss = loss + r.alpha_cos * loss_cos

        with phase("loss"):  # the original's host reads of the losses
            if (loss != loss).data.any():
                raise FloatingPointError(f"{self.name}: NaN loss at micro-batch {self.n_iter}")
            self.last_losses = {
                "loss": loss.item(),
                "loss_ce": loss_ce.item(),
                **{name: value.item() for name, value in hard_losses.items()},
                "loss_cos": loss_cos.item(),
            }
        self.optimize(loss)

    def optimize(self, loss: torch.Tensor) -> None:
        """Backward of the (accumulation-scaled) loss; clip, AdamW, zero_grad and schedule on the boundary."""
        if self.gradient_accumulation_steps > 1:
            loss = loss / self.gradient_accumulation_steps
        with self.timer.phase("backward"):
            loss.backward()
        self.n_iter += 1
        if self.n_iter % self.gradient_accumulation_steps == 0:
            with self.timer.phase("optimizer_step"):
                nn.utils.clip_grad_norm_(self.student.parameters(), self.recipe.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad()
                self.scheduler.step()
            self.n_optimizer_steps += 1
            self.timer.step_done()

    # ------------------------------------------------------------------ the Side interface
    def run_steps(self, n: int) -> int:
        """Train ``n`` optimizer steps; return the real (non-pad) tokens processed. Synchronises the device."""
        tokens = 0
        for _ in range(n * self.gradient_accumulation_steps):
            with self.timer.phase("data"):
                indices = next(self.batches)
                token_ids, lengths = batch_sequences([self.token_ids[i] for i in indices], self.pad_token_id)
                tokens += int(lengths.sum())
                token_ids, lengths = token_ids.to(self.device), lengths.to(self.device)  # (bs, max_len), (bs,)
                prepare = self.prepare_batch_mlm if self.mlm else self.prepare_batch_clm
                token_ids, attn_mask, lm_labels = prepare(token_ids, lengths)
            self.step(input_ids=token_ids, attention_mask=attn_mask, lm_labels=lm_labels)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return tokens

    def phase_breakdown(self, n: int) -> dict[str, dict[str, float]]:
        """Per-phase timing over ``n`` more steps, with the trainer's phase names (``PhaseTimer``, synchronised,
        so slower than the timed windows): milliseconds per optimizer step, per 1000 real tokens, and share, per
        phase. ``data`` is drawing, padding and masking the batch; ``loss`` includes the host reads of the
        losses."""
        self.timer.seconds.clear()
        self.timer.steps, self.timer.enabled = 0, True
        try:
            tokens = self.run_steps(n)
        finally:
            self.timer.enabled = False
        return per_token_phases(self.timer.breakdown(), n, tokens)
