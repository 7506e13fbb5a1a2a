"""Where an export is written: never over files that are not an export, never half written.

An export (config, weights, tokenizer, model card) is first written into a hidden staging folder and published
only once complete, so a full disk, a crash or a signal part way through leaves no folder that loads as a half
model:

* a target that does not exist yet: the staging folder is its sibling (``.<name>.kd-export-<random>``) and is
  renamed into place (one ``rename``: the folder appears whole or not at all);
* a target that exists (an earlier export being replaced, or an existing folder the export is written into):
  the staging folder is inside it; publishing moves the earlier export's model files aside (weights first),
  moves the new files in (weights last) and deletes the old ones. Every step is a rename on one file system, so
  no write can fail for space; at every moment the folder holds the old complete export, no weights, or the new
  complete export. A failure while moving puts the old files back.

The staging folder is deleted on any failure, the target is then as it was. Only the earlier *export's* files
are replaced (its config, weights and model card, and any file of the new export's names): other files in the
folder stay.

An *earlier export* is a Hugging Face model folder: ``config.json`` beside weights (``model.safetensors``,
``pytorch_model.bin``, their shards or index), with or without a model card (``--no-card`` exports have none).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from kd_plugin.export.model_card import CARD_FILE

CONFIG_FILE = "config.json"
WEIGHT_PATTERNS = ("model*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin",
                   "pytorch_model.bin.index.json")


def weight_files(folder: str | Path) -> list[str]:
    folder = Path(folder)
    return sorted({p.name for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern) if p.is_file()})


def model_files(folder: str | Path) -> list[str]:
    """``config.json`` and the weight files of a Hugging Face model folder, or [] when it holds no model."""
    weights = weight_files(folder)
    return [CONFIG_FILE, *weights] if weights and (Path(folder) / CONFIG_FILE).is_file() else []


def is_model_folder(folder: str | Path) -> bool:
    return bool(model_files(folder))


def _is_weights(name: str) -> bool:
    return any(Path(name).match(pattern) for pattern in WEIGHT_PATTERNS)


@contextlib.contextmanager
def staged_folder(target: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder to write the export into; publish it into ``target`` when the block ends
    without an exception (see the module's docstring), else delete it and leave ``target`` as it was."""
    target = Path(target)
    token = uuid.uuid4().hex[:8]
    if target.exists():
        staging = target / f".kd-export-{token}"
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{target.name}.kd-export-{token}"
    staging.mkdir()
    try:
        yield staging
        if target.exists():
            _publish_into(staging, target, token)
        else:
            os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish_into(staging: Path, target: Path, token: str) -> None:
    new = sorted((p.name for p in staging.iterdir()), key=_is_weights)  # weights last
    retired = set(model_files(target)) | ({CARD_FILE} if is_model_folder(target) else set())
    retired |= {name for name in new if (target / name).exists()}
    retired = sorted((name for name in retired if (target / name).exists()), key=lambda n: not _is_weights(n))
    backup = target / f".kd-replaced-{token}"
    backup.mkdir()
    moved_out: list[str] = []
    moved_in: list[str] = []
    try:
        for name in retired:  # weights first: from here on the folder does not load as the old model
            os.replace(target / name, backup / name)
            moved_out.append(name)
        for name in new:  # weights last: the folder loads only once everything is in
            os.replace(staging / name, target / name)
            moved_in.append(name)
    except BaseException:
        for name in reversed(moved_in):
            with contextlib.suppress(OSError):
                os.replace(target / name, staging / name)
        for name in reversed(moved_out):
            with contextlib.suppress(OSError):
                os.replace(backup / name, target / name)
        with contextlib.suppress(OSError):
            backup.rmdir()  # only when every old file is back: what could not be restored stays there
        raise
    shutil.rmtree(backup, ignore_errors=True)
