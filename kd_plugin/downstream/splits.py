"""Fixed, seeded, stratified train / validation / test splits that do not depend on any library's RNG.

Each example gets a rank from the sha256 of ``(split_seed, text[, text_pair])`` (texts are unique after
de-duplication). Within each class the lowest ranks go to test, the next to validation, the rest to train, so
class proportions are kept and the same ``split_seed`` gives the same splits on every machine and with every
numpy / datasets version. Each split is returned in rank order (classes interleaved, no file order), so its
first N rows are a random sample: ``max_train_examples`` truncation relies on that.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

from datasets import Dataset, DatasetDict

from kd_plugin.errors import ConfigError

VALIDATION_FRACTION = 0.1
TEST_FRACTION = 0.2


def split_rank(key: str, split_seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{split_seed}\x00{key}".encode()).digest()[:8], "big")


def stratified_split(
    ds: Dataset,
    split_seed: int,
    validation_fraction: float = VALIDATION_FRACTION,
    test_fraction: float = TEST_FRACTION,
) -> DatasetDict:
    """``train`` / ``validation`` / ``test`` from one labelled Dataset (``label`` column), disjoint rows."""
    if not (0 <= validation_fraction and 0 < test_fraction and validation_fraction + test_fraction < 1):
        raise ConfigError("split fractions", f"validation {validation_fraction}, test {test_fraction}",
                          "0 <= validation, 0 < test, validation + test < 1")
    keys = ds["text"]
    if "text_pair" in ds.column_names:
        keys = [f"{a}\x00{b}" for a, b in zip(keys, ds["text_pair"], strict=True)]
    ranks = [split_rank(k, split_seed) for k in keys]
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, label in enumerate(ds["label"]):
        by_class[label].append(i)
    parts: dict[str, list[int]] = {"train": [], "validation": [], "test": []}
    for members in by_class.values():
        members.sort(key=lambda i: ranks[i])
        n_test = round(len(members) * test_fraction)
        n_val = round(len(members) * validation_fraction)
        parts["test"] += members[:n_test]
        parts["validation"] += members[n_test:n_test + n_val]
        parts["train"] += members[n_test + n_val:]
    return DatasetDict({name: ds.select(sorted(rows, key=lambda i: ranks[i])) for name, rows in parts.items()})
