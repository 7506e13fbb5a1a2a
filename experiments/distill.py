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
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")  # sacred 0.8.7 imports it

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without install

from kd_plugin.runtime.launch import ensure_launch_env, strip_local_rank_argument  # noqa: E402

sys.argv = strip_local_rank_argument(sys.argv)  # the deepspeed launcher's --local_rank=N, before Sacred parses
LAUNCH = ensure_launch_env()

from sacred import Experiment  # noqa: E402

from kd_plugin.config import DistillConfig, declarable_loss_config  # noqa: E402
from kd_plugin.data.source_checks import check_corpus_source  # noqa: E402
from kd_plugin.data.text_checks import check_corpus_text  # noqa: E402
from kd_plugin.errors import exit_on_config_error  # noqa: E402
from kd_plugin.export.model_card import FILE_STORAGE  # noqa: E402
from kd_plugin.runtime.output_lock import hold_output_dir  # noqa: E402
from kd_plugin.runtime.paths import CACHE, DS_CONFIGS  # noqa: E402
from kd_plugin.runtime.writable import check_writable_dir  # noqa: E402
from kd_plugin.teacher_catalogue import architecture_source  # noqa: E402
from kd_plugin.tracking.sacred_experiment import configure_experiment, run_main  # noqa: E402
from kd_plugin.training.divergence import exit_on_divergence  # noqa: E402
from kd_plugin.training.ds_config import check_with_deepspeed  # noqa: E402
from kd_plugin.training.interruption import clean_exit, install_process_handlers  # noqa: E402
from kd_plugin.training.resume_checks import check_resume  # noqa: E402
from kd_plugin.training.teacher_checks import check_against_teacher  # noqa: E402
from kd_plugin.training.trainer import DistillationTrainer  # noqa: E402

EXTRA_LOSS_WEIGHTS, LOSS_OPTIONS = declarable_loss_config()
TEXT_CHECKS: dict = {}  # what the config hook measured on the corpus sample, for the run's info
ex = Experiment("distill", save_git_info=False)
configure_experiment(ex, LAUNCH)


@ex.config
def config():
    seed = 42  # one seed for every rank: data order, masking, student init, dropout
    teacher = "bert-tiny-prepared"  # catalogue name (bert-tiny-prepared, minilm-l6-prepared, bert-tiny, random-tiny),
    # a local directory, or a hub id when online; "*-prepared" teachers are MLM-trained once, then cached
    student = dict(
        architecture="distilbert",  # distilbert (BERT/RoBERTa teachers) | same: the teacher's class, fewer blocks
        n_layers=None,  # null = half the teacher's layers
        layers="alternate",  # alternate | distilbert_release | first | last | uniform | random_init | [i, j, ...]
        fold_token_type_embedding=True,  # add the teacher's token-type-0 row into the position embeddings
        dropout=None,  # null = the teacher's dropout
    )
    T = 2.0  # softmax temperature of the soft-target loss (teacher and student), 1 at inference
    alpha_ce = 5.0  # soft-target KL * T^2
    alpha_mlm = 2.0  # masked-LM cross-entropy (masked-LM teachers)
    alpha_clm = 0.0  # causal-LM (next-token) cross-entropy (causal-LM teachers: GPT-2, Llama, Qwen2)
    alpha_cos = 1.0  # cosine alignment of hidden states (last layer unless loss_options.cos.layers)
    alpha_mse = 0.0  # MSE between logits
    loss_weights = dict(EXTRA_LOSS_WEIGHTS)  # the registry's other terms (0 = off), e.g. loss_weights.hidden_mse=1
    loss_options = dict(LOSS_OPTIONS)  # per-term options, e.g. loss_options.ce.rows=masked, loss_options.cos.layers=[[1,2]]
    masking = dict(
        mlm_probability=0.15, mask_fraction=0.8, random_fraction=0.1, keep_fraction=0.1,
        smoothing=0.7,  # selection weight counts ** -smoothing (0 = uniform)
        count_special_tokens=False,  # True: the original code's count of maskable tokens includes [CLS]/[SEP]
        random_tokens="non_special",  # whole_vocabulary: the original code's random replacements (may be special)
    )
    data = dict(
        corpus="wiki_leads",  # packaged corpus name, local .txt/.jsonl/.parquet path, or hub dataset id
        max_seq_length=128,  # longer documents are split into several sequences, never dropped
        held_out_fraction=0.02,  # documents held out for evaluation, by a hash of their text (seed-independent)
        max_documents=None,  # use only the first N documents (quick runs)
        sample_by="line",  # how local .txt files are cut into documents: line | paragraph
        text_column="text",  # the text field of a local .jsonl/.parquet file or hub dataset
        encoding="utf-8",  # how local .txt/.jsonl/.json files are decoded, e.g. latin-1 (parquet, packaged, hub: utf-8)
        cache_dir=str(CACHE / "datasets"),
        text_checks="refuse",  # a sample the teacher's tokenizer makes garbage of (unknown tokens, tokens per char,
        # [MASK]-style markup, mis-decoded words): refuse | warn | off (kd_plugin/data/text_checks.py)
        pad_token=None,  # null = the tokenizer's own; eos: pad with its end-of-text token (GPT-2, Llama have none)
    )
    batch = dict(
        micro_batch_size=16,  # sequences per rank per forward pass
        gradient_accumulation_steps=None,  # null = 1, or derived from effective_batch_size
        effective_batch_size=None,  # target sequences per optimizer step (the paper: ~4096)
    )
    optim = dict(
        lr=5e-4, betas=[0.9, 0.98], eps=1e-6, weight_decay=0.0, warmup_proportion=0.05, max_grad_norm=5.0,
        no_decay="layer_norms",  # original: only names containing bias / LayerNorm.weight (as distiller.py)
        schedule_extra_step=False,  # True: plan the linear schedule for max_steps + 1 (as distiller.py)
    )
    max_steps = 150  # optimizer steps; or set epochs (and max_steps=None). 150 x 16 sequences: ~5 min on 2 cores
    epochs = None
    deepspeed_config = str(DS_CONFIGS / "zero2.json")
    performance = dict(  # how fast, never what is computed (see README "Speed")
        attn_implementation="auto",  # auto = fused SDPA, eager when a loss term reads attention probabilities
        logit_chunk_rows=1024,  # rows per chunk of the logit losses (bounds fp32 temporaries); null = all at once
        compile=False,  # torch.compile the student's and the teacher's forward
        prefetch_batches=2,  # micro-batches collated and masked ahead by a background thread (0 = in the loop)
        pin_memory="auto",  # pinned host batches for asynchronous copies: auto = on CUDA
        pad_to_multiple_of=None,  # null = 8 on CUDA (tensor-core shapes), 1 on CPU
        profile_phases=False,  # synchronised per-phase timing into the run's info (slower; for profiling)
    )
    log_every = 10  # optimizer steps between logged metric points
    checkpoint_every = 100  # optimizer steps between checkpoints (null = only at the end)
    checkpoint_keep = 2  # keep the newest N checkpoints (older ones are deleted; the final one is always kept)
    monitors = []  # DeepSpeed monitors that also get every logged metric: tensorboard, csv_monitor, wandb
    output_dir = None  # null = outputs/distill/<time>-<config hash>
    resume = None  # a <output_dir>/checkpoints directory to continue from
    stop_at_step = None  # end this run early at this step (schedule still planned for max_steps); resume later
    progress_bar = True  # a tqdm bar; False: one plain log line per log point (for log files)
    eval_max_sequences = 1000  # held-out sequences for the final masked-token accuracy of teacher and student (0 = skip)


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
            check_corpus_source(data.corpus, data.text_column, data.encoding, data.sample_by)
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
                        next((f"{FILE_STORAGE}{o.basedir}" for o in _run.observers if hasattr(o, "basedir")), None))
        _run.info["text_checks"] = dict(TEXT_CHECKS)
        trainer = DistillationTrainer(DistillConfig.from_dict(_config), log_scalar=_run.log_scalar, info=_run.info,
                                      run_id=_run._id, database=database)
        result = trainer.run()
    for path in sorted([*Path(result["student_dir"]).glob("*.json"), Path(result["student_dir"]) / "README.md"]):
        # No '/' in artifact names: Omniboard's per-file download button breaks on them.
        _run.add_artifact(str(path), name=f"student_{path.name}")
    return result


if __name__ == "__main__":
    install_process_handlers()  # SIGTERM / SIGHUP are recorded as INTERRUPTED, like Ctrl-C
    with clean_exit():
        run_main(ex)
