"""Teacher preparation: recipes and cache keys (``recipes``), the prepare-once cache (``cache``), and the masked-LM
fit itself (``mlm_training``, imported by experiments/prepare_teacher.py; not here, it needs the catalogue)."""

from kd_plugin.preparation.cache import ensure_prepared, locate, read_record
from kd_plugin.preparation.recipes import (
    BASE_RECIPE,
    PREPARED_TEACHERS,
    SMOKE,
    TEACHER_RECIPES,
    default_cache_root,
    recipe_for,
    validate_preparation_config,
)

__all__ = [
    "BASE_RECIPE",
    "PREPARED_TEACHERS",
    "SMOKE",
    "TEACHER_RECIPES",
    "default_cache_root",
    "ensure_prepared",
    "locate",
    "read_record",
    "recipe_for",
    "validate_preparation_config",
]
