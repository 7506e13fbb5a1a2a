"""Build the student from the teacher: select the teacher layers to keep, build the declared architecture
(:mod:`kd_plugin.student.architectures`), apply what the loss terms need, summarise what was done."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from transformers import PreTrainedModel

from kd_plugin.families import family_of, n_layers_of
from kd_plugin.student.architectures import check_architecture
from kd_plugin.student.layer_selection import resolve_n_layers, select_layers
from kd_plugin.student.requirements import ModelRequirements, apply_to_student


@dataclass(frozen=True)
class StudentSummary:
    """What ``build_student`` did, for the run's record.

    ``fold_token_type_embedding`` is whether the token-type row was actually folded (only DistilBERT students
    fold it; always False for ``random_init``, which copies nothing).
    """

    strategy: str
    teacher_layers_copied: list[int] = field(default_factory=list)
    n_layers: int = 0
    n_parameters: int = 0
    n_non_embedding_parameters: int = 0
    teacher_n_parameters: int = 0
    fold_token_type_embedding: bool = False
    architecture: str = "distilbert"  # student.architecture
    model_class: str = ""  # the student's transformers class, e.g. GPT2LMHeadModel
    family: str = ""  # the teacher's (and, for architecture=same, the student's) model family
    objective: str = ""  # masked_lm | causal_lm

    def to_dict(self) -> dict:
        return asdict(self)


def build_student(
    teacher: PreTrainedModel,
    strategy: str | list[int],
    n_layers: int | None = None,
    fold_token_type_embedding: bool = True,
    seed: int | None = None,
    requirements: ModelRequirements | None = None,
    architecture: str = "distilbert",
) -> tuple[PreTrainedModel, StudentSummary]:
    """A student of ``architecture`` initialised from ``teacher``.

    ``strategy`` / ``n_layers`` are the ``student.layers`` / ``student.n_layers`` declarations
    (see ``select_layers``). ``seed`` seeds the fresh initialisation without touching the global RNG; it only
    matters for ``random_init``, since every other strategy overwrites every student weight. The student has
    the teacher's dtype and device and is returned in eval mode, like ``from_pretrained``. ``requirements``
    (what the loss terms read, see :mod:`kd_plugin.student.requirements`) are applied to it.
    """
    builder = check_architecture(architecture, teacher.config)
    family = family_of(teacher.config)
    teacher_layers = n_layers_of(teacher.config)
    layers = select_layers(strategy, n_layers, teacher_layers)
    depth = len(layers) if layers else resolve_n_layers(n_layers, teacher_layers)
    folded = fold_token_type_embedding and bool(layers) and architecture == "distilbert"
    student = builder.build(teacher, layers, depth, seed, folded)
    if requirements is not None:
        apply_to_student(student, requirements)
    student.eval()
    summary = StudentSummary(
        strategy=strategy if isinstance(strategy, str) else "explicit",
        teacher_layers_copied=list(layers),
        n_layers=depth,
        n_parameters=student.num_parameters(),
        n_non_embedding_parameters=student.num_parameters(exclude_embeddings=True),
        teacher_n_parameters=teacher.num_parameters(),
        fold_token_type_embedding=folded,
        architecture=architecture,
        model_class=type(student).__name__,
        family=family.name,
        objective=family.objective,
    )
    return student, summary
