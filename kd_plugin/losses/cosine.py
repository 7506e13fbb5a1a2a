"""``cos``: DistilBERT's cosine embedding loss, aligning the directions of student and teacher hidden states.

    L_cos = mean over real tokens of (1 - cos(h_s, h_t)),  averaged over the declared layer pairs

Default pair: the last hidden state of each model (the paper's setting).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kd_plugin.losses.hidden_alignment import HiddenStateTerm
from kd_plugin.losses.term import LOSS_TERMS


@LOSS_TERMS.register("cos")
class CosineAlignment(HiddenStateTerm):
    def compare(self, s_hidden: torch.Tensor, t_hidden: torch.Tensor) -> torch.Tensor:
        # s_hidden, t_hidden: (n_tokens, dim)
        return (1.0 - F.cosine_similarity(s_hidden, t_hidden, dim=-1)).mean()
