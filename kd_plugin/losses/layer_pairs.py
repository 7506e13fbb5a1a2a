"""Which student layer is compared with which teacher layer, for the intermediate (feature) terms.

A declaration is either a named mapping or an explicit list of ``[student_layer, teacher_layer]`` pairs
(TextBrewer's ``intermediate_matches`` in short form). Indices address ``hidden_states`` tuples, where 0 is
the embedding output and ``n_layers`` the last layer:

- ``"last"``: ``[(n_s, n_t)]``, DistilBERT's cosine loss on the last hidden state;
- ``"uniform"``: every student layer i (1..n_s) with teacher layer ``round(i * n_t / n_s)`` plus the
  embeddings (0, 0), the TinyBERT-style mapping.
"""

from __future__ import annotations

from collections.abc import Sequence

from kd_plugin.errors import ConfigError

NAMED_MAPPINGS = ("last", "uniform")


def resolve_layer_pairs(
    declared: str | Sequence[Sequence[int]], n_student: int, n_teacher: int, key: str, first_index: int = 0
) -> list[tuple[int, int]]:
    """Turn a declaration into validated (student, teacher) index pairs.

    ``first_index`` is 0 for hidden states (embeddings allowed) and 1 for attentions (layer i's attention is
    addressed by its layer number i, 1-based, so the same numbers mean the same layers in both cases).
    """
    if isinstance(declared, str):
        if declared == "last":
            return [(n_student, n_teacher)]
        if declared == "uniform":
            pairs = [(i, round(i * n_teacher / n_student)) for i in range(1, n_student + 1)]
            return ([(0, 0)] if first_index == 0 else []) + pairs
        raise ConfigError(key, f"unknown layer mapping {declared!r}", f"{NAMED_MAPPINGS} or a list of [s, t] pairs")
    pairs = []
    for pair in declared:
        if len(pair) != 2:
            raise ConfigError(key, f"{list(pair)} is not a [student_layer, teacher_layer] pair", "pairs of two ints")
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in pair):  # 2.7 must not become 2
            raise ConfigError(key, f"{list(pair)} is not a pair of layer numbers", "pairs of two ints")
        s, t = pair
        if not first_index <= s <= n_student:
            raise ConfigError(key, f"student layer {s} out of range", f"{first_index}..{n_student}")
        if not first_index <= t <= n_teacher:
            raise ConfigError(key, f"teacher layer {t} out of range", f"{first_index}..{n_teacher}")
        pairs.append((s, t))
    if not pairs:
        raise ConfigError(key, "empty list of layer pairs", "at least one [student_layer, teacher_layer] pair")
    return pairs
