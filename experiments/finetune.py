"""Downstream evaluation of a teacher or a distilled student: fine-tune on labelled tasks, report accuracy per task
and the GLUE-style macro average, plus a size/speed report against the teacher.

    bash scripts/fetch_eval_data.sh                                        # once: the offline tasks' data
    python experiments/finetune.py with model=bert-tiny                     # the packaged teacher, 4 offline tasks
    python experiments/finetune.py with model=outputs/distill/<run>/student size_speed.reference=bert-tiny
    python experiments/finetune.py with distill_run_id=12                   # the student of saved distill run 12
    python experiments/finetune.py with model=<student> distillation.teacher_model=bert-tiny   # "DistilBERT (D)"
    python experiments/finetune.py with model=bert-tiny save_models=True     # fine-tuned teachers, reusable as
        # distillation.teacher_model="{'mr_sentiment': '<output_dir>/models/mr_sentiment', ...}" (no re-fine-tuning)
    python experiments/finetune.py with smoke                               # seconds, tiny random model
    python experiments/finetune.py with model=bert-tiny "tasks=['glue/sst2']"   # GLUE by name (online only)
    python -m kd_plugin.downstream.size_speed --teacher bert-tiny --student <dir>   # size/speed alone

Tasks (kd_plugin/downstream/tasks.py): mr_sentiment, conll2010_uncertainty, bbc_topics (5-way), wiki_topics
(11-way, articles held out of the distillation corpus), glue/<name>. Splits are fixed by ``split_seed`` (not by
``seed``, which drives initialisation and data order), so every run is scored on the same test examples.
``distill_run_id`` is recorded with the run (config and info) so the analysis can join it to its distillation run.
Invalid values stop the run before any compute with ``<key>: <problem>; allowed: <values>``.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without install

from kd_plugin.errors import exit_on_config_error  # noqa: E402
from kd_plugin.runtime.launch import start_experiment_process  # noqa: E402

LAUNCH = start_experiment_process()  # the launcher's --local_rank out of argv, a one-process world if none

from sacred import Experiment  # noqa: E402

from kd_plugin.downstream.evaluation import DownstreamEvaluation  # noqa: E402
from kd_plugin.downstream.finetune_config import FINETUNE_BLOCKS, FinetuneConfig  # noqa: E402
from kd_plugin.downstream.model_loading import check_saved_weights  # noqa: E402
from kd_plugin.downstream.run_link import resolve_evaluated_model  # noqa: E402
from kd_plugin.runtime.paths import OUTPUTS  # noqa: E402
from kd_plugin.runtime.run_folder import check_holds_none  # noqa: E402
from kd_plugin.tracking.sacred_experiment import run_main, set_up_experiment  # noqa: E402
from kd_plugin.training.interruption import clean_exit, install_process_handlers  # noqa: E402

# Every setting's default and print_config comment come from its one declaration
# (kd_plugin/downstream/finetune_config.py, run_link.py).
ex = Experiment("finetune", save_git_info=False)  # here: Sacred records the calling file as the main file
set_up_experiment(ex, LAUNCH, FINETUNE_BLOCKS)


@ex.named_config
def smoke():
    # Seconds: a tiny random model on a few examples of every offline task, end to end.
    model = "random-tiny"
    max_train_examples = 64
    max_eval_examples = 32
    epochs = 1
    batch_size = 16
    log_every = 2
    threads = 1
    size_speed = dict(batch_size=4, seq_length=32, repeats=2, warmup=1)


@ex.named_config
def lr_grid():
    # Each model gets its best learning rate per task (chosen on the validation split): a fairer teacher/student
    # comparison than one shared lr, at three times the cost.
    lr = [1e-4, 3e-4, 1e-3]


@ex.named_config
def distilled():
    # "DistilBERT (D)": distillation during fine-tuning from the packaged teacher, fine-tuned first on each task.
    distillation = dict(teacher_model="bert-tiny")


@ex.config_hook
def validate(config, command_name, logger):
    """Reject bad values (and an unresolvable model) before the run starts."""
    if command_name == "main":
        with exit_on_config_error():
            finetune_config = FinetuneConfig.from_dict(config)
            source = finetune_config.source
            check_holds_none(finetune_config.output_dir, "output_dir", ("results.json", "models"),
                             "an earlier fine-tuning's results, which this run would overwrite",
                             "a new output_dir (or none: a fresh folder)")
            resolved = resolve_evaluated_model(source)
            # weights that are not finite (a diverged distillation's student): refused before any training
            check_saved_weights(resolved.model, "model" if source.model is not None else "distill_run_id")
    return {}


def _output_dir(config: FinetuneConfig) -> Path:
    if config.output_dir is not None:
        return config.output_dir
    digest = hashlib.sha256(json.dumps(dict(config.raw), sort_keys=True, default=str).encode()).hexdigest()[:8]
    return OUTPUTS / "finetune" / f"{time.strftime('%Y%m%d-%H%M%S')}-{digest}"


@ex.main
def main(_config, _run):
    with exit_on_config_error():  # e.g. a task's data not fetched, a model directory that does not load
        config = FinetuneConfig.from_dict(_config)
        _run.info["distill_run_id"] = config.source.distill_run_id
        evaluation = DownstreamEvaluation(config, log_scalar=_run.log_scalar, info=_run.info,
                                          output_dir=_output_dir(config), run_id=_run._id)
        result = evaluation.run()
    _run.add_artifact(str(Path(result["output_dir"]) / "results.json"), name="results.json")
    return result


if __name__ == "__main__":
    install_process_handlers()  # SIGTERM / SIGHUP are recorded as INTERRUPTED, like Ctrl-C
    with clean_exit(resumable=False):
        run_main(ex)
