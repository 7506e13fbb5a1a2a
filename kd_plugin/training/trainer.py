"""The distillation loop: micro-batches -> engine forward/backward/step -> step callbacks -> checkpoints.

Everything else lives beside it: models (``models``), the data stream (``batches``), the engine
(``engine``), what happens after a step (``callbacks``), export (``kd_plugin.export``) and the final held-out
measurement (``kd_plugin.evaluation``). The loop never names a loss term: the mixture returns
``{"loss_<term>": ..., "loss": total}`` and every entry is logged. Its own code never waits for the device
between log points: loss terms are summed on the device, token counts and padding come from the host-side
batches, lr is the scheduler's host float, the grad norm is read only when logged. What the libraries still read
per optimizer step is counted by ``tests/test_training_host_syncs.py``: transformers' SDPA mask check, once per
model forward of a micro-batch with padding (unpadded ones get no mask), and DeepSpeed ZeRO-1/2's checks of the
gradient norm, 1 overflow check (fp32, fp16) + 1 per parameter group when clipping (``docs/architecture.md``).

    trainer = DistillationTrainer(DistillConfig.from_dict(cfg), log_scalar=run.log_scalar, info=run.info)
    result = trainer.run()            # or trainer.setup(); for report in trainer.steps(): ...
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kd_plugin.config import DistillConfig
from kd_plugin.evaluation.held_out import RESULT_KEYS
from kd_plugin.runtime import ensure_launch_env
from kd_plugin.runtime.checkpoint_format import RUN_ID_KEY, SAMPLER_KEY, STEP_KEY, STEP_TAG, TOKENS_SEEN_KEY
from kd_plugin.training import distributed, monitor
from kd_plugin.training.assembly import assemble
from kd_plugin.training.batches import BatchPosition, BatchStream
from kd_plugin.training.callbacks import (
    LogScalar,
    StepCallback,
    StepReport,
    default_callbacks,
    truncate_metrics,
)
from kd_plugin.training.divergence import DivergenceWatch
from kd_plugin.training.finish import export_and_evaluate
from kd_plugin.training.interruption import StopRequest, TrainingInterrupted
from kd_plugin.training.step_metrics import AccumulationWindow, Throughput

logger = logging.getLogger(__name__)


@dataclass
class TrainingState:
    step: int = 0
    tokens_seen: int = 0  # over all ranks, up to the last reduction
    pending_tokens: int = 0  # this rank's tokens since the last reduction
    position: BatchPosition | None = None  # the last micro-batch the loop consumed
    last_loss: float | None = None
    saved_step: int | None = None  # the step of the last checkpoint written or loaded


class DistillationTrainer:
    def __init__(self, config: DistillConfig, log_scalar: LogScalar | None = None,
                 info: dict[str, Any] | None = None, callbacks: list[StepCallback] | None = None,
                 run_id: Any = None, database: str | None = None):
        self.config = config
        self.run_id = run_id  # the tracker's id of this run: stored in checkpoints, so a resumption links back
        self.database = database  # where the run is saved (for the model card; a password is masked there)
        self.launch = ensure_launch_env()
        self.plan = config.batch.plan(self.launch.world_size)
        self.log_scalar = log_scalar if self.launch.is_main else None
        self.info = info if info is not None else {}
        self.extra_callbacks = callbacks or []
        self.state = TrainingState()

    # ------------------------------------------------------------------ set-up
    def setup(self) -> None:
        """Assemble models, data stream, engine and checkpointer (see ``assembly``); resume if asked."""
        parts = assemble(self.config, self.launch, self.plan, self.info, self.run_id, self.database)
        self.output_dir, self.checkpoint_dir, self.timer = parts.output_dir, parts.checkpoint_dir, parts.timer
        self.models, self.data, self.engine, self.device = parts.models, parts.data, parts.engine, parts.device
        self.card, self.checkpoints, self.total_steps = parts.card, parts.checkpoints, parts.data.total_steps
        if self.config.run.resume is not None:
            self._resume(self.config.run.resume)
        # non-finite losses, skipped steps or weights stop the run (after a resume: the restored skip count)
        self.watch = DivergenceWatch(self.total_steps, self.checkpoint_dir, self.state.step,
                                     self.engine.engine.skipped_steps)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> None:
        """Checkpoint the current step, once: a step already saved (a periodic checkpoint and a signal on the
        same step, a resumed run already at its end) is not written again over the tag ``latest`` names."""
        state = self.state
        if state.saved_step == state.step:
            return
        # the tokens since the last log point count in the checkpoint; the log's own window is left as it is
        pending = int(distributed.all_ranks_sum(torch.tensor([float(state.pending_tokens)])).item())
        sampler_state = state.position.sampler_state() if state.position else self.data.sampler.state_dict()
        self.checkpoints.save(state.step, sampler_state, state.tokens_seen + pending)
        state.saved_step = state.step

    def _resume(self, checkpoint_dir: Path) -> None:
        path, client = self.checkpoints.load(checkpoint_dir, self.launch.rank)
        self.state.step, self.state.tokens_seen = client[STEP_KEY], client[TOKENS_SEEN_KEY]
        self.state.saved_step = self.state.step
        self.data.sampler.load_state_dict(client[SAMPLER_KEY])
        if self.launch.is_main:
            truncate_metrics(self.output_dir, self.state.step)  # the steps after the checkpoint run again
        self.info["resumed_from"] = {"path": str(path), "step": self.state.step, "run_id": client.get(RUN_ID_KEY)}
        self.info["resumed_from_run"] = client.get(RUN_ID_KEY)
        logger.info("resumed from %s at step %d", path, self.state.step)

    # ------------------------------------------------------------------ the loop
    def stop_step(self) -> int:
        return min(self.config.run.stop_at_step or self.total_steps, self.total_steps)

    def steps(self) -> Iterator[StepReport]:
        """Run optimizer steps until ``stop_at_step`` (or the schedule's end), yielding after each one."""
        engine, state, timer = self.engine.engine, self.state, self.timer
        stream = BatchStream(self.data.sampler, self.data.maker, self.launch.rank, self.launch.world_size,
                             self.config.performance.prefetch_batches)
        window, throughput, stop_at = AccumulationWindow(), Throughput(), self.stop_step()
        non_blocking = self.data.maker.pin_memory
        try:
            while state.step < stop_at:
                lr = engine.get_lr()[0]  # the rate this optimizer step uses (a host float)
                for _ in range(self.plan.gradient_accumulation_steps):
                    with timer.phase("data"):
                        batch = next(stream).to(self.device, non_blocking=non_blocking)
                    losses = engine(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                    labels=batch.labels, token_rows=batch.token_rows, target_rows=batch.target_rows,
                                    padded=batch.padded)
                    with timer.phase("backward"):
                        engine.backward(losses["loss"])
                    window.add(losses)
                    with timer.phase("optimizer_step"):
                        engine.step()
                    state.pending_tokens += batch.n_tokens
                    state.position = batch.position
                state.step += 1
                timer.step_done()
                yield StepReport(state.step, self.total_steps, self._metrics_if_logged(window, throughput, lr))
        except Exception as err:  # DeepSpeed's fp16 scaler gives up at its minimum scale: that is divergence too
            diverged = self.watch.from_engine_error(err, state.step + 1)
            if diverged is None:
                raise
            raise diverged from err
        finally:
            stream.close()  # the thread ran ahead: continue from the last batch the loop consumed
            if state.position is not None:
                self.data.sampler.load_state_dict(state.position.sampler_state())

    def _metrics_if_logged(self, window: AccumulationWindow, throughput: Throughput, lr: float
                           ) -> dict[str, float] | None:
        state = self.state
        if state.step % self.config.run.log_every and state.step != self.stop_step():
            window.reset()
            return None
        means, tokens = window.reduce(state.pending_tokens)  # the one host synchronisation of the interval
        state.tokens_seen += tokens
        state.pending_tokens = 0
        state.last_loss = means["loss"]
        engine = self.engine.engine
        self.watch.check(state.step, means, engine.skipped_steps, engine.optimizer,
                         final=state.step == self.stop_step(), log_every=self.config.run.log_every)
        grad_norm = engine.get_global_grad_norm()
        return dict(means, lr=float(lr), grad_norm=float(grad_norm) if grad_norm is not None else float("nan"),
                    tokens_per_second=throughput.rate(tokens))

    def train(self) -> None:
        callbacks = self.extra_callbacks + default_callbacks(
            self.output_dir, self.launch.is_main, self.log_scalar, self.config.run.progress_bar,
            self.total_steps, self.state.step)
        if self.launch.is_main and monitor.enabled(self.engine.ds_config):
            callbacks.append(monitor.DeepSpeedMonitor(self.engine.engine.monitor))
        every, stop_at = self.config.run.checkpoint_every, self.stop_step()
        try:
            with StopRequest() as stop:
                for report in self.steps():
                    with self.timer.phase("callbacks"):
                        for callback in callbacks:
                            callback.on_step(report)
                    if every and report.step % every == 0 and report.step < stop_at:
                        self.save_checkpoint()
                    signum = stop.agreed()
                    if signum is not None and report.step < stop_at:
                        self.save_checkpoint()
                        raise TrainingInterrupted(signum, report.step, self.total_steps, str(self.checkpoint_dir),
                                                  str(self.output_dir))
        finally:
            for callback in callbacks:
                callback.close()
        self.watch.check_weights(self.state.step, self.models.module.student)  # no NaN checkpoint, no NaN export
        self.save_checkpoint()

    # ------------------------------------------------------------------ the whole run
    def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        self.setup()
        self.train()
        student_dir = self.output_dir / "student"
        distributed.barrier()
        held_out = {}
        if self.launch.is_main:
            held_out = export_and_evaluate(
                self.checkpoint_dir, STEP_TAG.format(self.state.step), self.models,
                self.data.corpus.held_out, self.card, student_dir, self.config.run.eval_max_sequences,
                self.config.seed, self.state.step, self.state.tokens_seen, self.log_scalar,
                progress=self.config.run.progress_bar)
        distributed.barrier()
        if self.config.performance.profile_phases:
            self.info["phase_breakdown"] = self.timer.breakdown()
        self.info["student_dir"] = str(student_dir.resolve())
        return {
            "steps": self.state.step, "tokens_seen": self.state.tokens_seen, "final_loss": self.state.last_loss,
            "finished": self.state.step >= self.total_steps, "student_dir": self.info["student_dir"],
            "student": self.models.student_summary.to_dict(),
            RESULT_KEYS[self.models.objective.name]: held_out,
            "teacher": self.models.teacher_source.name, "wall_seconds": time.perf_counter() - started,
        }
