"""A census of the host synchronisations inside ``DistillationTrainer.steps()`` between two log points.

Every read of a device value on the host (``.item()``, ``bool()``, ``float()``: ``_local_scalar_dense``;
``nonzero``, ``masked_select``, boolean-mask indexing) and every ``accelerator.synchronize()`` is counted by
where it comes from, over optimizer steps of a real trainer (CPU, ZeRO-2 fp32, gradient clipping on, two
micro-batches per step). On CUDA each one stalls the host until the device catches up. The documented residue
(the trainer's docstring, docs/architecture.md):

* kd_plugin's own code: none;
* transformers' SDPA mask check (``padding_mask.all()``): one per model forward of a micro-batch with padding,
  so 2 (teacher and student) per padded micro-batch, none for unpadded ones (they get no mask);
* DeepSpeed ZeRO-1/2's gradient-norm checks: 1 overflow check (fp32) + 1 per optimizer parameter group while
  clipping (2 groups: with and without weight decay): 3 per optimizer step;
* ``accelerator.synchronize()``: none (DeepSpeed's throughput timer is off).
"""

from __future__ import annotations

import collections
import traceback

import pytest
import torch
from deepspeed.accelerator import get_accelerator
from torch.utils._python_dispatch import TorchDispatchMode

from kd_plugin.config import DistillConfig, distill_defaults
from kd_plugin.training.distillation_module import DistillationModule
from kd_plugin.training.trainer import DistillationTrainer

READS = {"_local_scalar_dense", "nonzero", "masked_select", "is_nonzero"}
ORIGINS = (("transformers/masking_utils", "sdpa mask"), ("deepspeed/runtime", "deepspeed"),
           ("transformers/", "transformers other"), ("kd_plugin/", "kd_plugin"))


def origin(stack: list[traceback.FrameSummary]) -> str:
    files = [frame.filename.replace("\\", "/") for frame in stack]
    for marker, name in ORIGINS:
        if any(marker in f for f in files):
            return name
    return "elsewhere"


class Census(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        boolean_index = name.startswith("index") and len(args) > 1 and isinstance(args[1], (list, tuple)) and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1])
        if name in READS or boolean_index:
            self.counts[origin(traceback.extract_stack()[:-1])] += 1
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    cfg = distill_defaults()
    cfg.update(teacher="random-tiny", max_steps=100, log_every=10**6, checkpoint_every=None, progress_bar=False,
               eval_max_sequences=0, output_dir=str(tmp_path_factory.mktemp("census") / "run"))
    cfg["data"] = dict(cfg["data"], max_documents=300, max_seq_length=64)
    cfg["batch"] = dict(cfg["batch"], micro_batch_size=8, gradient_accumulation_steps=2)
    config = DistillConfig.from_dict(cfg)
    assert config.optim.max_grad_norm > 0 and config.deepspeed.zero_stage == 2
    built = DistillationTrainer(config)
    built.setup()
    return built


def test_the_step_reads_nothing_on_the_host_but_the_documented_residue(trainer, monkeypatch):
    accelerator = get_accelerator()
    synchronize = accelerator.synchronize
    forwards = []  # the `padded` flag of every micro-batch the module runs
    original_forward = DistillationModule.forward

    def counted_forward(self, *args, **kwargs):
        forwards.append(kwargs.get("padded", True))
        return original_forward(self, *args, **kwargs)

    census, synchronised = Census(), []
    monkeypatch.setattr(accelerator, "synchronize", lambda *a, **k: (synchronised.append(1), synchronize(*a, **k))[1])
    monkeypatch.setattr(DistillationModule, "forward", counted_forward)
    steps = trainer.steps()
    try:
        for _ in range(2):  # warm-up: the first steps build kernels and optimizer state
            next(steps)
        forwards.clear()
        n_steps = 6
        with census:
            for _ in range(n_steps):
                next(steps)
    finally:
        steps.close()
    padded = sum(forwards)
    assert len(forwards) == 2 * n_steps and 0 < padded < len(forwards)  # both kinds of micro-batch were seen
    assert dict(census.counts) == {"sdpa mask": 2 * padded, "deepspeed": 3 * n_steps}
    assert synchronised == []
