"""The trainer's pieces that need no engine: frozen teacher, DeepSpeed config checks, batch plan, LR schedule."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from kd_plugin.config import BatchSettings, DeepSpeedSettings, OptimSettings
from kd_plugin.config.deepspeed import check_ds_json
from kd_plugin.errors import ConfigError
from kd_plugin.losses import LossMixture, MixtureDeclaration, ModelDims
from kd_plugin.optimization import linear_warmup_decay, parameter_groups
from kd_plugin.student import build_student
from kd_plugin.training.distillation_module import DistillationModule, freeze_teacher
from kd_plugin.training.ds_config import build_ds_config


def tiny_pair():
    torch.manual_seed(0)
    teacher = BertForMaskedLM(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                                         intermediate_size=32, max_position_embeddings=32))
    student, _ = build_student(teacher, "alternate")
    dims = ModelDims(16, 16, 2, 4, 2, 2)
    mixture = LossMixture(MixtureDeclaration({"ce": 5.0, "mlm": 2.0, "cos": 1.0}, temperature=2.0), dims)
    return freeze_teacher(teacher, torch.float32), student.train(), mixture


def test_teacher_is_outside_the_trained_module_and_gets_no_gradient():
    teacher, student, mixture = tiny_pair()
    module = DistillationModule(student, mixture, teacher)
    teacher_ids = {id(p) for p in teacher.parameters()}
    assert not teacher_ids & {id(p) for p in module.parameters()}
    assert not any(k.startswith("teacher") for k in module.state_dict())
    ids = torch.randint(5, 50, (2, 8))
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    losses = module(ids, torch.ones_like(ids), labels)
    losses["loss"].backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert not teacher.training
    assert sum(float(p.grad.abs().sum()) for p in student.parameters() if p.grad is not None) > 0
    assert set(losses) == {"loss", "loss_ce", "loss_mlm", "loss_cos"}


def test_weight_decay_spares_biases_and_layer_norms():
    _, student, _ = tiny_pair()
    decay, no_decay = parameter_groups(student, 0.01)
    names = {id(p): n for n, p in student.named_parameters()}
    assert all("bias" in names[id(p)] or "norm" in names[id(p)].lower() for p in no_decay["params"])
    assert not any("norm" in names[id(p)].lower() for p in decay["params"])
    assert all(p.dim() == 2 for p in decay["params"]) and no_decay["weight_decay"] == 0.0


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_weight_decay_spares_the_norm_gains_of_every_family(family):
    """Judged by module type (independent of the shape rule): the weights of normalisation modules and every
    bias are spared, every other parameter decays; distiller.py's name list would decay GPT-2's ln_1/ln_f."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    model = (GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=50)) if family == "gpt2" else
             LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, hidden_size=16, intermediate_size=32,
                                          num_attention_heads=2, num_key_value_heads=1, vocab_size=50)))
    spared = {id(p) for m in model.modules() if isinstance(m, torch.nn.LayerNorm) or type(m).__name__.endswith("RMSNorm")
              for p in m.parameters(recurse=False)}
    spared |= {id(p) for n, p in model.named_parameters() if n.endswith(".bias")}
    decay, no_decay = parameter_groups(model, 0.01)
    assert spared and {id(p) for p in no_decay["params"]} == spared
    assert {id(p) for p in decay["params"]} == {id(p) for p in model.parameters()} - spared
    if family == "gpt2":
        original_decay, _ = parameter_groups(model, 0.01, "original")
        assert any(id(p) in spared for p in original_decay["params"])  # the original rule decays ln_1.weight


def test_schedule_is_linear_warmup_then_linear_decay_to_zero():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = linear_warmup_decay(total_steps=20, warmup_proportion=0.1)(optimizer)
    lrs = []
    for _ in range(20):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [s / 2 if s < 2 else (20 - s) / 18 for s in range(20)]  # ceil(0.1 * 20) = 2 warm-up steps
    assert lrs == pytest.approx(expected)


@pytest.mark.parametrize(
    "ds, key",
    [
        ({"zero_optimization": {"stage": 2}, "compression_training": {}}, "deepspeed_config.compression_training"),
        ({"zero_optimization": {"stage": 2}, "amp": {"enabled": True}}, "deepspeed_config.amp"),
        ({"zero_optimization": {"stage": 2}, "train_batch_size": 64}, "deepspeed_config.train_batch_size"),
        ({"zero_optimization": {"stage": 2}, "optimizer": {"type": "OneBitAdam"}}, "deepspeed_config.optimizer.type"),
        ({"zero_optimization": {"stage": 2}, "optimizer": {"type": "AdamW", "params": {"lr": 1}}},
         "deepspeed_config.optimizer.params.lr"),
        ({"zero_optimization": {"stage": 0}}, "deepspeed_config.zero_optimization.stage"),
    ],
)
def test_deepspeed_json_rejections_name_the_key(ds, key):
    with pytest.raises(ConfigError) as err:
        check_ds_json(ds)
    assert err.value.key == key and "allowed" in str(err.value)


def test_batch_plan_and_written_config_agree(tmp_path):
    plan = BatchSettings(16, None, 4096).plan(world_size=2)
    assert plan.gradient_accumulation_steps == 128 and plan.train_batch_size == 4096
    path = tmp_path / "ds.json"
    path.write_text('{"optimizer": {"type": "AdamW"}, "zero_optimization": {"stage": 2}}')
    optim = OptimSettings(lr=5e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.0, warmup_proportion=0.05,
                          max_grad_norm=5.0)
    ds = build_ds_config(DeepSpeedSettings.from_path(path), plan, optim)
    assert ds["train_batch_size"] == ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"] * 2
    assert ds["optimizer"]["params"] == {"lr": 5e-4, "betas": [0.9, 0.98], "eps": 1e-6, "weight_decay": 0.0}
    assert ds["gradient_clipping"] == 5.0 and "scheduler" not in ds
    with pytest.raises(ConfigError, match="batch.gradient_accumulation_steps"):
        BatchSettings(16, 3, 4096).plan(2)


def test_deepspeeds_throughput_timer_is_off_unless_the_json_asks_for_it(tmp_path):
    """It synchronises the device twice per micro-batch; DeepSpeed's own config reads the generated block."""
    from deepspeed.runtime.config import DeepSpeedConfig

    optim = OptimSettings(lr=5e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.0, warmup_proportion=0.05,
                          max_grad_norm=5.0)
    plan = BatchSettings(4, 1, None).plan(world_size=1)
    for json_text, enabled in (('{"zero_optimization": {"stage": 2}}', False),
                               ('{"zero_optimization": {"stage": 2}, "timers": {"throughput": {"enabled": true}}}',
                                True)):
        path = tmp_path / "ds.json"
        path.write_text(json_text)
        ds = build_ds_config(DeepSpeedSettings.from_path(path), plan, optim)
        assert DeepSpeedConfig(ds).timers_config.enabled is enabled


@pytest.mark.parametrize("effective, world, nearest", [(20, 1, "nearest 16 or 24"), (100, 2, "nearest 96 or 128"), (8, 1, "nearest 16 (")])
def test_an_unreachable_effective_batch_is_refused_naming_the_nearest_valid_values(effective, world, nearest):
    with pytest.raises(ConfigError) as err:
        BatchSettings(8 if effective == 20 else 16, None, effective).plan(world)
    assert err.value.key == "batch.effective_batch_size" and nearest in str(err.value)


class _RecordingCheckpoints:
    def __init__(self):
        self.saved = []

    def save(self, step, sampler_state, tokens_seen):
        self.saved.append((step, tokens_seen))


def _trainer_at(step: int, tokens_seen: int, pending: int):
    """A trainer's checkpointing state without models or engine (save_checkpoint needs only these)."""
    from types import SimpleNamespace

    from kd_plugin.training.trainer import DistillationTrainer, TrainingState

    trainer = object.__new__(DistillationTrainer)
    trainer.state = TrainingState(step=step, tokens_seen=tokens_seen, pending_tokens=pending)
    trainer.checkpoints = _RecordingCheckpoints()
    trainer.data = SimpleNamespace(sampler=SimpleNamespace(state_dict=lambda: {"epoch": 0, "batches_consumed": 0}))
    return trainer


def test_a_step_is_checkpointed_once_with_the_tokens_since_the_last_log_point():
    trainer = _trainer_at(step=20, tokens_seen=1000, pending=37)
    trainer.save_checkpoint()  # periodic checkpoint
    trainer.save_checkpoint()  # a signal on the same step: the tag `latest` names is not written again
    assert trainer.checkpoints.saved == [(20, 1037)]
    assert (trainer.state.tokens_seen, trainer.state.pending_tokens) == (1000, 37)  # the log's window is intact
    trainer.state.step += 1
    trainer.save_checkpoint()
    assert trainer.checkpoints.saved[-1] == (21, 1037)


def test_resuming_with_another_learning_rate_or_schedule_is_refused():
    from types import SimpleNamespace

    from kd_plugin.config import BatchPlan
    from kd_plugin.runtime.checkpoint_format import check_compatible
    from kd_plugin.training.assembly import resume_plan

    def plan(**optim):
        settings = dict(lr=5e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.0, warmup_proportion=0.05,
                        max_grad_norm=5.0)
        config = SimpleNamespace(seed=1, optim=OptimSettings(**{**settings, **optim}))
        data = SimpleNamespace(total_steps=100, corpus=SimpleNamespace(cache_path=SimpleNamespace(name="c")))
        return resume_plan(config, BatchPlan(micro_batch_size=4, gradient_accumulation_steps=2, world_size=1), data)

    check_compatible(plan(), plan())
    for change, key in ((dict(lr=1e-4), "lr"), (dict(schedule_extra_step=True), "schedule_length"),
                        (dict(warmup_proportion=0.1), "warmup_proportion")):
        with pytest.raises(ConfigError, match=f"written with {key}=") as err:
            check_compatible(plan(), plan(**change))
        assert err.value.key == "resume"


@pytest.mark.parametrize("sig, raised", [("SIGTERM", "Terminated"), ("SIGINT", "KeyboardInterrupt")])
def test_the_first_signal_is_a_request_and_the_second_stops_at_once_with_its_own_status(sig, raised):
    import os
    import signal

    from kd_plugin.training.interruption import StopRequest, Terminated

    signum = getattr(signal, sig)
    before = signal.getsignal(signum)
    with StopRequest() as stop:
        os.kill(os.getpid(), signum)  # a real signal to this process: the handler only records it
        assert stop.agreed() == signum
        with pytest.raises(KeyboardInterrupt) as err:
            os.kill(os.getpid(), signum)
        assert type(err.value).__name__ == raised
        assert isinstance(err.value, Terminated) == (sig == "SIGTERM")  # clean_exit: exit status 143 vs 130
    assert signal.getsignal(signum) == before  # the previous handler is back
