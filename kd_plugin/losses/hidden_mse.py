"""``hidden_mse``: mean squared error between hidden states under a layer mapping (TinyBERT's L_hidn).

    L = mean over real tokens and hidden units of (W h_s - h_t)^2,  averaged over the declared layer pairs

``W`` is the identity unless ``projection: linear`` is declared.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kd_plugin.losses.hidden_alignment import HiddenStateTerm
from kd_plugin.losses.term import LOSS_TERMS


@LOSS_TERMS.register("hidden_mse")
class HiddenStateMSE(HiddenStateTerm):
    def compare(self, s_hidden: torch.Tensor, t_hidden: torch.Tensor) -> torch.Tensor:
        # s_hidden, t_hidden: (n_tokens, dim_t)
        return F.mse_loss(s_hidden, t_hidden)
