"""Prepare a teacher whose masked-LM head is missing or weak: fit the head, then the whole model, on the corpus.

    python experiments/prepare_teacher.py                          # bert-tiny, its default recipe
    python experiments/prepare_teacher.py with teacher=minilm-l6   # fresh MLM head: head-only, then full (~48 CPU-min)
    python experiments/prepare_teacher.py with smoke               # seconds: a few hundred documents, 30 steps
    python experiments/prepare_teacher.py where with teacher=minilm-l6   # print the cache directory, no compute
    python experiments/prepare_teacher.py print_config

The prepared teacher (save_pretrained model + tokenizer, ``preparation.json`` with the recipe, the held-out
masked-token accuracy before / after, the Sacred run id and the date) is cached in
``<cache_root>/<teacher>-prepared-<key>/``; the key hashes every recipe value (kd_plugin/preparation/recipes.py),
the corpus content and the base weights. ``distill.py with teacher=bert-tiny-prepared`` runs this experiment as a
subprocess when its cache is missing. Invalid values stop the run before any compute.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without install

from kd_plugin.errors import exit_on_config_error  # noqa: E402
from kd_plugin.runtime.launch import start_experiment_process  # noqa: E402

LAUNCH = start_experiment_process()  # the launcher's --local_rank out of argv, a one-process world if none

from sacred import Experiment  # noqa: E402

from kd_plugin.preparation.preparation_config import DEFAULT_DATASET_CACHE, PreparationConfig  # noqa: E402
from kd_plugin.preparation.recipes import RECORD_FILE, SMOKE, default_cache_root, recipe_value  # noqa: E402
from kd_plugin.runtime.run_folder import check_holds_none  # noqa: E402
from kd_plugin.tracking.sacred_experiment import configure_experiment, run_main  # noqa: E402
from kd_plugin.training.interruption import clean_exit, install_process_handlers  # noqa: E402

ex = Experiment("prepare_teacher", save_git_info=False)
TEXT_CHECKS: dict = {}  # what the config hook measured on the corpus sample, for the run's info
configure_experiment(ex, LAUNCH)


@ex.config
def config():
    teacher = "bert-tiny"  # base: bert-tiny (weak MLM head), minilm-l6 (no MLM head), or a local BERT directory
    # --- the recipe: every value below except data.cache_dir is part of the cache key; defaults per teacher in
    # kd_plugin/preparation/recipes.py (BASE_RECIPE, TEACHER_RECIPES)
    seed = recipe_value(teacher, "seed")  # head init, data order, masks, and the train / held-out document split
    data = dict(
        recipe_value(teacher, "data"),  # corpus, max_seq_length, held_out_fraction, max_documents, sample_by
        cache_dir=str(DEFAULT_DATASET_CACHE),  # tokenized-corpus cache (shared with distill)
        text_checks="refuse",  # a sample the tokenizer makes garbage of: refuse | warn | off (not in the key)
    )
    masking = recipe_value(teacher, "masking")  # 15 %, 80/10/10, uniform selection
    batch_size = recipe_value(teacher, "batch_size")  # sequences per optimizer step
    train_head_only_steps = recipe_value(teacher, "train_head_only_steps")  # phase 1: only the MLM head trains
    head_lr = recipe_value(teacher, "head_lr")  # peak learning rate of phase 1
    steps = recipe_value(teacher, "steps")  # phase 2: the whole model trains
    lr = recipe_value(teacher, "lr")  # peak learning rate of phase 2
    optim = recipe_value(teacher, "optim")  # AdamW; linear warm-up then linear decay, per phase
    # --- not in the key
    evaluation = dict(
        max_sequences=None,  # held-out sequences measured before / after (null = all)
        batch_size=32,
        seed=0,  # the fixed masks every model is measured on
    )
    cache_root = str(default_cache_root())  # $KD_TEACHER_CACHE or <project>/.cache/teachers
    output_dir = None  # null = <cache_root>/<teacher>-prepared-<key>
    overwrite = False  # prepare again even when the cache directory is complete
    log_every = 10  # optimizer steps between logged training metrics
    progress_bar = True  # a tqdm bar; False: one plain log line per log point (for log files)


ex.add_named_config("smoke", SMOKE)


@ex.config_hook
def validate(config, command_name, logger):
    """Reject bad values before the run starts (no model loaded, no run record half created)."""
    if command_name in ("main", "where"):
        with exit_on_config_error():  # one line "configuration error: <key>: ..." and exit status 2
            preparation = PreparationConfig.from_dict(config)
            if command_name == "main" and not (preparation.output_dir and (preparation.output_dir / RECORD_FILE).is_file()):
                # the prepared folder replaces output_dir as a whole: only an earlier preparation may be there
                check_holds_none(preparation.output_dir, "output_dir", None, "it holds no teacher preparation "
                                 f"({RECORD_FILE}), and preparing into it would delete them",
                                 "a new or empty folder, an earlier preparation's folder, or null (the cache)")
            if command_name == "main":  # the base teacher's tokenizer on the corpus's first documents
                from kd_plugin.data.text_checks import check_corpus_text
                from kd_plugin.teacher_catalogue import resolve_teacher

                data = preparation.data
                TEXT_CHECKS.update(check_corpus_text(
                    data.corpus, resolve_teacher(preparation.teacher).path, data.text_checks,
                    sample_by=data.sample_by, max_documents=data.max_documents, teacher=preparation.teacher))
    return {}


@ex.command(unobserved=True)
def where(_config):
    """Print the cache directory of this recipe (loads the corpus to fingerprint it; trains nothing)."""
    from kd_plugin.preparation.cache import locate

    with exit_on_config_error():
        config = PreparationConfig.from_dict(_config)
    location = locate(config.teacher, config.recipe, config.cache_root)
    print(location.directory, "(complete)" if location.complete() else "(not prepared yet)")
    return str(location.directory)


@ex.main
def main(_config, _run):
    from kd_plugin.preparation.mlm_training import prepare_teacher

    with exit_on_config_error():
        config = PreparationConfig.from_dict(_config)
    _run.info["text_checks"] = dict(TEXT_CHECKS)
    result = prepare_teacher(config, log_scalar=_run.log_scalar, info=_run.info, run_id=_run._id)
    record = Path(result["prepared_dir"]) / "preparation.json"
    if record.is_file() and not result.get("reused"):
        _run.add_artifact(str(record), name="preparation.json")
    return result


if __name__ == "__main__":
    install_process_handlers()  # SIGTERM / SIGHUP are recorded as INTERRUPTED, like Ctrl-C
    with clean_exit(resumable=False):
        run_main(ex)
