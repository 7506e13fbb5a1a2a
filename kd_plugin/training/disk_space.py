"""A checkpoint that does not fit is refused with the numbers, before torch writes half a file.

Without this check a full disk surfaces as torch's ``inline_container.cc ... unexpected pos`` error from deep
inside ``torch.save``. The estimate is what DeepSpeed writes per optimizer step: every trained parameter in fp32
(4 bytes) plus Adam's two moments (8 bytes), plus the fp32 master copy a 16-bit engine keeps (4 bytes), plus 5 %
for the client state and file overhead.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from torch import nn


class CheckpointSpaceError(OSError):
    """No room for the next checkpoint; the message names the folder, the free space and the estimate."""


def human(n_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n_bytes) < 1024 or unit == "TB":
            return f"{n_bytes:.1f} {unit}" if unit != "B" else f"{int(n_bytes)} B"
        n_bytes /= 1024
    return f"{n_bytes:.1f} TB"


def checkpoint_bytes(module: nn.Module, sixteen_bit_engine: bool = False) -> int:
    """Estimated size of one checkpoint of ``module``'s trained parameters (all ranks together)."""
    n = sum(getattr(p, "ds_numel", p.numel()) for p in module.parameters() if p.requires_grad)
    per_parameter = 4 + 8 + (4 if sixteen_bit_engine else 0)
    return int(n * per_parameter * 1.05)


def free_bytes(directory: Path) -> int:
    """Free space on the file system that holds ``directory`` (or its nearest existing parent)."""
    path = Path(directory)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def check_space(directory: Path, needed: int) -> None:
    free = free_bytes(directory)
    if free < needed:
        raise CheckpointSpaceError(errno.ENOSPC, f"no space left on {directory}: {human(free)} free, "
                                   f"checkpoint needs ~{human(needed)}")


def is_out_of_space(error: BaseException) -> bool:
    """Whether a failed write was a full disk (ENOSPC, or torch's zip writer giving up half way)."""
    text = str(error)
    return (getattr(error, "errno", None) == errno.ENOSPC or "No space left" in text
            or "unexpected pos" in text)
