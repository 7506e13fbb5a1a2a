"""Progress as plain log lines, for runs whose output goes to a file (``progress_bar=False``).

tqdm draws a bar with carriage returns, which a log file keeps as one ever-growing line; batch jobs and the sweep
want one readable line per log point instead. Shared by the distillation loop and the teacher preparation.
"""

from __future__ import annotations

import datetime as dt

SHOWN = ("loss", "accuracy", "tokens_per_second")  # the metrics a progress line repeats, when present


def progress_line(desc: str, step: int, total_steps: int, initial: int, elapsed_s: float,
                  metrics: dict[str, float]) -> str:
    """``distill step 40/300 (13 %) loss 2.31 tokens_per_second 1234 | 0:01:20 elapsed, 0:08:40 left``.

    initial: the step this process started from (a resumed run starts at its checkpoint); the time left is
    extrapolated from this process's own steps.
    """
    shown = " ".join(f"{name} {value:.4g}" for name, value in metrics.items() if name in SHOWN)
    done = step - initial
    left = str(dt.timedelta(seconds=round(elapsed_s / done * (total_steps - step)))) if done > 0 else "?"
    return (f"{desc} step {step}/{total_steps} ({100 * step / max(1, total_steps):.0f} %) {shown} | "
            f"{dt.timedelta(seconds=round(elapsed_s))} elapsed, {left} left")
