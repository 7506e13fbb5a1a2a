"""Teacher preparation: recipes and cache keys (``recipes``), the experiment's config parsed once
(``preparation_config``), the prepare-once cache (``cache``), every teacher name resolved, the prepared ones
included (``teachers``), and the masked-LM fit itself (``mlm_training``, imported by
experiments/prepare_teacher.py)."""

from kd_plugin.preparation.cache import ensure_prepared, locate, read_record
from kd_plugin.preparation.preparation_config import PreparationConfig
from kd_plugin.preparation.recipes import (
    BASE_RECIPE,
    SMOKE,
    TEACHER_RECIPES,
    default_cache_root,
    recipe_for,
)
from kd_plugin.preparation.teachers import resolve_teacher

__all__ = [
    "BASE_RECIPE",
    "PreparationConfig",
    "SMOKE",
    "TEACHER_RECIPES",
    "default_cache_root",
    "ensure_prepared",
    "locate",
    "read_record",
    "recipe_for",
    "resolve_teacher",
]
