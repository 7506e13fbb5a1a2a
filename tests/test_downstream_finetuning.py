"""Fine-tuning a tiny random model on an easy synthetic task, with and without distillation from a teacher."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import random  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from datasets import ClassLabel, Dataset, Features, Value  # noqa: E402

from kd_plugin.downstream.distill_loss import FinetuneLoss  # noqa: E402
from kd_plugin.downstream.finetuning import FinetuneSettings, encode, evaluate, predict_logits, train  # noqa: E402
from kd_plugin.downstream.model_loading import load_classifier, resolve_model  # noqa: E402
from kd_plugin.errors import ConfigError  # noqa: E402

POSITIVE = ["good", "great", "excellent", "wonderful", "superb", "lovely"]
NEGATIVE = ["bad", "awful", "terrible", "boring", "dreadful", "poor"]
FILLER = ["the", "film", "was", "really", "quite", "a", "story", "and", "acting", "plot", "it", "very"]
SETTINGS = FinetuneSettings(max_seq_length=16, batch_size=16, eval_batch_size=64, lr=2e-3, epochs=4, seed=0,
                            warmup_proportion=0.1, log_every=5, weight_decay=0.01, max_grad_norm=1.0,
                            progress_bar=False)


def synthetic(n: int, seed: int) -> Dataset:
    """Sentences of filler words with one sentiment word: label 1 if it is a positive one."""
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        label = rng.randrange(2)
        words = rng.choices(FILLER, k=rng.randint(3, 8))
        words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if label else NEGATIVE))
        texts.append(" ".join(words))
        labels.append(label)
    features = Features({"text": Value("string"), "label": ClassLabel(names=["negative", "positive"])})
    return Dataset.from_dict({"text": texts, "label": labels}, features=features)


@pytest.fixture(autouse=True)
def one_thread():
    """Tests share the cores with other jobs; one thread avoids spin-waiting (and restores the setting)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(seed: int = 0):
    return load_classifier(resolve_model("random-tiny"), ["negative", "positive"], seed)


def test_fine_tuning_a_tiny_model_beats_chance_clearly(capsys):
    loaded = _model()
    train_set, test_set = encode(synthetic(320, 1), loaded, 16), encode(synthetic(200, 2), loaded, 16)
    before = evaluate(loaded, test_set, 64)
    logged = []
    summary = train(loaded, train_set, SETTINGS, validation=test_set, log=lambda *a: logged.append(a), prefix="syn/")
    after = evaluate(loaded, test_set, 64)
    assert after >= 0.9, (before, after, summary)
    assert summary["steps"] == 4 * 20 and len(summary["validation_accuracy_per_epoch"]) == 4
    names = {name for name, _, _ in logged}
    assert {"syn/train_loss", "syn/validation_accuracy"} <= names
    # progress_bar=False: within each epoch of 20 steps a plain line at every second step, then the epoch's line
    lines = capsys.readouterr().out.splitlines()
    within = [line.split(" (")[0].strip() for line in lines if " step " in line]
    assert within == [f"syn/epoch {e}/4 step {s}/20" for e in range(1, 5) for s in range(2, 21, 2)]
    assert [line.split(":")[0].strip() for line in lines if " step " not in line] == [
        f"syn/epoch {e}/4" for e in range(1, 5)]


def test_distillation_during_fine_tuning_uses_the_teacher_logits():
    teacher = _model(seed=1)
    data = synthetic(320, 1)
    train(teacher, encode(data, teacher, 16), SETTINGS)
    teacher_logits = predict_logits(teacher, encode(data, teacher, 16), 64)  # (n, 2)
    assert teacher_logits.shape == (320, 2)

    student = _model(seed=2)
    test_set = encode(synthetic(200, 2), student, 16)
    loss_fn = FinetuneLoss(alpha_task=0.5, alpha_ce=0.5, temperature=2.0)
    logged = []
    train(student, encode(data, student, 16), SETTINGS, loss_fn, teacher_logits, log=lambda *a: logged.append(a))
    assert evaluate(student, test_set, 64) >= 0.85
    assert {"train_loss_ce", "train_loss_task"} <= {name for name, _, _ in logged}
    with pytest.raises(ValueError, match="teacher logits"):
        train(student, encode(data, student, 16), SETTINGS, loss_fn, teacher_logits[:10])


def test_distilbert_student_directory_loads_as_a_classifier(tmp_path):
    """A DistilBERT student dir (no pooler, no token types) gets a new head and trains without token_type_ids."""
    from transformers import DistilBertConfig, DistilBertForMaskedLM

    tokenizer = _model().tokenizer
    config = DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=1, n_heads=2, hidden_dim=64)
    DistilBertForMaskedLM(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = load_classifier(resolve_model(str(tmp_path)), ["a", "b", "c"], seed=0)
    assert not loaded.accepts_token_type_ids and "classifier.weight" in loaded.newly_initialised
    encoded = encode(synthetic(8, 3), loaded, 16)
    assert encoded.token_type_ids is None
    assert predict_logits(loaded, encoded, 4).shape == (8, 3)


def test_unloadable_model_is_a_config_error_on_model(tmp_path):
    with pytest.raises(ConfigError) as info:
        resolve_model(str(tmp_path / "missing_dir"))
    assert info.value.key == "model"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError) as info:
        load_classifier(resolve_model(str(tmp_path / "empty")), ["a", "b"], seed=0)
    assert info.value.key == "model"
