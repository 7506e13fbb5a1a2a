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

from kd_plugin.preparation.preparation_config import PREPARATION_BLOCKS, PreparationConfig  # noqa: E402
from kd_plugin.preparation.recipes import RECORD_FILE, SMOKE, TEACHER_RECIPES  # noqa: E402
from kd_plugin.runtime.run_folder import check_holds_none  # noqa: E402
from kd_plugin.tracking.sacred_experiment import run_main, set_up_experiment  # noqa: E402
from kd_plugin.training.interruption import clean_exit, install_process_handlers  # noqa: E402

TEXT_CHECKS: dict = {}  # what the config hook measured on the corpus sample, for the run's info
# Every setting's default and print_config comment come from its one declaration (the recipe's in
# kd_plugin/preparation/recipes.py, the others in preparation_config.py); the recipe's defaults are the base
# teacher's own (TEACHER_RECIPES over BASE_RECIPE), so `with teacher=minilm-l6` changes them as the catalogue does.
ex = Experiment("prepare_teacher", save_git_info=False)  # here: Sacred records the calling file as the main file
set_up_experiment(ex, LAUNCH, PREPARATION_BLOCKS, per_value=("teacher", TEACHER_RECIPES))
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
