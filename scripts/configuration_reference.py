"""Print docs/configuration.md: the teacher preparation's and the fine-tuning's settings, from their declarations.

    .venv/bin/python scripts/configuration_reference.py > docs/configuration.md

``tests/test_config_prepare_finetune.py`` fails when the file and the declarations disagree.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without install

from kd_plugin.config.declarations import declared_keys, table_rows  # noqa: E402
from kd_plugin.downstream.finetune_config import FINETUNE_BLOCKS  # noqa: E402
from kd_plugin.preparation.preparation_config import PREPARATION_BLOCKS  # noqa: E402
from kd_plugin.preparation.recipes import RECIPE_BLOCKS, TEACHER_RECIPES, flatten  # noqa: E402

INTRO = """# Configuration reference: teacher preparation and fine-tuning

Every key of `experiments/prepare_teacher.py` and `experiments/finetune.py`: its default, what it allows and what it
means, generated from the settings' declarations (`.venv/bin/python scripts/configuration_reference.py >
docs/configuration.md`; a test fails when they disagree). `print_config` shows the same text as each key's comment,
and a value outside "allowed" stops the run before any compute with one line `configuration error: <key>: <problem>;
allowed: <values>`. The distillation experiment's keys: the README's "What is configured" and
`experiments/distill.py print_config`."""


def preparation_section() -> list[str]:
    recipe = ", ".join(f"`{key}`" for key in declared_keys(RECIPE_BLOCKS))
    lines = ["## Teacher preparation (`experiments/prepare_teacher.py`)", "",
             f"The recipe, every value of which is hashed as given into the cache key "
             f"(`kd_plugin/preparation/recipes.py`): {recipe}. Its defaults below are changed per base teacher:", "",
             "| base teacher | its own recipe defaults |", "|---|---|"]
    for teacher, recipe_defaults in TEACHER_RECIPES.items():
        own = ", ".join(f"`{key}={value!r}`" for key, value in flatten(recipe_defaults).items())
        lines.append(f"| `{teacher}` | {own} |")
    return [*lines, "", *table_rows(PREPARATION_BLOCKS)]


def finetune_section() -> list[str]:
    return ["## Fine-tuning (`experiments/finetune.py`)", "", *table_rows(FINETUNE_BLOCKS)]


def reference() -> str:
    return "\n\n".join([INTRO, "\n".join(preparation_section()), "\n".join(finetune_section())]) + "\n"


if __name__ == "__main__":
    sys.stdout.write(reference())
