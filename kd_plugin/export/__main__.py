"""Turn a DeepSpeed checkpoint of a distillation run into a Hugging Face folder: weights, config, tokenizer and
model card, under any ZeRO stage (1, 2, 3).

    python -m kd_plugin.export <output_dir>/checkpoints <out dir>                     # the latest checkpoint
    python -m kd_plugin.export <output_dir> <out dir> --tag step00000100              # a given one
    python -m kd_plugin.export <checkpoints> <out dir> --student-config <run>/student --tokenizer <run>/student
        # a checkpoint of a trainer that did not store its student config and tokenizer (export format 1)

The weights are the fp32 master weights (:func:`kd_plugin.export.export_student`); the config, tokenizer and
card come from the checkpoint's client state (:mod:`kd_plugin.export.checkpoint_state`), so the checkpoint
folder alone is enough. Problems (a missing folder, no ``latest``, a checkpoint without the kd keys, an output
folder that already holds a model) end with one line on stderr and exit status 2. The checkpoint is unpickled
(``torch.load(weights_only=False)``): export only checkpoints you trust, as with ``engine.load_checkpoint``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kd_plugin.export.checkpoint_state import CheckpointError, read_checkpoint
from kd_plugin.export.model_card import CARD_FILE

MODEL_FILES = ("config.json", "model.safetensors", "pytorch_model.bin")
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
    parser.add_argument("--overwrite", action="store_true", help="replace a model already in out_dir")
    return parser.parse_args(argv)


def check_target(out_dir: Path, overwrite: bool) -> None:
    present = [name for name in MODEL_FILES if (out_dir / name).exists()]
    if present and not overwrite:
        raise CheckpointError(f"{out_dir} already holds a model ({', '.join(present)}): choose another folder "
                              "or pass --overwrite")


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
    card = None if args.no_card else source.card
    if card is None and args.overwrite:
        # a card left by an earlier export would describe (and score) other weights
        (out_dir / CARD_FILE).unlink(missing_ok=True)
    try:
        model = export_student(source.checkpoint_dir, source.tag, source.student_config, tokenizer, out_dir, card)
    except (OSError, ValueError, RuntimeError) as exc:  # missing optimizer shards, a config that does not fit
        raise CheckpointError(f"cannot export {source.checkpoint_dir / source.tag}: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
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
