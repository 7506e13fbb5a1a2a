"""The student: which teacher layers it keeps, which architecture is built from them, what the losses need of it."""

from kd_plugin.student.architectures import STUDENT_ARCHITECTURES, check_architecture
from kd_plugin.student.build import StudentSummary, build_student
from kd_plugin.student.layer_selection import LAYER_STRATEGIES, select_layers
from kd_plugin.student.requirements import ModelRequirements

__all__ = ["LAYER_STRATEGIES", "STUDENT_ARCHITECTURES", "ModelRequirements", "StudentSummary", "build_student",
           "check_architecture", "select_layers"]
