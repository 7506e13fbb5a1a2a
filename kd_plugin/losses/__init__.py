"""The distillation loss terms and their declared mixture."""

from kd_plugin.losses.mixture import LossMixture, MixtureDeclaration
from kd_plugin.losses.outputs import DistillationOutputs
from kd_plugin.losses.term import LOSS_TERMS, LossTerm, ModelDims

__all__ = ["LOSS_TERMS", "DistillationOutputs", "LossMixture", "LossTerm", "MixtureDeclaration", "ModelDims"]
