"""Assembly of a distillation run: process group, output folder, models, data stream, engine, checkpointer.

Everything the loop (``trainer``) needs, built in order and recorded in the run's ``info``: which processes
take part (node rank, host), the engine's effective DeepSpeed config and summary, the corpus statistics, the
student's summary and the attention implementation the loss terms required.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kd_plugin.config import BatchPlan, DistillConfig
from kd_plugin.export.checkpoint_state import TOKENIZER_DIR, export_client_state, save_tokenizer
from kd_plugin.export.model_card import StudentCard
from kd_plugin.export.run_card import run_card
from kd_plugin.runtime.checkpoint_format import CHECKPOINTS
from kd_plugin.runtime.launch import LaunchInfo, describe_process
from kd_plugin.runtime.output_lock import hold_output_dir
from kd_plugin.runtime.paths import OUTPUTS
from kd_plugin.training import checkpointing, distributed
from kd_plugin.training.batches import DataPlan, build_data
from kd_plugin.training.disk_space import checkpoint_bytes
from kd_plugin.training.engine import Engine, build_engine, init_distributed
from kd_plugin.training.models import Models, build_models
from kd_plugin.training.phase_timer import PhaseTimer


@dataclass
class Assembly:
    output_dir: Path
    checkpoint_dir: Path
    device: torch.device
    timer: PhaseTimer
    models: Models
    data: DataPlan
    engine: Engine
    card: StudentCard  # the model card's data (completed at export)
    checkpoints: checkpointing.Checkpointer


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def output_dir_of(config: DistillConfig) -> Path:
    """``output_dir`` or a fresh ``outputs/distill/<time>-<config hash>``, chosen on rank 0 for all ranks."""
    if config.run.output_dir is not None:
        return config.run.output_dir
    digest = hashlib.sha256(json.dumps(dict(config.raw), sort_keys=True, default=str).encode()).hexdigest()
    return Path(distributed.from_rank_0(str(OUTPUTS / "distill" / f"{time.strftime('%Y%m%d-%H%M%S')}-{digest[:8]}")))


def resume_plan(config: DistillConfig, plan: BatchPlan, data: DataPlan) -> dict[str, Any]:
    """What must not change between a run and its resumption."""
    return {"world_size": plan.world_size, "micro_batch_size": plan.micro_batch_size,
            "gradient_accumulation_steps": plan.gradient_accumulation_steps, "seed": config.seed,
            "total_steps": data.total_steps, "corpus_cache": data.corpus.cache_path.name,
            # the restored LambdaLR keeps the checkpoint's base lr and takes this run's lambda: both must match
            "schedule_length": config.optim.schedule_length(data.total_steps), "lr": config.optim.lr,
            "warmup_proportion": config.optim.warmup_proportion}


def assemble(config: DistillConfig, launch: LaunchInfo, plan: BatchPlan, info: dict[str, Any], run_id: Any = None,
             database: str | None = None) -> Assembly:
    import datasets

    if launch.is_main and config.run.progress_bar:  # cleaning and tokenizing an uncached corpus can take minutes
        datasets.enable_progress_bars()
    else:  # other ranks, and log files: a start line and the statistics at the end (kd_plugin.data.tokenized)
        datasets.disable_progress_bars()
    seed_everything(config.seed)
    init_distributed(launch.world_size, launch.launched)
    info["ranks"] = distributed.gather(describe_process(launch))  # every process: node rank, host
    output_dir = output_dir_of(config)
    if launch.is_main:
        # one run per folder (none over an earlier run's results unless resuming it); also proves it is writable
        hold_output_dir(output_dir, resume=config.run.resume).record(run_id=run_id)
    checkpoint_dir = output_dir / CHECKPOINTS
    device = torch.device("cuda", launch.local_rank) if torch.cuda.is_available() else torch.device("cpu")
    timer = PhaseTimer(config.performance.profile_phases, device)
    models = build_models(config, timer)
    data = build_data(config, models.tokenizer, models.objective, plan, launch.rank, device)
    engine = build_engine(models.module, config, plan, data.total_steps, output_dir)
    device = timer.device = engine.device
    corpus = data.corpus
    info.update(
        output_dir=str(output_dir.resolve()), deepspeed_config=engine.ds_config,
        engine=engine.summary(config.deepspeed.precision, launch.world_size, data.total_steps),
        data=dict(corpus.stats, cache=str(corpus.cache_path), from_cache=corpus.from_cache),
        student_summary=models.student_summary.to_dict(),
        attn_implementation=models.requirements.attn_implementation)
    card = run_card(config, info["engine"], info["student_summary"],
                    teacher_n_layers=models.teacher.config.num_hidden_layers, run_id=run_id, database=database)
    tokenizer_ref = save_tokenizer(models.tokenizer, checkpoint_dir) if launch.is_main else TOKENIZER_DIR
    checkpoints = checkpointing.Checkpointer(
        engine.engine, checkpoint_dir, resume_plan(config, plan, data), config.run.checkpoint_keep, launch.is_main,
        run_id, export_client_state(models.module.student.config, tokenizer_ref, card),
        needed_bytes=checkpoint_bytes(models.module, config.deepspeed.precision != "fp32" and not config.deepspeed.autocast))
    return Assembly(output_dir, checkpoint_dir, device, timer, models, data, engine, card, checkpoints)
