"""Dynamic masking, checked statistically on tiny synthetic batches.

Tolerances are 5 standard errors of a binomial proportion, sqrt(p (1 - p) / n): a correct implementation fails
one check with probability ~6e-7 (and the draws are seeded, so the suite is deterministic anyway). Sampling
positions without replacement has a variance no larger than the binomial one, so the bound is conservative.
"""

from __future__ import annotations

import math

import pytest
import torch

from kd_plugin.errors import ConfigError
from kd_plugin.masking import IGNORE_INDEX, DynamicMasker, MaskingConfig, count_tokens

VOCAB_SIZE = 50
PAD, CLS, SEP, MASK, UNK = 0, 1, 2, 3, 4
SPECIAL_IDS = (PAD, CLS, SEP, MASK, UNK)
N_NON_SPECIAL = VOCAB_SIZE - len(SPECIAL_IDS)  # 45


def make_masker(
    config: MaskingConfig | None = None, token_counts: torch.Tensor | None = None
) -> DynamicMasker:
    return DynamicMasker(config or MaskingConfig(), VOCAB_SIZE, MASK, PAD, SPECIAL_IDS, token_counts)


def make_batch(
    data_gen: torch.Generator, bs: int = 16, seq_len: int = 64, garbage_padding: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS] tokens (with a few [UNK]) [SEP] [PAD]..., random lengths in [4, seq_len]."""
    ids = torch.randint(len(SPECIAL_IDS), VOCAB_SIZE, (bs, seq_len), generator=data_gen)  # (bs, seq_len)
    unk = torch.rand(bs, seq_len, generator=data_gen) < 0.05  # (bs, seq_len)
    ids[unk] = UNK
    lengths = torch.randint(4, seq_len + 1, (bs,), generator=data_gen)  # (bs,)
    positions = torch.arange(seq_len)  # (seq_len,)
    attention_mask = (positions[None, :] < lengths[:, None]).long()  # (bs, seq_len)
    ids[:, 0] = CLS
    ids[torch.arange(bs), lengths - 1] = SEP
    if (
        not garbage_padding
    ):  # otherwise: ordinary ids under attention_mask == 0, which must not be selected either
        ids[attention_mask == 0] = PAD
    return ids, attention_mask


def real_tokens(ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    return attention_mask.bool() & (ids >= len(SPECIAL_IDS))  # (bs, seq_len)


def five_se(p: float, n: int) -> float:
    return 5 * math.sqrt(p * (1 - p) / n)


def test_selection_rate_and_80_10_10_split():
    masker = make_masker()  # no counts: uniform over real tokens
    data_gen, mask_gen = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    n_batches = 300
    n_real = n_selected = n_masked = n_unchanged = n_random_changed = 0
    real_per_id = torch.zeros(VOCAB_SIZE, dtype=torch.long)
    selected_per_id = torch.zeros(VOCAB_SIZE, dtype=torch.long)
    for _ in range(n_batches):
        ids, attention_mask = make_batch(data_gen)
        masked, labels = masker.mask(ids, attention_mask, mask_gen)
        real = real_tokens(ids, attention_mask)  # (bs, seq_len)
        selected = labels != IGNORE_INDEX  # (bs, seq_len)
        batch_real = int(real.sum())
        assert int(selected.sum()) == (15 * batch_real + 99) // 100  # ceil(0.15 * n_real), in integers
        n_real += batch_real
        n_selected += int(selected.sum())
        out, orig = masked[selected], ids[selected]  # (n_tgt,)
        n_masked += int((out == MASK).sum())
        n_unchanged += int((out == orig).sum())
        n_random_changed += int(((out != MASK) & (out != orig)).sum())
        real_per_id += torch.bincount(ids[real], minlength=VOCAB_SIZE)
        selected_per_id += torch.bincount(orig, minlength=VOCAB_SIZE)

    # The count per batch is deterministic; the ceil adds less than one token per batch.
    rate = n_selected / n_real
    assert 0.15 <= rate < 0.15 + n_batches / n_real

    # Without counts every real token id is selected at the same rate.
    for token_id in range(len(SPECIAL_IDS), VOCAB_SIZE):
        id_rate = int(selected_per_id[token_id]) / int(real_per_id[token_id])
        assert abs(id_rate - rate) < five_se(rate, int(real_per_id[token_id])), token_id

    # Split of selected positions. A random replacement draws the original id with probability 1/45, so the
    # output is unchanged at rate keep + random / 45, and "replaced by another id" at random * 44 / 45.
    expected = {
        "masked": (n_masked, 0.8),
        "unchanged": (n_unchanged, 0.1 + 0.1 / N_NON_SPECIAL),
        "random changed": (n_random_changed, 0.1 * (N_NON_SPECIAL - 1) / N_NON_SPECIAL),
    }
    for name, (count, p) in expected.items():  # n_selected ~ 25k: 5 SE ~ 0.013 for 0.8, ~ 0.010 for 0.1
        assert abs(count / n_selected - p) < five_se(p, n_selected), name


@pytest.mark.parametrize("garbage_padding", [False, True])
def test_only_real_tokens_selected_and_nothing_else_changed(garbage_padding):
    masker = make_masker()
    data_gen, mask_gen = torch.Generator().manual_seed(2), torch.Generator().manual_seed(3)
    for _ in range(50):
        ids, attention_mask = make_batch(data_gen, garbage_padding=garbage_padding)
        ids_before = ids.clone()
        masked, labels = masker.mask(ids, attention_mask, mask_gen)
        selected = labels != IGNORE_INDEX  # (bs, seq_len)

        assert torch.equal(ids, ids_before)  # input not mutated
        assert not selected[~real_tokens(ids, attention_mask)].any()  # never special, pad or attention 0
        assert torch.equal(labels[selected], ids[selected])
        assert (labels[~selected] == IGNORE_INDEX).all()
        assert torch.equal(masked[~selected], ids[~selected])
        assert masked.shape == labels.shape == ids.shape and masked.dtype == labels.dtype == torch.long


def test_batch_without_real_tokens_is_returned_unchanged():
    ids = torch.tensor([[CLS, SEP, PAD, PAD], [CLS, UNK, SEP, PAD]])  # (2, 4)
    masked, labels = make_masker().mask(ids, (ids != PAD).long(), torch.Generator().manual_seed(0))
    assert torch.equal(masked, ids)
    assert (labels == IGNORE_INDEX).all()


def test_same_seed_same_output_different_seed_different_output():
    masker = make_masker()
    ids, attention_mask = make_batch(torch.Generator().manual_seed(4))

    def draw(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return masker.mask(ids, attention_mask, torch.Generator().manual_seed(seed))

    first, again, other = draw(7), draw(7), draw(8)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])  # ~80 of ~500 positions: a collision is practically impossible


def test_smoothing_favours_rare_tokens():
    a, b = 10, 11
    counts = count_tokens([[a] * 100 + [b]] * 1000, VOCAB_SIZE)  # a is 100x more frequent than b
    assert int(counts[a]) == 100 * int(counts[b]) == 100_000
    bs, seq_len = 64, 128
    ids = torch.full((bs, seq_len), a)  # (bs, seq_len): [CLS] a ... b ... a [SEP], one b per row
    ids[:, 0], ids[:, -1], ids[:, seq_len // 2] = CLS, SEP, b
    attention_mask = torch.ones_like(ids)  # (bs, seq_len)
    n_b = bs
    n_a = bs * (seq_len - 3)

    def selection_counts(config: MaskingConfig, n_batches: int) -> tuple[int, int]:
        masker, gen = make_masker(config, counts), torch.Generator().manual_seed(5)
        k_a = k_b = 0
        for _ in range(n_batches):
            _, labels = masker.mask(ids, attention_mask, gen)
            k_a += int((labels == a).sum())
            k_b += int((labels == b).sum())
        return k_a, k_b

    def five_se_of_log_ratio(k_a: int, k_b: int) -> float:  # delta method on two binomial proportions
        return 5 * math.sqrt(1 / k_a + 1 / k_b)

    # Smoothing 0.7: per-occurrence rate of b over a = w(b) / w(a) = 100 ** 0.7 ~= 25.1 as long as each position's
    # chance is small. With mlm_probability 0.001 there are n_tgt = 9 draws, b's chance per draw is
    # q ~= 25.1 / 9600 ~= 0.0026, and drawing without replacement biases the ratio by about -(n_tgt - 1) q / 2
    # ~= -1 %, far inside the tolerance (k_b ~ 2900, k_a ~ 15000: 5 SE of the log ratio ~= 0.10).
    k_a, k_b = selection_counts(MaskingConfig(mlm_probability=0.001, smoothing=0.7), n_batches=2000)
    log_ratio = math.log((k_b / n_b) / (k_a / n_a))
    assert abs(log_ratio - 0.7 * math.log(100)) < five_se_of_log_ratio(k_a, k_b)

    # Smoothing 0: every real token has the same weight, so the rates are equal at any mlm_probability; 0.15 gives
    # enough selections of b (k_b ~ 2900, 5 SE of the log ratio ~= 0.09).
    k_a, k_b = selection_counts(MaskingConfig(mlm_probability=0.15, smoothing=0.0), n_batches=300)
    log_ratio = math.log((k_b / n_b) / (k_a / n_a))
    assert abs(log_ratio) < five_se_of_log_ratio(k_a, k_b)


def test_random_replacements_are_never_special():
    config = MaskingConfig(mask_fraction=0.0, random_fraction=1.0, keep_fraction=0.0)
    masker = make_masker(config)
    data_gen, mask_gen = torch.Generator().manual_seed(6), torch.Generator().manual_seed(7)
    replaced = []
    n_same = 0
    for _ in range(100):
        ids, attention_mask = make_batch(data_gen)
        masked, labels = masker.mask(ids, attention_mask, mask_gen)
        selected = labels != IGNORE_INDEX  # (bs, seq_len)
        replaced.append(masked[selected])
        n_same += int((masked[selected] == ids[selected]).sum())
    replaced_ids = torch.cat(replaced)  # (n_selected,)
    n_selected = len(replaced_ids)

    assert not (replaced_ids < len(SPECIAL_IDS)).any()
    assert set(replaced_ids.tolist()) == set(range(len(SPECIAL_IDS), VOCAB_SIZE))  # ~180 draws per id
    # Uniform over the 45 non-special ids: the original id comes back 1/45 of the time (n ~ 8000: 5 SE ~= 0.008).
    assert abs(n_same / n_selected - 1 / N_NON_SPECIAL) < five_se(1 / N_NON_SPECIAL, n_selected)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"mlm_probability": 0.0}, "masking.mlm_probability"),
        ({"mlm_probability": -0.1}, "masking.mlm_probability"),
        ({"mlm_probability": 1.5}, "masking.mlm_probability"),
        ({"mlm_probability": float("nan")}, "masking.mlm_probability"),
        ({"mask_fraction": -0.1, "random_fraction": 0.6, "keep_fraction": 0.5}, "masking.mask_fraction"),
        ({"mask_fraction": 0.0, "random_fraction": 1.2, "keep_fraction": -0.2}, "masking.random_fraction"),
        ({"mask_fraction": 0.0, "random_fraction": 0.0, "keep_fraction": 1.5}, "masking.keep_fraction"),
        ({"mask_fraction": 0.8, "random_fraction": 0.1, "keep_fraction": 0.2}, "masking.keep_fraction"),
        ({"mask_fraction": 0.5}, "masking.mask_fraction"),
        ({"smoothing": -0.5}, "masking.smoothing"),
        ({"smoothing": float("inf")}, "masking.smoothing"),
    ],
)
def test_invalid_config_raises_config_error(overrides, key):
    with pytest.raises(ConfigError) as raised:
        MaskingConfig(**overrides).validate()
    assert key in str(raised.value) and "allowed" in str(raised.value)
    with pytest.raises(ConfigError):
        make_masker(MaskingConfig(**overrides))  # the masker validates its config


def test_fraction_sum_within_tolerance_is_valid():
    MaskingConfig(mask_fraction=0.8, random_fraction=0.1, keep_fraction=0.1 + 5e-7).validate()


@pytest.mark.parametrize(
    ("build", "key"),
    [
        (lambda: DynamicMasker(MaskingConfig(), 1, 0, 0, []), "masking.vocab_size"),
        (
            lambda: DynamicMasker(MaskingConfig(), VOCAB_SIZE, MASK, PAD, [VOCAB_SIZE]),
            "masking.special_token_ids",
        ),
        (lambda: DynamicMasker(MaskingConfig(), 3, 1, 0, [2]), "masking.special_token_ids"),
        (lambda: make_masker(token_counts=torch.ones(VOCAB_SIZE + 1)), "masking.token_counts"),
        (lambda: make_masker(token_counts=-torch.ones(VOCAB_SIZE)), "masking.token_counts"),
        (
            lambda: make_masker().mask(torch.ones(4, dtype=torch.long), torch.ones(4), torch.Generator()),
            "masking.input_ids",
        ),
        (
            lambda: make_masker().mask(
                torch.ones(2, 3, dtype=torch.long), torch.ones(2, 4), torch.Generator()
            ),
            "masking.input_ids",
        ),
        (
            lambda: make_masker().mask(torch.full((2, 3), VOCAB_SIZE), torch.ones(2, 3), torch.Generator()),
            "masking.input_ids",
        ),
        (lambda: count_tokens([[1, 2, VOCAB_SIZE]], VOCAB_SIZE), "masking.vocab_size"),
    ],
)
def test_invalid_inputs_raise_config_error(build, key):
    with pytest.raises(ConfigError) as raised:
        build()
    assert key in str(raised.value) and "allowed" in str(raised.value)


def test_count_tokens_accepts_lists_and_tensors():
    counts = count_tokens([[5, 5, 6], torch.tensor([[6, 7], [PAD, PAD]]), []], VOCAB_SIZE)
    assert counts.shape == (VOCAB_SIZE,) and counts.dtype == torch.long
    assert counts[[PAD, 5, 6, 7]].tolist() == [2, 2, 2, 1]
    assert int(counts.sum()) == 7
