"""The model card (``README.md``) of an exported student: what was distilled, how, how well, and from which run.

A Hugging Face folder travels without its run: the card is what a reader of the folder (or of the Hub page)
gets. It is written with ``huggingface_hub.ModelCard`` (offline), its metadata in the Hub's schema
(``base_model`` = the Hub id of the teacher's upstream weights where it is known, ``license`` = the teacher's
weights' licence (``other`` when not known), ``pipeline_tag`` = ``fill-mask`` for a masked LM or
``text-generation`` for a causal LM, ``model-index`` with the student's own held-out accuracy (masked tokens, or
next tokens and perplexity; the teacher's are in the body only, since every ``model-index`` entry is read as this
model's) and, once a finetune run evaluated the folder, the downstream accuracies, marked when they are on a
subset), its body in prose and tables.

Everything the card says is one :class:`StudentCard`. The trainer stores it in every checkpoint's
``client_state["kd_card"]`` (:meth:`StudentCard.to_client_state`), so ``python -m kd_plugin.export`` can write
a card from a checkpoint alone; the card also keeps it in its metadata under ``kd_plugin``, so a later
finetune run can add its scores (:func:`add_downstream_results`) and the card is rendered again from the data,
never patched as text.

Passwords and local addresses: ``database`` goes through :func:`publishable_database` when the card is made (a
password masked; a server on the run's own machine named by its database only, as its address means nothing
elsewhere), and the whole text through :func:`kd_plugin.tracking.credentials.mask_url` once more when it is
written, so no ``user:password@`` reaches the card or a checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from kd_plugin.tracking.credentials import mask_url

CARD_FILE = "README.md"
METADATA_KEY = "kd_plugin"  # the card's own data in its YAML metadata (what add_downstream_results re-renders)
TAGS = ["distillation", "kd_plugin"]
HELD_OUT_DATASET_SPLIT = "held_out"
# objective -> (pipeline tag, task name of the held-out score, what the score counts, example use)
OBJECTIVE_TEXT = {
    "masked_lm": ("fill-mask", "Masked-token prediction", "masked-token accuracy",
                  'fill = pipeline("fill-mask", model="path/to/this/folder")\n'
                  'fill(f"Paris is the capital of {fill.tokenizer.mask_token}.")'),
    "causal_lm": ("text-generation", "Next-token prediction", "next-token accuracy",
                  'generate = pipeline("text-generation", model="path/to/this/folder")\n'
                  'generate("Paris is the capital of", max_new_tokens=20)'),
}


FILE_STORAGE = "file storage "  # StudentCard.database of a run kept by Sacred's FileStorageObserver
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0"})
LOCAL_SERVER = " (a server on the run's own machine)"


def publishable_database(database: str | None) -> str | None:
    """Where a run is saved, as a card may say it: ``<url>/<db>`` with the password masked, or, for a server on
    the run's own machine (loopback, a Unix socket), ``<db> (a server on the run's own machine)``."""
    if database is None or str(database).startswith(FILE_STORAGE) or str(database).endswith(LOCAL_SERVER):
        return database
    text = mask_url(str(database))
    try:
        parts = urlsplit(text)
    except ValueError:
        return text
    hosts = parts.netloc.rpartition("@")[2]
    first = unquote(hosts.split(",")[0]).rsplit(":", 1)[0].strip("[]") if hosts else ""
    if parts.scheme.startswith("mongodb") and (first in LOCAL_HOSTS or first.startswith("/") or ".sock" in first):
        return f"{parts.path.strip('/') or 'unnamed'}{LOCAL_SERVER}"
    return text


@dataclass(kw_only=True)
class StudentCard:
    """Everything the model card says, as plain values (JSON-able through :meth:`to_client_state`).

    The recipe and engine fields come from the run's config and DeepSpeed engine, the sizes from
    ``StudentSummary``; ``steps`` / ``tokens_seen`` / ``checkpoint`` describe the exported checkpoint;
    ``held_out`` is ``held_out_accuracy``'s ``{"teacher": {"accuracy", ...}, "student": {...}}``; ``downstream``
    is ``{"tasks": {name: accuracy}, "macro": ..., "run_id": ..., ...}`` once a finetune run evaluated the folder.
    """

    teacher: str  # catalogue name, directory or hub id
    corpus: str
    language: str = "en"
    license: str | None = None  # the teacher's weights' Hub licence id; None: not known (metadata says "other")
    base_model: str | None = None  # the Hub id of the teacher's upstream weights; None: not known
    teacher_upstream: str | None = None  # where the teacher's weights come from, in words
    temperature: float
    loss_weights: dict[str, float]  # active terms only (weight > 0)
    layer_strategy: str | None = None  # alternate, distilbert_release, ..., or None for an explicit list
    teacher_layers_copied: list[int]  # student layer i starts as teacher layer teacher_layers_copied[i]
    n_layers: int
    teacher_n_layers: int | None = None
    masking: dict[str, Any]
    max_seq_length: int | None = None
    micro_batch_size: int
    gradient_accumulation_steps: int
    world_size: int
    steps: int = 0
    total_steps: int
    tokens_seen: int = 0
    zero_stage: int
    precision: str
    n_parameters: int
    n_non_embedding_parameters: int
    teacher_n_parameters: int
    model_class: str = "DistilBertForMaskedLM"  # the student's transformers class
    objective: str = "masked_lm"  # masked_lm | causal_lm (what the held-out scores measure)
    run_id: int | str | None = None  # the Sacred run that distilled the student
    database: str | None = None  # where that run is saved: "<url>/<db name>", password masked, or
    # "file storage <dir>" for a run kept by Sacred's FileStorageObserver (its run id is that folder's)
    checkpoint: str | None = None  # the DeepSpeed tag the weights were exported from
    held_out: dict[str, dict[str, float]] | None = None
    downstream: dict[str, Any] | None = None
    speed_up: float | None = None  # student / teacher sequences per second
    speed_up_reference: str | None = None  # what speed_up was measured against (None: the teacher)

    def __post_init__(self) -> None:
        self.database = publishable_database(self.database)

    @property
    def in_file_storage(self) -> bool:
        """The run was kept in Sacred's file storage: ``run_id`` names a run folder, not a database run."""
        return bool(self.database) and str(self.database).startswith(FILE_STORAGE)

    @property
    def effective_batch_size(self) -> int:
        """Sequences per optimizer step: micro-batch x accumulation x world size."""
        return self.micro_batch_size * self.gradient_accumulation_steps * self.world_size

    def to_client_state(self) -> dict[str, Any]:
        """A plain JSON-able dict (what the trainer stores as ``client_state["kd_card"]``)."""
        return json.loads(json.dumps(asdict(self), default=_plain))

    @classmethod
    def from_client_state(cls, state: dict[str, Any]) -> StudentCard:
        """The card back from :meth:`to_client_state`'s dict; keys this version does not know are ignored."""
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{key: value for key, value in state.items() if key in known})
        except TypeError as exc:  # a missing required field
            raise ValueError(f"not a complete kd_plugin model card: {exc}") from None


def _plain(value: Any) -> Any:
    """numpy / torch scalars (e.g. an accuracy) as Python numbers; anything else as its string."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


# ---------------------------------------------------------------------------------------------------- metadata
def model_name(card: StudentCard) -> str:
    architecture = "DistilBERT" if card.model_class.startswith("DistilBert") else card.model_class
    return f"{card.n_layers}-layer {architecture} student of {Path(card.teacher).name or card.teacher}"


def pipeline_tag(card: StudentCard) -> str:
    return OBJECTIVE_TEXT[card.objective][0]


def tags(card: StudentCard) -> list[str]:
    family = "distilbert" if card.model_class.startswith("DistilBert") else card.model_class.lower()
    return [TAGS[0], family, *TAGS[1:]]


def _accuracy(scores: dict[str, Any] | None, role: str) -> float | None:
    value = (scores or {}).get(role, {}).get("accuracy")
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def eval_results(card: StudentCard) -> list[EvalResult]:
    """The ``model-index`` entries, all of this student (the Hub reads every entry as the model's own; the
    teacher's scores are in the body): held-out accuracy (a causal LM's perplexity too), then the downstream test
    accuracies per task and their macro average, the dataset named "(subset: ...)" when the evaluation used one."""
    results = []
    tag, task, score, _ = OBJECTIVE_TEXT[card.objective]
    held_out = {"task_type": tag, "task_name": task, "dataset_type": card.corpus,
                "dataset_name": f"{card.corpus} (held-out documents)", "dataset_split": HELD_OUT_DATASET_SPLIT}
    value = _accuracy(card.held_out, "student")
    if value is not None:
        results.append(EvalResult(**held_out, metric_type="accuracy", metric_name=score, metric_value=value))
    perplexity = ((card.held_out or {}).get("student") or {}).get("perplexity")
    if perplexity is not None and math.isfinite(perplexity):
        results.append(EvalResult(**held_out, metric_type="perplexity", metric_name="perplexity",
                                  metric_value=float(perplexity)))
    downstream = card.downstream or {}
    subset = _truncated(downstream)
    marked = f" (subset: {subset})" if subset else ""
    for task, value in (downstream.get("tasks") or {}).items():
        results.append(EvalResult(task_type="text-classification", task_name="Text classification",
                                  dataset_type=task, dataset_name=f"{task}{marked}", dataset_split="test",
                                  metric_type="accuracy", metric_name="test accuracy", metric_value=float(value)))
    if downstream.get("macro") is not None:
        tasks = ", ".join(downstream.get("tasks") or {})
        results.append(EvalResult(task_type="text-classification", task_name="Text classification",
                                  dataset_type="kd_plugin-downstream-macro",
                                  dataset_name=f"macro average ({tasks}){marked}", dataset_split="test",
                                  metric_type="accuracy", metric_name="macro accuracy",
                                  metric_value=float(downstream["macro"])))
    return results


def card_data(card: StudentCard) -> ModelCardData:
    results = eval_results(card)
    return ModelCardData(
        base_model=card.base_model, datasets=[card.corpus], language=card.language, license=card.license or "other",
        library_name="transformers", pipeline_tag=pipeline_tag(card), tags=tags(card),
        model_name=model_name(card) if results else None, eval_results=results or None,
        **{METADATA_KEY: card.to_client_state()},
    )


# ---------------------------------------------------------------------------------------------------- body
def _number(value: int) -> str:
    return f"{value:,}"


def layer_map(card: StudentCard) -> str:
    """``student 0 <- teacher 0, student 1 <- teacher 2`` (or why there is none)."""
    if not card.teacher_layers_copied:
        return "none: the student's layers are randomly initialised"
    pairs = ", ".join(f"student {i} <- teacher {t}" for i, t in enumerate(card.teacher_layers_copied))
    of = f" of {card.teacher_n_layers}" if card.teacher_n_layers else ""
    strategy = f" (`{card.layer_strategy}`)" if card.layer_strategy else ""
    return f"teacher layers {card.teacher_layers_copied}{of} copied{strategy}: {pairs}"


def _masking(masking: dict[str, Any]) -> str:
    if not masking:
        return "not recorded"
    share = masking.get("mlm_probability")
    text = f"{share:.0%} of the tokens selected" if isinstance(share, (int, float)) else "tokens selected"
    if {"mask_fraction", "random_fraction", "keep_fraction"} <= set(masking):
        text += (f"; of those {masking['mask_fraction']:.0%} `[MASK]`, {masking['random_fraction']:.0%} random "
                 f"token, {masking['keep_fraction']:.0%} kept")
    if masking.get("smoothing"):
        text += f"; selection weighted by token count ** -{masking['smoothing']}"
    return text


def _ratio(part: int, whole: int) -> str:
    return f" ({part / whole:.1%} of the teacher)" if whole else ""


def _held_out_table(card: StudentCard) -> str:
    score = OBJECTIVE_TEXT[card.objective][2]
    if not card.held_out:
        return f"Held-out {score}: not measured for this checkpoint.\n"
    causal = card.objective == "causal_lm"
    rows = (["| model | next-token accuracy | perplexity | predicted tokens |", "|---|---|---|---|"] if causal else
            ["| model | masked-token accuracy | masked tokens |", "|---|---|---|"])
    for role in ("student", "teacher"):
        scores = card.held_out.get(role)
        if scores:
            n = scores.get("n_targets" if causal else "n_masked")
            perplexity = f" {scores.get('perplexity', float('nan')):.2f} |" if causal else ""
            rows.append(f"| {role} | {scores.get('accuracy', float('nan')):.4f} |{perplexity} "
                        f"{_number(int(n)) if n is not None else '-'} |")
    same = "every position with a real next token" if causal else "the same masks for both models"
    return (f"Held-out {score} (documents of `{card.corpus}` kept out of training, {same}):\n\n"
            + "\n".join(rows) + "\n")


def _downstream_section(card: StudentCard) -> str:
    downstream = card.downstream
    if not downstream:
        return ""
    rows = ["| task | test accuracy |", "|---|---|"]
    rows += [f"| {task} | {value:.4f} |" for task, value in (downstream.get("tasks") or {}).items()]
    if downstream.get("macro") is not None:
        rows.append(f"| **macro average** | **{downstream['macro']:.4f}** |")
    run = downstream.get("run_id")
    source = f"finetune run `{run}`" if run is not None else "a finetune run"
    if downstream.get("database"):
        source += f" (database `{downstream['database']}`)"
    lines = [f"Downstream, fine-tuned on each task by {source}:", "", *rows]
    if downstream.get("teacher_macro") is not None:
        lines += ["", f"The teacher's macro average in the same run: {downstream['teacher_macro']:.4f}."]
    if downstream.get("settings"):
        settings = ", ".join(f"{k}={v}" for k, v in downstream["settings"].items())
        lines += ["", f"Fine-tuning settings: {settings}."]
    return "\n".join(lines) + "\n"


def render_body(card: StudentCard) -> str:
    """The card's Markdown body (after the metadata block)."""
    weights = ", ".join(f"{name} {weight:g}" for name, weight in card.loss_weights.items()) or "not recorded"
    steps = f"{_number(card.steps)} of {_number(card.total_steps)}"
    if card.checkpoint:
        steps += f" (checkpoint `{card.checkpoint}`)"
    speed = "not measured"
    if card.speed_up is not None:
        speed = f"{card.speed_up:.2f}x the sequences per second of `{card.speed_up_reference or card.teacher}`"
    provenance = f"Sacred run `{card.run_id}`" if card.run_id is not None else "an untracked run (no run id)"
    if card.in_file_storage:
        folder = card.database[len(FILE_STORAGE):]
        provenance = (f"the Sacred file-storage run `{card.run_id}` in `{folder}`, a run folder, not a database run "
                      f"id: `python -m kd_plugin.tracking.import_runs {folder}` gives it one, which then differs; "
                      f"the imported record is the one whose `kd_tracking.imported_from` is `{folder}/{card.run_id}`")
    elif card.database:
        provenance += f" in database `{card.database}`"
    sections = [
        f"# {model_name(card)}",
        f"A `{card.model_class}` distilled from `{card.teacher}`"
        + (f" ({card.teacher_upstream})" if card.teacher_upstream else "")
        + f" on `{card.corpus}` by kd_plugin, after "
        "DistilBERT ([Sanh et al. 2019](https://arxiv.org/abs/1910.01108)): a mixture of losses against the "
        "frozen teacher (below), the student starting from a subset of the teacher's layers.",
        "## Use\n\n```python\nfrom transformers import pipeline\n\n"
        f"{OBJECTIVE_TEXT[card.objective][3]}\n```",
        "## Recipe\n\n" + "\n".join([
            "| | |", "|---|---|",
            f"| temperature T | {card.temperature:g} |",
            f"| loss weights | {weights} |",
            f"| layer map | {layer_map(card)} |",
            *([f"| masking | {_masking(card.masking)} |"] if card.objective == "masked_lm" else
              ["| targets | the next token at every position (no masking) |"]),
            f"| effective batch | {card.effective_batch_size} sequences = {card.micro_batch_size} micro-batch x "
            f"{card.gradient_accumulation_steps} accumulation x {card.world_size} rank"
            f"{'' if card.world_size == 1 else 's'} |",
            *([f"| sequence length | {card.max_seq_length} tokens at most |"] if card.max_seq_length else []),
            f"| optimizer steps | {steps} |",
            f"| tokens seen | {_number(card.tokens_seen)} |",
        ]),
        f"## Engine\n\nDeepSpeed ZeRO stage {card.zero_stage}, precision {card.precision}, world size "
        f"{card.world_size}. The exported weights are the fp32 master weights of the ZeRO checkpoint.",
        "## Size and speed\n\n" + "\n".join([
            "| | parameters |", "|---|---|",
            f"| student | {_number(card.n_parameters)}{_ratio(card.n_parameters, card.teacher_n_parameters)} |",
            f"| student, non-embedding | {_number(card.n_non_embedding_parameters)} |",
            f"| teacher | {_number(card.teacher_n_parameters)} |",
        ]) + f"\n\nSpeed-up: {speed}.",
        ("## Evaluation\n\n" + _held_out_table(card) + "\n" + _downstream_section(card)).rstrip(),
        "## Intended use and limitations\n\n" + _limitations(card),
        f"## Provenance\n\nDistilled by {provenance}. The run's config, metrics and checkpoints are recorded "
        "there; this card was written by `kd_plugin.export`.",
    ]
    return "\n\n".join(sections) + "\n"


def _limitations(card: StudentCard) -> str:
    """What the student is for and what it is not: said from the run's own facts."""
    use = ("filling masked tokens and, fine-tuned, text classification or tagging" if card.objective == "masked_lm"
           else "continuing text and, fine-tuned, text classification")
    return (f"A research artefact: a smaller `{card.model_class}` for {use} where the teacher is too slow or too "
            f"large, and a record of one distillation recipe. It was trained on `{card.corpus}` only "
            f"({_number(card.tokens_seen)} tokens seen), so it knows that corpus's language and topics, inherits "
            f"the teacher's (`{card.teacher}`) biases and errors, and is weaker than the teacher (see Evaluation). "
            "It is not evaluated for safety, factual accuracy or any use where errors harm people. Licence: "
            + (f"the teacher's weights are `{card.license}`" if card.license else
               "the teacher's licence is not recorded (the metadata says `other`)")
            + f"; the corpus `{card.corpus}` has terms of its own: check both before redistributing the student.")


# ---------------------------------------------------------------------------------------------------- files
def render_model_card(card: StudentCard) -> ModelCard:
    text = f"---\n{card_data(card).to_yaml()}\n---\n\n{render_body(card)}"
    return ModelCard(mask_url(text))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_model_card(target_dir: str | Path, card: StudentCard) -> Path:
    """Write ``<target_dir>/README.md`` (atomically: a reader never sees half a card); return its path."""
    path = Path(target_dir) / CARD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    text = str(render_model_card(card))
    fd, tmp = tempfile.mkstemp(prefix=".README.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a card is published like the weights beside it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_model_card(model_dir: str | Path) -> StudentCard | None:
    """The :class:`StudentCard` of a folder's kd_plugin model card; None when the folder has no such card."""
    path = Path(model_dir) / CARD_FILE
    if not path.is_file():
        return None
    state = ModelCard.load(path).data.to_dict().get(METADATA_KEY)
    return StudentCard.from_client_state(state) if isinstance(state, dict) else None


def _truncated(downstream: dict[str, Any]) -> str:
    """The subset limits of an evaluation ("" for a full one)."""
    settings = downstream.get("settings") or {}
    return ", ".join(f"{key}={settings[key]}" for key in ("max_train_examples", "max_eval_examples")
                     if settings.get(key) is not None)


def add_downstream_results(model_dir: str | Path, downstream: dict[str, Any], speed_up: float | None = None,
                           speed_up_reference: str | None = None) -> Path | None:
    """Put a finetune run's scores into the folder's kd_plugin model card and write it again.

    ``downstream``: ``{"tasks": {name: accuracy}, "macro": ..., "run_id": ...}`` (optional ``teacher_macro``,
    ``database``, ``settings``); it replaces the previous downstream results (the latest evaluation wins),
    except that a truncated evaluation (``settings`` with ``max_train_examples`` or ``max_eval_examples``) never
    replaces a full one: a smoke run does not overwrite published scores.
    Returns the card's path, or None when ``model_dir`` is not a folder with a kd_plugin card (a catalogue name,
    a hub id, a model from elsewhere): nothing is written then.
    """
    if not Path(model_dir).is_dir():
        return None
    card = read_model_card(model_dir)
    if card is None:
        return None
    downstream = dict(downstream)
    if _truncated(downstream) and card.downstream and not _truncated(card.downstream):
        warnings.warn(f"{model_dir}: the model card keeps the full evaluation of finetune run "
                      f"{card.downstream.get('run_id')}; run {downstream.get('run_id')} used a subset "
                      f"({_truncated(downstream)})", stacklevel=2)
        return None
    if downstream.get("database") is not None:
        downstream["database"] = publishable_database(str(downstream["database"]))
    changes: dict[str, Any] = {"downstream": downstream}
    if speed_up is not None and math.isfinite(speed_up):
        changes.update(speed_up=float(speed_up), speed_up_reference=speed_up_reference)
    return write_model_card(model_dir, replace(card, **changes))
