"""Each loss term against an independent float64 NumPy formula on hand-made tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kd_plugin.errors import ConfigError
from kd_plugin.losses import (
    LOSS_TERMS,
    DistillationOutputs,
    LossMixture,
    LossTerm,
    MixtureDeclaration,
    ModelDims,
)

BS, SEQ, VOC, DIM, LAYERS = 3, 5, 11, 8, 2
DIMS = ModelDims(student_hidden_size=DIM, teacher_hidden_size=DIM, student_layers=LAYERS, teacher_layers=4,
                 student_heads=2, teacher_heads=2)


def make_outputs(seed: int = 0, student_dim: int = DIM) -> DistillationOutputs:
    g = torch.Generator().manual_seed(seed)
    attention_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])  # (bs, seq_len)
    labels = torch.full((BS, SEQ), -100)
    labels[0, 1], labels[0, 3], labels[1, 2], labels[2, 0] = 4, 7, 1, 9
    s_hidden = tuple(torch.randn(BS, SEQ, student_dim, generator=g) for _ in range(LAYERS + 1))
    t_hidden = tuple(torch.randn(BS, SEQ, DIM, generator=g) for _ in range(4 + 1))
    s_att = tuple(torch.softmax(torch.randn(BS, 2, SEQ, SEQ, generator=g), -1) for _ in range(LAYERS))
    t_att = tuple(torch.softmax(torch.randn(BS, 2, SEQ, SEQ, generator=g), -1) for _ in range(4))
    return DistillationOutputs(
        student_logits=torch.randn(BS, SEQ, VOC, generator=g, requires_grad=True),
        teacher_logits=3 * torch.randn(BS, SEQ, VOC, generator=g),
        attention_mask=attention_mask,
        labels=labels,
        student_hidden_states=s_hidden,
        teacher_hidden_states=t_hidden,
        student_attentions=s_att,
        teacher_attentions=t_att,
    )


def np_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def rows_of(out: DistillationOutputs, which: str) -> list[tuple[int, int]]:
    if which == "tokens":
        mask = out.attention_mask.numpy()
    else:
        mask = (out.labels != -100).numpy()
    return [(b, i) for b in range(BS) for i in range(SEQ) if mask[b, i]]


def reference_kl(out, T, which):
    s, t = out.student_logits.detach().double().numpy(), out.teacher_logits.double().numpy()
    total = 0.0
    rows = rows_of(out, which)
    for b, i in rows:
        p_t, p_s = np_softmax(t[b, i] / T), np_softmax(s[b, i] / T)
        total += sum(p_t[v] * (np.log(p_t[v]) - np.log(p_s[v])) for v in range(VOC))
    return total / len(rows) * T**2


def build_term(name, temperature=1.0, dims=DIMS, **options) -> LossTerm:
    return LOSS_TERMS.get(name)(name, dims, temperature, **options)


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("rows", ["tokens", "masked"])
def test_soft_target_kl_matches_formula_with_T_squared(T, rows):
    out = make_outputs()
    got = build_term("ce", T, rows=rows)(out)
    assert got.item() == pytest.approx(reference_kl(out, T, rows), rel=1e-5)


def test_soft_target_T_squared_factor_is_applied():
    out = make_outputs()
    s, t = out.student_logits.detach() / 4.0, out.teacher_logits / 4.0
    rows = out.attention_mask.bool()
    plain_kl = torch.nn.KLDivLoss(reduction="batchmean")(torch.log_softmax(s[rows], -1), torch.softmax(t[rows], -1))
    assert build_term("ce", 4.0)(out).item() == pytest.approx(16 * plain_kl.item(), rel=1e-5)


def test_masked_only_rows_differ_from_all_tokens():
    out = make_outputs()
    assert build_term("ce", 2.0, rows="masked")(out).item() != pytest.approx(build_term("ce", 2.0)(out).item())


def test_mlm_is_cross_entropy_on_masked_positions():
    out = make_outputs()
    s = out.student_logits.detach().double().numpy()
    rows = rows_of(out, "masked")
    expected = np.mean([-np.log(np_softmax(s[b, i])[out.labels[b, i].item()]) for b, i in rows])
    assert build_term("mlm")(out).item() == pytest.approx(expected, rel=1e-5)


def test_logit_mse_is_vocab_sum_over_rows_like_distiller():
    out = make_outputs()
    s, t = out.student_logits.detach().double().numpy(), out.teacher_logits.double().numpy()
    for which in ("tokens", "masked"):
        rows = rows_of(out, which)
        expected = sum(((s[b, i] - t[b, i]) ** 2).sum() for b, i in rows) / len(rows)
        assert build_term("mse", rows=which)(out).item() == pytest.approx(expected, rel=1e-5)


def np_cos_loss(out, s_layer, t_layer):
    rows = rows_of(out, "tokens")
    vals = []
    for b, i in rows:
        u = out.student_hidden_states[s_layer][b, i].double().numpy()
        v = out.teacher_hidden_states[t_layer][b, i].double().numpy()
        vals.append(1 - u @ v / np.linalg.norm(u) / np.linalg.norm(v))
    return np.mean(vals)


def test_cosine_last_layer_over_real_tokens():
    out = make_outputs()
    assert build_term("cos")(out).item() == pytest.approx(np_cos_loss(out, LAYERS, 4), rel=1e-5)


def test_cosine_declared_layer_pairs_average():
    out = make_outputs()
    expected = (np_cos_loss(out, 1, 2) + np_cos_loss(out, 2, 4)) / 2
    assert build_term("cos", layers=[[1, 2], [2, 4]])(out).item() == pytest.approx(expected, rel=1e-5)


def test_cosine_is_zero_for_identical_directions():
    out = make_outputs()
    same = DistillationOutputs(
        out.student_logits, out.teacher_logits, out.attention_mask, out.labels,
        student_hidden_states=tuple(2.5 * h for h in out.teacher_hidden_states[:LAYERS + 1]),
        teacher_hidden_states=out.teacher_hidden_states[:LAYERS + 1],
    )
    assert build_term("cos", dims=ModelDims(DIM, DIM, LAYERS, LAYERS))(same).item() == pytest.approx(0, abs=1e-6)


def test_hidden_mse_uniform_mapping():
    out = make_outputs()
    rows = rows_of(out, "tokens")
    pairs = [(0, 0), (1, 2), (2, 4)]
    expected = np.mean([
        np.mean([((out.student_hidden_states[s][b, i] - out.teacher_hidden_states[t][b, i]).double().numpy() ** 2)
                 .mean() for b, i in rows])
        for s, t in pairs
    ])
    term = build_term("hidden_mse", layers="uniform")
    assert term.pairs == pairs
    assert term(out).item() == pytest.approx(expected, rel=1e-5)


def test_attention_kl_matches_formula():
    out = make_outputs()
    rows = rows_of(out, "tokens")
    a_s = out.student_attentions[LAYERS - 1].double().numpy()
    a_t = out.teacher_attentions[3].double().numpy()
    expected = np.mean([
        (a_t[b, h, i] * (np.log(a_t[b, h, i]) - np.log(a_s[b, h, i]))).sum() for b, i in rows for h in range(2)
    ])
    assert build_term("attention_kl")(out).item() == pytest.approx(expected, rel=1e-4)


def test_projection_makes_different_widths_comparable_and_is_trainable():
    out = make_outputs(student_dim=6)
    dims = ModelDims(6, DIM, LAYERS, 4)
    term = build_term("cos", dims=dims, projection="linear")
    loss = term(out)
    loss.backward()
    assert term.projections[0].weight.grad is not None and term.projections[0].weight.grad.abs().sum() > 0


def test_projection_cast_to_bf16_by_the_engine_takes_fp32_hidden_states():
    """DeepSpeed's bf16/fp16 engines cast the mixture's projection: the term projects in that dtype."""
    out = make_outputs(student_dim=6)
    term = build_term("cos", dims=ModelDims(6, DIM, LAYERS, 4), projection="linear")
    reference = term(out).item()
    term.to(torch.bfloat16)  # what the engine does to every module it wraps
    loss = term(out)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference, abs=2e-2)  # bf16 rounding of the projection only


def test_mixture_returns_each_weighted_term_and_the_total():
    out = make_outputs()
    decl = MixtureDeclaration(weights={"ce": 5.0, "mlm": 2.0, "cos": 1.0, "mse": 0.0}, temperature=2.0)
    mixture = LossMixture(decl, DIMS)
    losses = mixture(out)
    assert set(losses) == {"loss_ce", "loss_mlm", "loss_cos", "loss"}  # zero-weight term not built
    assert losses["loss_ce"].item() == pytest.approx(5.0 * reference_kl(out, 2.0, "tokens"), rel=1e-5)
    assert losses["loss_cos"].item() == pytest.approx(np_cos_loss(out, LAYERS, 4), rel=1e-5)
    total = losses["loss_ce"] + losses["loss_mlm"] + losses["loss_cos"]
    assert losses["loss"].item() == pytest.approx(total.item(), rel=1e-6)
    assert mixture.needs == {"hidden_states"}


def test_gradients_flow_only_into_the_student():
    teacher_logits = torch.randn(BS, SEQ, VOC, requires_grad=True)
    out = make_outputs()
    t_hidden = tuple(h.clone().requires_grad_(True) for h in out.teacher_hidden_states)
    s_hidden = tuple(h.clone().requires_grad_(True) for h in out.student_hidden_states)
    # The trainer runs the teacher under no_grad; emulate that and check no graph reaches the teacher.
    with torch.no_grad():
        t_logits = teacher_logits * 1.0
        t_hidden_ng = tuple(h * 1.0 for h in t_hidden)
    mixed = DistillationOutputs(out.student_logits, t_logits, out.attention_mask, out.labels,
                                student_hidden_states=s_hidden, teacher_hidden_states=t_hidden_ng)
    decl = MixtureDeclaration(weights={"ce": 1.0, "mlm": 1.0, "cos": 1.0, "mse": 1.0}, temperature=2.0)
    LossMixture(decl, DIMS)(mixed)["loss"].backward()
    assert out.student_logits.grad is not None and out.student_logits.grad.abs().sum() > 0
    assert s_hidden[LAYERS].grad is not None
    assert teacher_logits.grad is None and all(h.grad is None for h in t_hidden)


@pytest.mark.parametrize(
    "declaration, key, allowed",
    [
        (dict(weights={"kl": 1.0}), "loss_weights.kl", "ce"),
        (dict(weights={"ce": -1.0}), "loss_weights.ce", ">= 0"),
        (dict(weights={"ce": -1.0}, weight_keys={"ce": "alpha_ce"}), "alpha_ce", ">= 0"),
        (dict(weights={"ce": 0.0, "mlm": 0.0}), "loss_weights", "at least one > 0"),
        (dict(weights={"ce": 1.0}, temperature=0.0), "T", "T > 0"),
        (dict(weights={"ce": 1.0}, temperature=-2.0), "T", "T > 0"),
        (dict(weights={"ce": 1.0}, options={"ce": {"rows": "all"}}), "loss_options.ce.rows", "masked"),
        (dict(weights={"cos": 1.0}, options={"cos": {"layers": [[9, 1]]}}), "loss_options.cos.layers", "0..2"),
        (dict(weights={"cos": 1.0}, options={"cos": {"layers": [[1.7, 1]]}}), "loss_options.cos.layers", "two ints"),
        (dict(weights={"mlm": 1.0}, options={"mlm": {"foo": 1}}), "loss_options.mlm.foo", "no options"),
        (dict(weights={"ce": 1.0}, options={"ce": {"row": "masked"}}), "loss_options.ce.row", "rows"),
        (dict(weights={"cos": 1.0}, options={"cos": {"layers": 3}}), "loss_options.cos", "layers"),
    ],
)
def test_bad_declarations_raise_clear_errors(declaration, key, allowed):
    with pytest.raises(ConfigError) as err:
        LossMixture(MixtureDeclaration(**declaration), DIMS)
    assert err.value.key == key
    assert str(err.value).startswith(key) and allowed in str(err.value) and "allowed" in str(err.value)


def test_cos_between_different_widths_without_projection_is_rejected():
    with pytest.raises(ConfigError, match=r"loss_options.cos.projection: student hidden size 6 != teacher"):
        LossMixture(MixtureDeclaration(weights={"cos": 1.0}), ModelDims(6, DIM, LAYERS, 4))


@pytest.fixture
def scratch_term():
    yield "test_l1_logits"
    LOSS_TERMS._items.pop("test_l1_logits", None)  # keep the global registry as the other tests expect it


def test_registering_a_new_term_needs_no_other_change(scratch_term):
    @LOSS_TERMS.register(scratch_term)
    class L1Logits(LossTerm):
        def forward(self, outputs):
            rows = outputs.token_mask
            return (outputs.student_logits[rows] - outputs.teacher_logits[rows]).abs().mean()

    out = make_outputs()
    losses = LossMixture(MixtureDeclaration(weights={"test_l1_logits": 0.5}), DIMS)(out)
    rows = out.attention_mask.bool()
    expected = 0.5 * (out.student_logits[rows] - out.teacher_logits[rows]).abs().mean()
    assert losses["loss_test_l1_logits"].item() == pytest.approx(expected.item())
