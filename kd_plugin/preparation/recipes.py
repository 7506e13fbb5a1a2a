"""What a teacher preparation is: its recipe (every value that changes the prepared weights), its checks, its key.

A *recipe* is a nested dict with the keys of :data:`BASE_RECIPE`. The recipe of a base teacher is
``BASE_RECIPE`` updated with ``TEACHER_RECIPES[teacher]``; ``experiments/prepare_teacher.py`` takes its defaults
from :func:`recipe_for`, and the catalogue's ``*-prepared`` entries pass the whole recipe on the command line, so a
manual run and a catalogue-triggered run with the same values land in the same cache directory::

    <cache_root>/<teacher>-prepared-<key>/      key = sha256(format, recipe, corpus fingerprint, teacher source)[:12]

Settings that do not change the weights (evaluation size, cache locations, progress bar) are not in the recipe.
The checks of a whole preparation config are :class:`kd_plugin.preparation.preparation_config.PreparationConfig`;
its ``recipe`` is what is hashed here, the values exactly as given.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kd_plugin.errors import ConfigError
from kd_plugin.runtime.paths import TEACHER_CACHE_ENV, teacher_cache_root

CACHE_ENV = TEACHER_CACHE_ENV  # overrides <project>/.cache/teachers (tests use a temporary directory)
RECORD_FILE = "preparation.json"  # written last: its presence marks a complete prepared teacher
FORMAT_VERSION = 3  # bump when the preparation code changes what a recipe produces
# (2: hashed held-out split; 3: the distillation engine's optimizer groups and schedule, kd_plugin.optimization)

BASE_RECIPE: dict[str, Any] = {
    "seed": 42,  # head initialisation, data order, masks (the held-out split hashes documents: seed-independent)
    "data": {
        "corpus": "wiki_leads",
        "max_seq_length": 128,
        "held_out_fraction": 0.02,  # the distillation default: with the hashed split its held-out docs stay unseen
        "max_documents": None,
        "sample_by": "line",
    },
    # BERT pre-training corruption: 15 % of tokens, 80/10/10, uniform selection (no frequency smoothing)
    "masking": {"mlm_probability": 0.15, "mask_fraction": 0.8, "random_fraction": 0.1, "keep_fraction": 0.1,
                "smoothing": 0.0},
    "batch_size": 32,
    "train_head_only_steps": 0,  # phase 1: only the MLM head trains (encoder frozen)
    "head_lr": 1e-3,
    "steps": 300,  # phase 2: the whole model trains
    "lr": 2e-4,
    "optim": {"betas": [0.9, 0.999], "eps": 1e-6, "weight_decay": 0.01, "warmup_proportion": 0.06,
              "max_grad_norm": 1.0},
}

# Per base teacher. bert-tiny, measured here (held-out masked-token accuracy, shipped 5.4 %): 600 full-model steps
# reach 37.0 % at lr 1e-3 and 35.4 % at lr 3e-4. A step (32 x <=128 tokens) takes ~0.23 s on 2 idle cores
# (~0.44 s of CPU on one), so the default preparation takes ~2.5-3 min on an idle machine; more when the cores are
# shared. minilm-l6 (no MLM head as shipped) trains a fresh head 600 steps, then the full model 300 steps (a head alone
# reached 13.4 % held-out masked-token accuracy; the full steps bring it to 33.4 %). Measured 2026-11-30 on one
# thread of a shared 2-core machine: 3854 s wall, 2871 s of CPU (head-only steps ~2-4 s, full steps ~4-6 s).
TEACHER_RECIPES: dict[str, dict[str, Any]] = {
    "bert-tiny": {"train_head_only_steps": 0, "steps": 600, "lr": 1e-3},
    "minilm-l6": {"train_head_only_steps": 600, "head_lr": 1e-3, "steps": 300, "lr": 2e-4},
}

# Seconds, for tests and quick checks: a few hundred documents, short sequences, a few dozen steps.
SMOKE: dict[str, Any] = {
    "data": {"max_documents": 400, "max_seq_length": 64, "held_out_fraction": 0.1},
    "batch_size": 16,
    "train_head_only_steps": 0,
    "steps": 30,  # bert-tiny: 6.8 % -> 22.1 % held-out masked-token accuracy, ~10 s of CPU
    "lr": 1e-3,
}

# catalogue name of the prepared teacher -> base teacher
PREPARED_TEACHERS = {"bert-tiny-prepared": "bert-tiny", "minilm-l6-prepared": "minilm-l6"}


def deep_update(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``update`` merged in (nested dicts merged key by key)."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def recipe_for(teacher: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The complete recipe of ``teacher`` (its ``TEACHER_RECIPES`` entry over ``BASE_RECIPE``) plus overrides.

    ``overrides`` may hold keys that are not part of a recipe (e.g. ``evaluation``); they are dropped here.
    """
    recipe = deep_update(BASE_RECIPE, TEACHER_RECIPES.get(teacher, {}))
    return recipe_of(deep_update(recipe, overrides or {}))


def recipe_value(teacher: str, key: str) -> Any:
    """One top-level recipe value of ``teacher`` (the experiment's config scope reads its defaults with this)."""
    return recipe_for(teacher)[key]


def recipe_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe part of an experiment config: exactly the keys of ``BASE_RECIPE`` (nested dicts too)."""

    def pick(template: Mapping[str, Any], source: Mapping[str, Any], prefix: str) -> dict[str, Any]:
        out = {}
        for key, default in template.items():
            if key not in source:
                raise ConfigError(prefix + key, "missing from the preparation config", "see BASE_RECIPE")
            value = source[key]
            out[key] = pick(default, value, f"{prefix}{key}.") if isinstance(default, dict) else copy.deepcopy(value)
        return out

    return pick(BASE_RECIPE, config, "")


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"data": {"corpus": x}}`` -> ``{"data.corpus": x}`` (Sacred command-line form)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def preparation_key(recipe: Mapping[str, Any], corpus_fingerprint: str, teacher_source: str) -> str:
    """12 hex digits identifying the prepared weights: recipe + corpus content + base weights + code version."""
    payload = {"format": FORMAT_VERSION, "recipe": recipe_of(recipe), "corpus_fingerprint": corpus_fingerprint,
               "teacher_source": teacher_source}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


default_cache_root = teacher_cache_root  # $KD_TEACHER_CACHE, else <project>/.cache/teachers


def prepared_dir_name(teacher: str, key: str) -> str:
    """``<teacher>-prepared-<key>``; a local-directory teacher contributes its folder name."""
    stem = Path(teacher).name if ("/" in teacher or os.sep in teacher) else teacher
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "teacher"
    return f"{stem}-prepared-{key}"
