"""What a teacher preparation is: its recipe (every value that changes the prepared weights), its checks, its key.

A *recipe* is a nested dict with the keys of :data:`BASE_RECIPE`, the defaults of the recipe's declared settings
(``RECIPE_BLOCKS``). The recipe of a base teacher is ``BASE_RECIPE`` updated with ``TEACHER_RECIPES[teacher]``;
``experiments/prepare_teacher.py`` takes the same defaults per teacher, and the catalogue's ``*-prepared`` entries
pass the whole recipe on the command line, so a manual run and a catalogue-triggered run with the same values land
in the same cache directory::

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
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from kd_plugin import validation as values
from kd_plugin.config.declarations import Block, Setting, nested_defaults
from kd_plugin.config.distill import DATA, MASKING
from kd_plugin.config.optim import OPTIM, clipping_norm_above_zero
from kd_plugin.errors import ConfigError
from kd_plugin.runtime.paths import TEACHER_CACHE_ENV, teacher_cache_root

CACHE_ENV = TEACHER_CACHE_ENV  # overrides <project>/.cache/teachers (tests use a temporary directory)
RECORD_FILE = "preparation.json"  # written last: its presence marks a complete prepared teacher
FORMAT_VERSION = 3  # bump when the preparation code changes what a recipe produces
# (2: hashed held-out split; 3: the distillation engine's optimizer groups and schedule, kd_plugin.optimization)

# The recipe, each value declared once (kd_plugin.config.declarations): its default, one-line doc and check. The
# experiment's Sacred defaults, print_config's comments, PreparationConfig's parse and docs/configuration.md come
# from these blocks; a setting distillation has too keeps distillation's doc and check, with the recipe's default.
# The defaults are the recipe's own numbers, never distillation's: a changed default changes every cache key.
RECIPE = Block.from_records(
    "", "the recipe's own values: seed, batch, and the two training phases (head only, then the whole model)",
    seed=Setting(42, "head initialisation, data order, masks (the held-out split hashes documents: seed-independent)",
                 partial(values.integer, minimum=0)),
    batch_size=Setting(32, "sequences per optimizer step", values.integer),
    train_head_only_steps=Setting(0, "phase 1: only the MLM head trains (encoder frozen)",
                                  partial(values.integer, minimum=0)),
    head_lr=replace(OPTIM["lr"], default=1e-3, doc="peak learning rate of phase 1"),
    steps=Setting(300, "phase 2: the whole model trains", partial(values.integer, minimum=0)),
    lr=replace(OPTIM["lr"], default=2e-4, doc="peak learning rate of phase 2 (linear warm-up, then linear decay)"),
)
RECIPE_DATA = Block.from_records(
    "data", "the corpus the head (and model) are fitted on, and the held-out documents measured",
    **DATA.reused(corpus="wiki_leads", max_seq_length=128),
    # the distillation default: with the hashed split its held-out documents stay unseen by the prepared teacher
    held_out_fraction=Setting(0.02, "documents held out for the accuracy before / after, by a hash of their text",
                              partial(values.number, low=0.0, high=1.0, low_open=True, high_open=True)),
    max_documents=Setting(None, "use only the first N documents (null = every document)",
                          partial(values.integer, minimum=2, allow_none=True)),
    **DATA.reused(sample_by="line"),
)
RECIPE_MASKING = Block.from_records(  # checked by kd_plugin.masking's MaskingConfig
    "masking", "BERT pre-training corruption: 15 % of tokens, 80/10/10, uniform selection (no frequency smoothing)",
    **MASKING.reused(mlm_probability=0.15, mask_fraction=0.8, random_fraction=0.1, keep_fraction=0.1, smoothing=0.0),
)
RECIPE_OPTIM = Block.from_records(
    "optim", "AdamW, per phase: linear warm-up then linear decay (the learning rates: head_lr, lr)",
    **OPTIM.reused(betas=[0.9, 0.999], eps=1e-6, weight_decay=0.01, warmup_proportion=0.06),
    max_grad_norm=Setting(1.0, "gradient clipping norm (the preparation always clips)", clipping_norm_above_zero),
)
RECIPE_BLOCKS = (RECIPE, RECIPE_DATA, RECIPE_MASKING, RECIPE_OPTIM)
BASE_RECIPE: dict[str, Any] = nested_defaults(RECIPE_BLOCKS)

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
