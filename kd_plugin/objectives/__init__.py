"""Training objectives (masked and causal language modelling): see :mod:`.objective`."""

from kd_plugin.objectives.causal_lm import CAUSAL_LM, NextTokenTargets, next_token_labels
from kd_plugin.objectives.masked_lm import MASKED_LM, MaskedTargets
from kd_plugin.objectives.objective import (
    OBJECTIVES,
    Objective,
    TargetMaker,
    config_from_dict,
    lm_auto_class,
    objective_of,
)

__all__ = ["CAUSAL_LM", "MASKED_LM", "OBJECTIVES", "MaskedTargets", "NextTokenTargets", "Objective", "TargetMaker",
           "config_from_dict", "lm_auto_class", "next_token_labels", "objective_of"]
