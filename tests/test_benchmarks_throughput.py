"""The throughput benchmark's failure paths, on CPU, so that a GPU run always leaves numbers: the results file is
written after each precision (a later crash keeps them), the memory probe stops at an out-of-memory error within
an 80 GB cap and records any other error, and `--no-trainer --memory-probe` (gpu_check.sh's fallback) runs."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import distill_throughput
from benchmarks.distill_throughput import PROBE_CAP_BYTES, probe_micro_batches

TINY = ["--windows", "1", "--steps-per-window", "1", "--warmup", "0", "--micro-batch", "2"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> list[str]:
    """One tokenized corpus for this file's benchmark runs, outside the project's own cache."""
    return ["--cache-dir", str(tmp_path_factory.mktemp("bench-cache"))]


class FakeTrainer:
    """probe_memory as the trainer side's: (allocated, reserved) bytes, or the error injected at a size."""

    device = torch.device("cpu")

    def __init__(self, fails_at: int, error: BaseException):
        self.fails_at, self.error, self.sizes = fails_at, error, []

    def probe_memory(self, micro_batch: int, seq_len: int) -> tuple[int, int]:
        self.sizes.append(micro_batch)
        if micro_batch >= self.fails_at:
            raise self.error
        return micro_batch * 10**9, micro_batch * 12 * 10**8


def test_the_probe_stops_at_an_injected_out_of_memory_with_what_fitted():
    trainer = FakeTrainer(64, torch.cuda.OutOfMemoryError("CUDA out of memory"))
    probe = probe_micro_batches(trainer, 512, device_memory=141 * 10**9)
    assert trainer.sizes == [8, 16, 32, 64]  # nothing tried after the first out-of-memory
    assert [f["micro_batch"] for f in probe["fits"]] == [8, 16, 32]
    assert probe["fits"][-1] == {"micro_batch": 32, "peak_allocated_bytes": 32 * 10**9,
                                 "peak_reserved_bytes": 32 * 12 * 10**8}
    assert probe["largest_micro_batch"] == 32 and probe["accumulation_for_4096"] == 128
    assert probe["cap_bytes"] == PROBE_CAP_BYTES == 80 * 10**9 and probe["stopped_by"].startswith("out of memory")


def test_any_other_probe_error_is_recorded_not_raised():
    probe = probe_micro_batches(FakeTrainer(16, RuntimeError("NCCL hung")), 512, device_memory=40 * 10**9)
    assert [f["micro_batch"] for f in probe["fits"]] == [8] and probe["cap_bytes"] == 40 * 10**9
    assert probe["stopped_by"] == "RuntimeError at micro-batch 16: NCCL hung"


def test_no_trainer_with_memory_probe_writes_its_results(tmp_path, cache):
    """gpu_check.sh's fallback (KD_GPU_CHECK_NO_TRAINER=1 keeps --memory-probe): no StopIteration, a file."""
    results = distill_throughput.main(["--no-trainer", "--memory-probe", "--precision", "both", *TINY, *cache,
                                       "--out", str(tmp_path)])
    (written,) = tmp_path.glob("*.json")
    stored = json.loads(written.read_text())
    assert stored["complete"] is True and [c["precision"] for c in stored["comparisons"]] == ["fp32", "bf16"]
    assert any("memory probe skipped" in note for note in stored["notes"])
    assert results["comparisons"][0]["sides"][0]["median_tokens_per_s"] > 0


def test_a_crash_in_a_later_precision_keeps_the_earlier_numbers(tmp_path, monkeypatch, cache):
    real = distill_throughput.make_sides

    def crashing(args, workload, precision):
        if precision == "bf16":
            raise RuntimeError("injected: the bf16 pass died")
        return real(args, workload, precision)

    monkeypatch.setattr(distill_throughput, "make_sides", crashing)
    with pytest.raises(RuntimeError, match="injected"):
        distill_throughput.main(["--no-trainer", "--precision", "both", *TINY, *cache, "--out", str(tmp_path)])
    (written,) = tmp_path.glob("*.json")
    stored = json.loads(written.read_text())
    assert stored["complete"] is False and [c["precision"] for c in stored["comparisons"]] == ["fp32"]
    assert stored["comparisons"][0]["sides"][0]["median_tokens_per_s"] > 0


@pytest.mark.parametrize("torch_adam, optimizer", [(False, "FusedAdam"), (True, "AdamW")])
def test_the_trainer_side_says_which_optimizer_ran(tmp_path, cache, torch_adam, optimizer):
    """gpu_check.sh passes --torch-adam when DeepSpeed's FusedAdam cannot be built on the image."""
    results = distill_throughput.main(["--precision", "fp32", *TINY, *cache, "--out", str(tmp_path),
                                       *(["--torch-adam"] if torch_adam else [])])
    trainer = next(side for side in results["comparisons"][0]["sides"] if side["side"] == "kd_plugin trainer")
    engine_note = next(note for note in trainer["notes"] if note.startswith("DeepSpeed engine"))
    assert f", {optimizer}, " in engine_note, engine_note


def test_a_trainer_variant_is_timed_beside_the_trainer_with_its_setting_applied(tmp_path, cache):
    results = distill_throughput.main(["--precision", "fp32", *TINY, *cache, "--out", str(tmp_path),
                                       "--trainer-variant", "performance.fuse_lm_head=false"])
    sides = {side["side"]: side for side in results["comparisons"][0]["sides"]}
    assert list(sides) == ["kd_plugin trainer", "kd_plugin trainer (fuse_lm_head=false)", "original-style loop"]
    heads = {name: next(note for note in side["notes"] if "LM heads" in note) for name, side in sides.items()
             if side["notes"]}
    assert "LM heads inside the losses" in heads["kd_plugin trainer"]
    assert "LM heads in the models" in heads["kd_plugin trainer (fuse_lm_head=false)"]
    assert all(side["median_tokens_per_s"] > 0 for side in sides.values())
    ratio = results["cross_precision"]["kd_plugin trainer (fuse_lm_head=false) / kd_plugin trainer [fp32]"]
    assert ratio == pytest.approx(sides["kd_plugin trainer (fuse_lm_head=false)"]["median_tokens_per_s"]
                                  / sides["kd_plugin trainer"]["median_tokens_per_s"])


@pytest.mark.parametrize("variant", ["fuse_lm_head=false", "performance.no_such=1", "performance.compile",
                                     "fp16:performance.compile=true"])
def test_a_variant_must_name_a_declared_performance_setting_and_a_precision(variant, capsys):
    with pytest.raises(SystemExit):
        distill_throughput.parse_args(["--trainer-variant", variant])
    assert "expected [fp32:|bf16:]performance.KEY=VALUE with KEY one of" in capsys.readouterr().err


def test_a_variant_may_be_limited_to_one_precision():
    args = distill_throughput.parse_args(["--trainer-variant", "bf16:performance.compile=true",
                                          "--trainer-variant", "performance.logit_chunk_rows=64"])
    assert args.trainer_variant == [("bf16", "compile", True), (None, "logit_chunk_rows", 64)]


def test_an_injected_late_crash_leaves_the_first_precisions_results_and_table(tmp_path, cache, monkeypatch, capsys):
    """gpu_check.sh's KD_GPU_CHECK_INJECT=late_crash: the file and the log keep the numbers measured so far."""
    monkeypatch.setenv("KD_BENCH_INJECT", "late_crash")
    with pytest.raises(RuntimeError, match="injected"):
        distill_throughput.main(["--no-trainer", "--precision", "both", *TINY, *cache, "--out", str(tmp_path)])
    (written,) = tmp_path.glob("*.json")
    stored = json.loads(written.read_text())
    assert stored["complete"] is False and [c["precision"] for c in stored["comparisons"]] == ["fp32"]
    assert "| original-style loop | fp32 |" in capsys.readouterr().out  # the table reaches the summary's log


def test_an_injected_out_of_memory_ends_the_probe_and_is_recorded(tmp_path, cache, monkeypatch):
    """KD_GPU_CHECK_INJECT=probe_oom on CPU: the probe runs (it is skipped on CPU otherwise) and stops at the
    injected out-of-memory error of its first size; the run completes with that in its results file."""
    monkeypatch.setenv("KD_BENCH_INJECT", "probe_oom")
    results = distill_throughput.main(["--precision", "fp32", "--memory-probe", *TINY, *cache, "--out", str(tmp_path)])
    probe = results["comparisons"][0]["memory_probe"]
    assert probe["stopped_by"] == "out of memory at micro-batch 8" and probe["fits"] == []
    assert probe["largest_micro_batch"] is None and probe["cap_bytes"] == PROBE_CAP_BYTES
    (written,) = tmp_path.glob("*.json")
    assert json.loads(written.read_text())["comparisons"][0]["memory_probe"] == probe
