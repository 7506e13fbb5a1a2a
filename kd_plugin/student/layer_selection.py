"""Which teacher layers initialise the student: the `student.layers` declaration.

DistilBERT (Sanh et al. 2019) initialises its 6-layer student "from the teacher by taking one layer out of two".
The strategies below name the common variants of that choice; each is a function
``(n_layers, teacher_layers) -> list[int]`` registered in ``LAYER_STRATEGIES``, so a new strategy is one new
decorated function. A declaration is either one of those names or an explicit, sorted list of teacher layer
indices (0-based, layer 0 is the one right above the embeddings).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from kd_plugin.errors import ConfigError
from kd_plugin.registry import Registry

LayerStrategy = Callable[[int, int], list[int]]

LAYER_STRATEGIES: Registry[LayerStrategy] = Registry("layer strategy")

LAYERS_KEY = "student.layers"
N_LAYERS_KEY = "student.n_layers"


def _check_n_layers_at_most(n_layers: int, maximum: int, strategy: str, teacher_layers: int) -> None:
    if n_layers > maximum:
        raise ConfigError(
            N_LAYERS_KEY,
            f"{n_layers} layers do not fit strategy {strategy!r} on a {teacher_layers}-layer teacher",
            f"1..{maximum} for {strategy!r}",
        )


@LAYER_STRATEGIES.register("alternate")
def alternate(n_layers: int, teacher_layers: int) -> list[int]:
    """One layer out of two from the bottom: 0, 2, 4, ... (n_layers of them)."""
    _check_n_layers_at_most(n_layers, (teacher_layers + 1) // 2, "alternate", teacher_layers)
    return [2 * i for i in range(n_layers)]


@LAYER_STRATEGIES.register("distilbert_release")
def distilbert_release(n_layers: int, teacher_layers: int) -> list[int]:
    """The layers of the public DistilBERT extraction script: [0, 2, 4, 7, 9, 11] for 12 -> 6.

    Rule, generalised to any depth: the bottom ``ceil(n/2)`` student layers take every other teacher layer
    counting up from layer 0 (0, 2, 4, ...); the top ``floor(n/2)`` student layers take every other teacher
    layer counting down from the top layer (T-1, T-3, ...). Both halves must not meet, so
    ``n_layers <= (T + 2) // 2``.
    """
    _check_n_layers_at_most(n_layers, (teacher_layers + 2) // 2, "distilbert_release", teacher_layers)
    n_bottom = (n_layers + 1) // 2
    n_top = n_layers // 2
    bottom = [2 * i for i in range(n_bottom)]
    top = [teacher_layers - 1 - 2 * i for i in reversed(range(n_top))]
    return bottom + top


@LAYER_STRATEGIES.register("first")
def first(n_layers: int, teacher_layers: int) -> list[int]:
    """The bottom n_layers teacher layers: 0 .. n-1."""
    return list(range(n_layers))


@LAYER_STRATEGIES.register("last")
def last(n_layers: int, teacher_layers: int) -> list[int]:
    """The top n_layers teacher layers: T-n .. T-1."""
    return list(range(teacher_layers - n_layers, teacher_layers))


@LAYER_STRATEGIES.register("uniform")
def uniform(n_layers: int, teacher_layers: int) -> list[int]:
    """Evenly spread, always including the top layer.

    Cut the teacher into n_layers consecutive blocks and take the top layer of each: student layer i gets
    teacher layer ``floor((i + 1) * T / n) - 1``. 12 -> 6 gives [1, 3, 5, 7, 9, 11]; 12 -> 4 gives [2, 5, 8, 11].
    """
    return [(i + 1) * teacher_layers // n_layers - 1 for i in range(n_layers)]


@LAYER_STRATEGIES.register("random_init")
def random_init(n_layers: int, teacher_layers: int) -> list[int]:
    """Copy nothing: the student has the DistilBERT architecture with n_layers and fresh (seeded) weights."""
    return []


def _check_teacher_layers(teacher_layers: int) -> None:
    if isinstance(teacher_layers, bool) or not isinstance(teacher_layers, int) or teacher_layers < 1:
        raise ValueError(f"teacher_layers must be a positive int, got {teacher_layers!r}")


def resolve_n_layers(n_layers: int | None, teacher_layers: int) -> int:
    """Check n_layers; None means half the teacher (DistilBERT's 12 -> 6), at least one layer."""
    allowed = f"an int in 1..{teacher_layers} (the teacher has {teacher_layers} layers), or null for half"
    if n_layers is None:
        return max(1, teacher_layers // 2)
    if isinstance(n_layers, bool) or not isinstance(n_layers, int):
        raise ConfigError(N_LAYERS_KEY, f"{n_layers!r} is not an integer", allowed)
    if n_layers < 1:
        raise ConfigError(N_LAYERS_KEY, f"{n_layers} layers; a student needs at least one", allowed)
    if n_layers > teacher_layers:
        raise ConfigError(
            N_LAYERS_KEY, f"{n_layers} layers is more than the teacher's {teacher_layers}", allowed
        )
    return n_layers


def _check_explicit(indices: Sequence[int], n_layers: int | None, teacher_layers: int) -> list[int]:
    allowed = f"a strictly increasing list of distinct layer indices in 0..{teacher_layers - 1}"
    if len(indices) == 0:
        raise ConfigError(LAYERS_KEY, "empty layer list; a student needs at least one layer", allowed)
    for index in indices:
        if isinstance(index, bool) or not isinstance(index, int):
            raise ConfigError(LAYERS_KEY, f"layer index {index!r} is not an integer", allowed)
        if not 0 <= index < teacher_layers:
            raise ConfigError(
                LAYERS_KEY,
                f"layer index {index} is out of range for a {teacher_layers}-layer teacher",
                allowed,
            )
    duplicates = sorted({index for index in indices if list(indices).count(index) > 1})
    if duplicates:
        raise ConfigError(LAYERS_KEY, f"duplicate layer indices {duplicates} in {list(indices)}", allowed)
    if list(indices) != sorted(indices):
        raise ConfigError(LAYERS_KEY, f"layer indices {list(indices)} are not sorted", allowed)
    if n_layers is not None and n_layers != len(indices):
        raise ConfigError(
            N_LAYERS_KEY,
            f"n_layers={n_layers} disagrees with the {len(indices)} explicit layer indices {list(indices)}",
            f"{len(indices)} (the length of student.layers) or null",
        )
    return list(indices)


def select_layers(strategy: str | list[int], n_layers: int | None, teacher_layers: int) -> list[int]:
    """The 0-based teacher layer indices copied into the student, bottom to top.

    ``strategy`` is a registered name (see ``LAYER_STRATEGIES.names()``) or an explicit list of indices. For a
    name, ``n_layers=None`` means half the teacher's depth; for a list it means ``len(list)``. ``random_init``
    returns ``[]``: nothing is copied. Every bad declaration raises ``ConfigError`` naming ``student.layers``
    or ``student.n_layers`` and what is allowed.
    """
    _check_teacher_layers(teacher_layers)
    if isinstance(strategy, (list, tuple)):
        return _check_explicit(strategy, n_layers, teacher_layers)
    if not isinstance(strategy, str) or strategy not in LAYER_STRATEGIES:
        raise ConfigError(
            LAYERS_KEY,
            f"unknown layer strategy {strategy!r}",
            ", ".join(LAYER_STRATEGIES.names())
            + f", or an explicit sorted list of distinct layer indices in 0..{teacher_layers - 1}",
        )
    n_layers = resolve_n_layers(n_layers, teacher_layers)
    return LAYER_STRATEGIES.get(strategy, key=LAYERS_KEY)(n_layers, teacher_layers)
