"""Turn a DeepSpeed checkpoint of a distillation run into a Hugging Face folder: weights, config, tokenizer and
model card, under any ZeRO stage (1, 2, 3).

    python -m kd_plugin.export <output_dir>/checkpoints <out dir>                     # the latest checkpoint
    python -m kd_plugin.export <output_dir> <out dir> --tag step00000100              # a given one
    python -m kd_plugin.export <checkpoints> <out dir> --student-config <run>/student --tokenizer <run>/student
        # a checkpoint of a trainer that did not store its student config and tokenizer (export format 1)

The weights are the fp32 master weights (:func:`kd_plugin.export.export_student`); the config, tokenizer and
card come from the checkpoint's client state (:mod:`kd_plugin.export.checkpoint_state`), so the checkpoint
folder alone is enough. Problems (a missing folder, no ``latest``, a checkpoint without the kd keys, an output
folder that is not empty) end with one line on stderr and exit status 2.

The output folder must be new or empty. ``--overwrite`` replaces an earlier export there (a folder holding
``config.json`` and weights: its config, weights and model card are replaced, other files stay), or writes the
export's files into a folder that holds other files (same-named files are replaced; ``.`` would lose its
README.md). The export is written into a staging folder and moved into place only when complete
(:mod:`kd_plugin.export.target_folder`): a failure (a full disk, a signal) leaves the output folder as it was. The checkpoint is unpickled
(``torch.load(weights_only=False)``): export only checkpoints you trust, as with ``engine.load_checkpoint``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kd_plugin.export.checkpoint_state import CheckpointError, read_checkpoint
from kd_plugin.export.target_folder import model_files

EXIT_USAGE = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m kd_plugin.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint_dir", help="the run's checkpoints folder (or its output folder)")
    parser.add_argument("out_dir", help="the Hugging Face folder to write")
    parser.add_argument("--tag", default=None, help="the checkpoint's tag, e.g. step00000100 (default: latest)")
    parser.add_argument("--student-config", default=None,
                        help="config.json of the student (or a folder holding it), when the checkpoint has none")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder, when the checkpoint names none")
    parser.add_argument("--no-card", action="store_true", help="do not write README.md")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export in out_dir, or write "
                        "into a folder that holds other files (same-named files are replaced)")
    return parser.parse_args(argv)


def check_target(out_dir: Path, overwrite: bool) -> None:
    """A new or empty folder; with ``overwrite`` also an earlier export or a folder that holds other files."""
    if out_dir.exists() and not out_dir.is_dir():
        raise CheckpointError(f"{out_dir} is a file, not a folder: choose a new or empty folder")
    if overwrite or not out_dir.exists():
        return
    present = model_files(out_dir)
    if present:
        raise CheckpointError(f"{out_dir} already holds a model ({', '.join(present)}): choose another folder "
                              "or pass --overwrite to replace it")
    entries = sorted(p.name for p in out_dir.iterdir())
    if entries:
        shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
        raise CheckpointError(f"{out_dir} is not empty ({shown}) and holds no earlier export (config.json with "
                              "weights): choose a new or empty folder, or pass --overwrite to write the export's "
                              "files into it (same-named files are replaced)")


def export(args: argparse.Namespace) -> str:
    """Write the folder; return the summary line."""
    from transformers import AutoTokenizer

    from kd_plugin.export.student import export_student

    source = read_checkpoint(args.checkpoint_dir, args.tag, args.student_config, args.tokenizer)
    out_dir = Path(args.out_dir)
    check_target(out_dir, args.overwrite)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.tokenizer_dir)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load the tokenizer from {source.tokenizer_dir}: {exc}") from None
    card = None if args.no_card else source.card  # an earlier export's card goes with its weights (replaced)
    try:
        model = export_student(source.checkpoint_dir, source.tag, source.student_config, tokenizer, out_dir, card)
    except Exception as exc:  # missing optimizer shards, a config that does not fit, a full disk (SafetensorError)
        raise CheckpointError(f"cannot export {source.checkpoint_dir / source.tag}: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}; nothing was written to {out_dir}") from None
    n_parameters = sum(p.numel() for p in model.parameters())
    if card is not None:
        card_note = "model card README.md"
    elif args.no_card:
        card_note = "no model card (--no-card)"
    else:
        card_note = "no model card: the checkpoint holds none (kd_card missing or empty)"
    return (f"wrote {out_dir}: {source.checkpoint_dir / source.tag} (ZeRO stage {source.zero_stage}), "
            f"{n_parameters:,} parameters, tokenizer, {card_note}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        line = export(args)
    except CheckpointError as exc:
        print(f"kd_plugin.export: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
