"""The student: which teacher layers it keeps and how a DistilBERT is built from them."""

from kd_plugin.student.build import StudentSummary, build_student
from kd_plugin.student.layer_selection import LAYER_STRATEGIES, select_layers

__all__ = ["LAYER_STRATEGIES", "StudentSummary", "build_student", "select_layers"]
