"""Downstream evaluation: what a (distilled) model retained, measured by fine-tuning on labelled tasks.

    tasks.py          registry of task loaders -> fixed seeded train / validation / test DatasetDicts
    splits.py         the hash-based stratified splits
    sources.py        where scripts/fetch_eval_data.sh put the raw files
    model_loading.py  model name / directory -> classifier or bare encoder (+ tokenizer)
    finetuning.py     tokenize, fine-tune, predict
    distill_loss.py   task loss + the ``ce`` soft-target term on class logits ("DistilBERT (D)")
    metrics.py        accuracy and the GLUE-style macro average
    size_speed.py     parameter counts and inference throughput, teacher vs student
    run_link.py       the distillation run an evaluation belongs to (MongoDB lookup)
    finetune_config.py FinetuneConfig: the finetune experiment's config, parsed and checked once
    evaluation.py     one evaluation run over several tasks (what experiments/finetune.py runs)
"""

from kd_plugin.downstream.distill_loss import FinetuneLoss
from kd_plugin.downstream.metrics import accuracy, macro_average
from kd_plugin.downstream.size_speed import count_parameters, size_speed_report
from kd_plugin.downstream.tasks import OFFLINE_TASKS, TASKS, load_task

__all__ = [
    "OFFLINE_TASKS",
    "TASKS",
    "FinetuneLoss",
    "accuracy",
    "count_parameters",
    "load_task",
    "macro_average",
    "size_speed_report",
]
