"""Distil a BERT-family masked-LM into a DistilBERT student (Sanh et al. 2019), everything declared in config.

    python experiments/distill.py                         # default: prepared BERT-tiny teacher, Wikipedia leads
    python experiments/distill.py with T=2 alpha_cos=1    # change any knob
    python experiments/distill.py with smoke              # seconds, tiny random teacher
    python experiments/distill.py print_config            # every knob with its value
    deepspeed --num_accelerators 2 experiments/distill.py with ...   # several ranks (CPU or GPU)

Invalid values stop the run before any compute with ``<key>: <problem>; allowed: <values>``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without install

from kd_plugin.errors import exit_on_config_error  # noqa: E402
from kd_plugin.runtime.launch import start_experiment_process  # noqa: E402

LAUNCH = start_experiment_process()  # the launcher's --local_rank out of argv, a one-process world if none

from sacred import Experiment  # noqa: E402

from kd_plugin.config import DISTILL_BLOCKS, DistillConfig  # noqa: E402
from kd_plugin.data.source_checks import check_corpus_source  # noqa: E402
from kd_plugin.data.text_checks import check_corpus_text  # noqa: E402
from kd_plugin.export.model_card import FILE_STORAGE  # noqa: E402
from kd_plugin.runtime.output_lock import hold_output_dir  # noqa: E402
from kd_plugin.runtime.paths import DS_CONFIGS  # noqa: E402
from kd_plugin.runtime.run_folder import METRICS  # noqa: E402
from kd_plugin.runtime.writable import check_writable_dir  # noqa: E402
from kd_plugin.teacher_catalogue import architecture_source  # noqa: E402
from kd_plugin.tracking.sacred_experiment import run_main, set_up_experiment  # noqa: E402
from kd_plugin.training.divergence import exit_on_divergence  # noqa: E402
from kd_plugin.training.ds_config import check_with_deepspeed  # noqa: E402
from kd_plugin.training.interruption import clean_exit, install_process_handlers  # noqa: E402
from kd_plugin.training.resume_checks import check_resume  # noqa: E402
from kd_plugin.training.teacher_checks import check_against_teacher  # noqa: E402
from kd_plugin.training.trainer import DistillationTrainer  # noqa: E402

TEXT_CHECKS: dict = {}  # what the config hook measured on the corpus sample, for the run's info
# Every setting's default and print_config comment come from its one declaration (kd_plugin/config/distill.py).
ex = Experiment("distill", save_git_info=False)  # here: Sacred records the calling file as the main file
set_up_experiment(ex, LAUNCH, DISTILL_BLOCKS)


@ex.named_config
def smoke():
    # Seconds on a tiny random teacher: checks the whole path end to end.
    teacher = "random-tiny"
    data = dict(max_documents=300, max_seq_length=64)
    eval_max_sequences = 16
    batch = dict(micro_batch_size=8)
    max_steps = 20
    log_every = 1
    checkpoint_every = 10


@ex.named_config
def paper():
    # The public DistilBERT recipe (Sanh et al. 2019 and its released training script): a GPU job at real scale.
    T = 2.0
    alpha_ce, alpha_mlm, alpha_cos, alpha_mse = 5.0, 2.0, 1.0, 0.0
    student = dict(layers="distilbert_release")
    masking = dict(mlm_probability=0.15, mask_fraction=0.8, random_fraction=0.1, keep_fraction=0.1, smoothing=0.7)
    data = dict(max_seq_length=512)
    batch = dict(micro_batch_size=16, effective_batch_size=4096, gradient_accumulation_steps=None)
    optim = dict(lr=5e-4, betas=[0.9, 0.98], eps=1e-6, weight_decay=0.0, warmup_proportion=0.05, max_grad_norm=5.0)
    max_steps = None
    epochs = 3
    checkpoint_every = 500


@ex.named_config
def minilm():
    # Closer to the paper's 12 -> 6: the 6-layer all-MiniLM-L6-v2 (hidden 384) with a prepared MLM head,
    # distilled into 3 layers (preparation ~48 min of CPU once, then cached; 64 min on one thread of a shared machine).
    teacher = "minilm-l6-prepared"
    student = dict(n_layers=3, layers="distilbert_release")
    batch = dict(micro_batch_size=16)
    max_steps = 300


@ex.named_config
def causal_lm():
    # A decoder LM distilled into the same architecture with fewer blocks (DistilGPT2's recipe: L_clm in place of
    # L_mlm, no masking): the packaged SmolLM2-135M (Llama family, 30 blocks; converted from its GGUF file once)
    # into 15 blocks initialised from teacher blocks 0, 2, ..., 14, 17, ..., 29. A long job on a CPU.
    teacher = "smollm2-135m"
    student = dict(architecture="same", layers="distilbert_release")
    alpha_ce, alpha_mlm, alpha_clm, alpha_cos = 5.0, 0.0, 2.0, 1.0
    data = dict(pad_token="eos")
    batch = dict(micro_batch_size=8)
    max_steps = 200
    eval_max_sequences = 200


@ex.named_config
def causal_smoke():
    # Seconds: the causal-LM path end to end on a tiny random GPT-2 (the DistilGPT2 architecture).
    teacher = "random-tiny-gpt2"
    student = dict(architecture="same")
    alpha_ce, alpha_mlm, alpha_clm, alpha_cos = 5.0, 0.0, 2.0, 1.0
    data = dict(max_documents=300, max_seq_length=64, pad_token="eos")
    eval_max_sequences = 16
    batch = dict(micro_batch_size=8)
    max_steps = 20
    log_every = 1
    checkpoint_every = 10


@ex.named_config
def tensorboard():
    # Every logged metric also to TensorBoard: `tensorboard --logdir <output_dir>/monitor`.
    monitors = ["tensorboard"]


@ex.named_config
def bf16():
    deepspeed_config = str(DS_CONFIGS / "bf16.json")


@ex.named_config
def zero3():
    deepspeed_config = str(DS_CONFIGS / "zero3.json")


@ex.named_config
def offload():
    deepspeed_config = str(DS_CONFIGS / "zero2_offload.json")


@ex.config_hook
def validate(config, command_name, logger):
    """Reject bad values before the run starts (no compute, no half-created run record)."""
    if command_name == "main":
        with exit_on_config_error():
            distill_config = DistillConfig.from_dict(config)
            plan = distill_config.batch.plan(LAUNCH.world_size)  # an unreachable effective batch is refused here
            data = distill_config.data
            check_corpus_source(data.corpus, data.text_column, data.encoding, data.sample_by,
                                remember_in=data.cache_dir)  # a local source that passed is not read again
            check_writable_dir(data.cache_dir, "data.cache_dir")
            check_against_teacher(distill_config)
            TEXT_CHECKS.update(check_corpus_text(  # a prepared teacher's tokenizer is its base model's
                data.corpus, architecture_source(distill_config.teacher).path, data.text_checks,
                text_column=data.text_column, encoding=data.encoding, sample_by=data.sample_by,
                max_documents=data.max_documents or None, teacher=distill_config.teacher))
            check_with_deepspeed(distill_config, plan)  # DeepSpeed's own config models; monitors' packages
            check_resume(distill_config, plan)  # readable, and written by this teacher, student and plan
            if LAUNCH.is_main and distill_config.run.output_dir is not None:
                # writable, no other run writing there, no earlier run's results (unless resumed from there)
                hold_output_dir(distill_config.run.output_dir, resume=distill_config.run.resume)
    return {}


@ex.main
def main(_config, _run):
    with exit_on_config_error(), exit_on_divergence(_run.info):  # one line each; Sacred records FAILED
        database = next((f"{o.display_url}/{o.db_name}" for o in _run.observers if hasattr(o, "display_url")),
                        next((f"{FILE_STORAGE}{Path(o.basedir).resolve()}" for o in _run.observers
                              if hasattr(o, "basedir")), None))
        _run.info["text_checks"] = dict(TEXT_CHECKS)
        trainer = DistillationTrainer(DistillConfig.from_dict(_config), log_scalar=_run.log_scalar, info=_run.info,
                                      run_id=_run._id, database=database)
        result = trainer.run()
    for path in sorted([*Path(result["student_dir"]).glob("*.json"), Path(result["student_dir"]) / "README.md"]):
        # No '/' in artifact names: Omniboard's per-file download button breaks on them.
        _run.add_artifact(str(path), name=f"student_{path.name}")
    metrics = Path(result["student_dir"]).parent / METRICS
    if metrics.is_file():  # every logged point, as the run wrote it (the database keeps a thinned copy)
        _run.add_artifact(str(metrics), name=METRICS)
    # The weights stay in the output folder (hundreds of MB at real sizes, in GridFS otherwise): docs/tracking.md.
    return result


if __name__ == "__main__":
    install_process_handlers()  # SIGTERM / SIGHUP are recorded as INTERRUPTED, like Ctrl-C
    with clean_exit():
        run_main(ex)
