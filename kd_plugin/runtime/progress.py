"""Progress for long loops: a tqdm bar, or plain log lines for runs whose output goes to a file.

tqdm draws a bar with carriage returns, which a log file keeps as one ever-growing line; batch jobs and the sweep
want one readable line per log point instead (``progress_bar=False``). Shared by the distillation loop, the
teacher preparation, the held-out evaluation and the downstream fine-tuning.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

SHOWN = ("loss", "accuracy", "tokens_per_second")  # the metrics a progress line repeats, when present
PLAIN_LINES = 10  # lines of a loop tracked without a bar: one per tenth
Item = TypeVar("Item")


def progress_line(desc: str, step: int, total_steps: int, initial: int, elapsed_s: float,
                  metrics: dict[str, float], unit: str = "step") -> str:
    """``distill step 40/300 (13 %) loss 2.31 tokens_per_second 1234 | 0:01:20 elapsed, 0:08:40 left``.

    initial: the step this process started from (a resumed run starts at its checkpoint); the time left is
    extrapolated from this process's own steps.
    """
    shown = " ".join(f"{name} {value:.4g}" for name, value in metrics.items() if name in SHOWN)
    done = step - initial
    left = str(dt.timedelta(seconds=round(elapsed_s / done * (total_steps - step)))) if done > 0 else "?"
    return (f"{desc} {unit} {step}/{total_steps} ({100 * step / max(1, total_steps):.0f} %) {shown} | "
            f"{dt.timedelta(seconds=round(elapsed_s))} elapsed, {left} left")


def track(items: Iterable[Item], total: int, desc: str, bar: bool | None, unit: str = "batch") -> Iterator[Item]:
    """``items`` with their progress shown: a tqdm bar (``bar=True``), one plain line on stdout as each tenth of
    ``total`` is reached (``bar=False``: log files), or nothing (``None``: another rank, a caller that shows its
    own)."""
    if bar is None:
        yield from items
        return
    if bar:
        yield from tqdm(items, total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False)
        return
    start, marks = time.perf_counter(), {math.ceil(total * k / PLAIN_LINES) for k in range(1, PLAIN_LINES + 1)}
    for done, item in enumerate(items, start=1):
        yield item
        if done in marks:
            print(progress_line(desc, done, total, 0, time.perf_counter() - start, {}, unit=unit), flush=True)
