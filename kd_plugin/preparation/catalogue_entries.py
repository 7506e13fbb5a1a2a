"""The prepared teachers in the teacher catalogue: ``bert-tiny-prepared`` and ``minilm-l6-prepared``.

Resolving one prepares it once (its own Sacred run, then cached: :func:`kd_plugin.preparation.ensure_prepared`).
Registered when :mod:`kd_plugin.preparation` is imported: the catalogue itself knows nothing of preparation.
"""

from __future__ import annotations

from kd_plugin.preparation.cache import ensure_prepared, read_record
from kd_plugin.preparation.recipes import PREPARED_TEACHERS
from kd_plugin.teacher_catalogue import TEACHERS, TeacherSource, register_derived


def prepared_source(name: str) -> TeacherSource:
    base = PREPARED_TEACHERS[name]
    path = ensure_prepared(base)
    accuracy = (read_record(path) or {}).get("accuracy", {})
    note = (f"{base} after masked-LM preparation (held-out masked-token accuracy "
            f"{accuracy.get('before', {}).get('accuracy', float('nan')):.3f} -> "
            f"{accuracy.get('after', {}).get('accuracy', float('nan')):.3f})")
    return TeacherSource(name, str(path), note=note)


def register_prepared_teachers() -> None:
    for name, base in PREPARED_TEACHERS.items():
        if name not in TEACHERS:  # idempotent (a module may be re-imported under another name)
            register_derived(name, base, lambda name=name: prepared_source(name))


register_prepared_teachers()
