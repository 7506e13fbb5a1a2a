"""Every teacher name resolved, the prepared catalogue entries included (``bert-tiny-prepared``,
``minilm-l6-prepared``: :data:`kd_plugin.teacher_catalogue.PREPARED`).

Resolving a prepared name prepares it once (its own Sacred run, then cached: :func:`kd_plugin.preparation.
ensure_prepared`); every other name is the catalogue's (:func:`kd_plugin.teacher_catalogue.resolve_teacher`).
The layers that load teachers (training, downstream) call this function: nothing is registered on import.
"""

from __future__ import annotations

from kd_plugin.preparation.cache import ensure_prepared, read_record
from kd_plugin.teacher_catalogue import PREPARED, TeacherSource
from kd_plugin.teacher_catalogue import resolve_teacher as resolve_catalogue_teacher


def prepared_source(name: str) -> TeacherSource:
    """The prepared teacher ``name``, prepared first if it is not cached yet."""
    path = ensure_prepared(PREPARED[name])
    accuracy = (read_record(path) or {}).get("accuracy", {})
    note = (f"{PREPARED[name]} after masked-LM preparation (held-out masked-token accuracy "
            f"{accuracy.get('before', {}).get('accuracy', float('nan')):.3f} -> "
            f"{accuracy.get('after', {}).get('accuracy', float('nan')):.3f})")
    return TeacherSource(name, str(path), note=note)


def resolve_teacher(name_or_path: str) -> TeacherSource:
    """Where to load ``name_or_path`` from: a prepared catalogue name (prepared once), or whatever the catalogue
    resolves (an entry, a local directory, a hub id); a ConfigError for a name that is neither."""
    if name_or_path in PREPARED:
        return prepared_source(name_or_path)
    return resolve_catalogue_teacher(name_or_path)
