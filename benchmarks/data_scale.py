"""The data path at growing corpus sizes: time to the first optimizer step (cold: tokenizing; warm: the cache),
tokenize throughput per process, peak memory and disk, for ``data.num_proc`` 1 and more.

For each size a plain-text corpus is written from the packaged ``wiki_leads`` documents (4.5 MB of Wikipedia
lead sections, repeated with a copy number appended so that no two documents are equal) and distilled for one
optimizer step by the real command line, ``experiments/distill.py with teacher=random-tiny max_steps=1`` (the
bert-base-uncased WordPiece tokenizer, a tiny model: the data path dominates), kept in Sacred's file storage
(``-F``), never in a database. Per (size, processes):

* cold: a fresh ``data.cache_dir``, so the run converts the corpus to Arrow, cleans and tokenizes it;
* warm: the same cache, a new output folder: only the cache is opened.

Measured from outside the run: wall time; peak resident memory of the run's process tree (the tokenizing worker
processes included), all of it and its anonymous part (without the memory-mapped files' pages), sampled every
0.2 s; the size of ``data.cache_dir`` sampled every 0.4 s (peak) and at the
end (sampling can miss a peak shorter than that). Tokenize throughput per process = corpus MB / (cold - warm wall time) / processes.

    .venv/bin/python benchmarks/data_scale.py --sizes-mb 50 200 --num-proc 1 2
    # -> benchmarks/results/<date>-cpu-data-scale.json and a markdown table
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

PROJECT = Path(__file__).resolve().parents[1]
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))

from benchmarks.report import results_path  # noqa: E402

MB = 10**6


def write_corpus(path: Path, size_bytes: int) -> int:
    """``path``: one document per line, ``wiki_leads`` repeated (copy number appended) up to ``size_bytes``."""
    from kd_plugin.data import load_corpus

    texts = [" ".join(t.split()) for t in load_corpus("wiki_leads")["text"] if t.strip()]
    written, copy = 0, 0
    with open(path, "w", encoding="utf-8") as out:
        while written < size_bytes:
            for text in texts:
                line = f"{text} (copy {copy})\n"
                out.write(line)
                written += len(line.encode("utf-8"))
                if written >= size_bytes:
                    break
            copy += 1
    return written


def folder_bytes(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass  # a temporary file removed while walking
    return total


def anonymous_rss(process: psutil.Process) -> int:
    """Resident anonymous memory of a process: what it holds itself, without the memory-mapped Arrow files'
    pages that RSS also counts (the kernel drops those when memory is short). On Linux psutil's ``rss - shared``
    is ``RssAnon`` of ``/proc/<pid>/status`` (shared = file-backed + shmem pages)."""
    info = process.memory_info()
    return info.rss - getattr(info, "shared", 0)


class Sampler(threading.Thread):
    """Peak RSS and peak anonymous memory of a process tree (every 0.2 s) and peak size of a folder (every 0.4 s)
    while the process runs."""

    def __init__(self, process: subprocess.Popen, folder: Path):
        super().__init__(daemon=True)
        self.process, self.folder = psutil.Process(process.pid), folder
        self.peak_rss = self.peak_anonymous = self.peak_disk = 0
        self.done = threading.Event()

    def run(self) -> None:
        ticks = 0
        while not self.done.is_set():
            try:
                tree = [self.process, *self.process.children(recursive=True)]
                running = [p for p in tree if p.is_running()]
                self.peak_rss = max(self.peak_rss, sum(p.memory_info().rss for p in running))
                self.peak_anonymous = max(self.peak_anonymous, sum(anonymous_rss(p) for p in running))
            except psutil.Error:
                pass
            if ticks % 2 == 0:  # the folder every other tick (a walk of a big cache takes a while itself)
                self.peak_disk = max(self.peak_disk, folder_bytes(self.folder))
            ticks += 1
            self.done.wait(0.2)


def one_run(corpus: Path, cache: Path, out: Path, storage: Path, num_proc: int, env: dict) -> dict:
    command = [sys.executable, str(PROJECT / "experiments" / "distill.py"), "-F", str(storage), "with",
               "teacher=random-tiny", "max_steps=1", "eval_max_sequences=0", "progress_bar=False",
               "checkpoint_every=None", f"data.corpus={corpus}", f"data.cache_dir={cache}",
               f"data.num_proc={num_proc}", "data.max_seq_length=128", f"output_dir={out}"]
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    sampler = Sampler(process, cache)
    sampler.start()
    output, _ = process.communicate()
    wall = time.perf_counter() - start
    sampler.done.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"the run failed (exit {process.returncode}):\n{output[-3000:]}")
    return {"wall_s": wall, "peak_rss_bytes": sampler.peak_rss, "peak_anonymous_bytes": sampler.peak_anonymous,
            "peak_cache_bytes": max(sampler.peak_disk,
            folder_bytes(cache)), "cache_bytes_after": folder_bytes(cache)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--num-proc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", default=str(PROJECT / "benchmarks" / "results"))
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="kd-data-scale-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KD_MONGO")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_DATASETS_CACHE=str(work / "hf-home"),
               KD_DB_DIR=str(work / "no-db"))
    rows = []
    try:
        for size_mb in args.sizes_mb:
            corpus = work / f"corpus-{size_mb}mb.txt"
            corpus_bytes = write_corpus(corpus, size_mb * MB)
            for num_proc in args.num_proc:
                cache = work / f"cache-{size_mb}-{num_proc}"
                cold = one_run(corpus, cache, work / f"out-{size_mb}-{num_proc}-cold", work / "runs", num_proc, env)
                warm = one_run(corpus, cache, work / f"out-{size_mb}-{num_proc}-warm", work / "runs", num_proc, env)
                tokenize_s = max(cold["wall_s"] - warm["wall_s"], 1e-9)
                row = {"corpus_mb": corpus_bytes / MB, "num_proc": num_proc, "cold": cold, "warm": warm,
                       "tokenize_s": tokenize_s,
                       "tokenize_mb_per_s_per_process": corpus_bytes / MB / tokenize_s / num_proc,
                       "peak_cache_per_corpus_byte": cold["peak_cache_bytes"] / corpus_bytes,
                       "cache_after_per_corpus_byte": cold["cache_bytes_after"] / corpus_bytes}
                rows.append(row)
                print(f"{size_mb} MB, num_proc {num_proc}: cold {cold['wall_s']:.0f} s, warm {warm['wall_s']:.0f} s, "
                      f"peak RSS {cold['peak_rss_bytes'] / 2**30:.2f} GiB (anonymous "
                      f"{cold['peak_anonymous_bytes'] / 2**30:.2f}), cache peak "
                      f"{row['peak_cache_per_corpus_byte']:.2f}x / after {row['cache_after_per_corpus_byte']:.2f}x "
                      "the corpus", flush=True)
                shutil.rmtree(cache, ignore_errors=True)
            corpus.unlink()
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    results = {"created": dt.datetime.now().isoformat(timespec="seconds"),
               "command": ["data_scale.py", *(argv if argv is not None else sys.argv[1:])],
               "machine": {"cpu_count": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0))},
               "rows": rows}
    path = results_path(args.out, "cpu", workload="data-scale")
    path.write_text(json.dumps(results, indent=2) + "\n")
    print("\n| corpus MB | processes | cold s | warm s | tokenize MB/s per process | peak RSS GiB (anonymous) | cache "
          "peak / after (x corpus) |\n|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['corpus_mb']:.0f} | {r['num_proc']} | {r['cold']['wall_s']:.1f} | {r['warm']['wall_s']:.1f} | "
              f"{r['tokenize_mb_per_s_per_process']:.2f} | {r['cold']['peak_rss_bytes'] / 2**30:.2f} "
              f"({r['cold']['peak_anonymous_bytes'] / 2**30:.2f}) | "
              f"{r['peak_cache_per_corpus_byte']:.2f} / {r['cache_after_per_corpus_byte']:.2f} |")
    print(f"\nresults: {path}")
    return results


if __name__ == "__main__":
    main()
