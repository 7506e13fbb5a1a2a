"""Ranks other than 0 wait for the tokenized corpus without a collective timeout: two real processes in a gloo
process group whose collective timeout is 2 s, rank 0 "tokenizing" for 6 s. A barrier would fail there (shown
first); the store announcement waits it out, and rank 0's failure reaches rank 1 as one error."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from kd_plugin.runtime.ports import free_port

WORKER = textwrap.dedent("""
    import datetime, sys, time
    import torch.distributed as dist
    from kd_plugin.training.batches import CORPUS_READY, FAILED
    from kd_plugin.training.distributed import announce, await_announcement
    rank, port, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=2))
    if rank == 0:
        time.sleep(6)  # tokenizing: longer than the collective timeout
        if mode == "barrier":
            dist.barrier()
        else:
            announce(CORPUS_READY, f"{FAILED}OSError: disk full" if mode == "fail" else "ok")
        time.sleep(1)
    else:
        try:
            outcome = dist.barrier() if mode == "barrier" else await_announcement(CORPUS_READY, poll_seconds=0.2)
        except Exception as err:
            print("ERROR", type(err).__name__)
            sys.exit(3)
        print("OUTCOME", outcome)
""")


def _pair(mode: str) -> subprocess.CompletedProcess:
    port = str(free_port())
    ranks = [subprocess.Popen([sys.executable, "-c", WORKER, str(r), port, mode], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    for proc in ranks:
        proc.wait(timeout=120)
    out, _ = ranks[1].communicate()
    return subprocess.CompletedProcess(ranks[1].args, ranks[1].returncode, out)


def test_a_barrier_gives_up_after_the_collective_timeout():
    rank1 = _pair("barrier")
    assert rank1.returncode == 3 and "ERROR" in rank1.stdout  # what an hours-long tokenization would meet


def test_the_announcement_waits_past_the_collective_timeout():
    rank1 = _pair("ok")
    assert rank1.returncode == 0 and "OUTCOME ok" in rank1.stdout


def test_rank_0s_failure_reaches_the_waiting_rank():
    rank1 = _pair("fail")
    assert rank1.returncode == 0 and "OUTCOME failed: OSError: disk full" in rank1.stdout
