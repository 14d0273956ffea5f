"""DIFM against its equations written out here: values and gradients on both computation paths, the
FM it reduces to when every factor is 1, dropout off in eval mode, and a few training steps."""
import pytest
import torch
from torch import nn

from ifm.models import DISPLAY_NAMES, MODELS, PRETRAINED_WITH_FM, build_model
from ifm.models.difm import DIFM
from ifm.models.fm import FM
from ifm.models.kernels import PerFeatureInputs, StackedInputs

H, K, N_FEATURES = 6, 8, 60


def batch(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 10, (n, H), generator=g) + torch.arange(H) * 10   # one feature per field


def randomised(model, std=0.3):
    """Every parameter random (w and the FM weights start at zero, which would hide bugs)."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * std)
    return model


def reference_factors(model: DIFM, x: torch.Tensor) -> torch.Tensor:
    """m_x = m_vec + m_bit from the equations, head by head and layer by layer, [batch, h]."""
    e = model.embedding.weight[x]                                   # E_x, [batch, h, k]
    d, att = model.head_size, model.attention
    heads = []
    for a in range(model.heads):
        rows = slice(a * d, (a + 1) * d)                            # head a's columns of W_Q, W_K, W_V
        q = torch.einsum("bik,dk->bid", e, att["query"].weight[rows])
        k = torch.einsum("bik,dk->bid", e, att["key"].weight[rows])
        v = torch.einsum("bik,dk->bid", e, att["value"].weight[rows])
        scores = torch.einsum("bid,bjd->bij", q, k) / d ** 0.5
        weights = torch.exp(scores) / torch.exp(scores).sum(dim=2, keepdim=True)
        heads.append(torch.einsum("bij,bjd->bid", weights, v))
    o = torch.cat(heads, dim=2)                                     # [head_1, ..., head_H], [batch, h, H d]
    if "residual" in att:
        o = o + torch.einsum("bik,ck->bic", e, att["residual"].weight)
    o = o.clamp(min=0)                                              # ReLU
    m_vec = torch.einsum("bf,if->bi", o.reshape(len(x), -1), model.P_vec.weight)
    z = e.reshape(len(x), -1)                                       # flatten(E_x)
    for layer in (m for m in model.bit if isinstance(m, nn.Linear)):
        z = (z @ layer.weight.T + layer.bias).clamp(min=0)
    return m_vec + z @ model.P_bit.weight.T


def reference_output(model: DIFM, x: torch.Tensor) -> torch.Tensor:
    """y = w0 + sum_i m_i w_i + sum_{i<j} <m_i v_i, m_j v_j>, with a double loop over the fields."""
    m = reference_factors(model, x)
    w = model.linear.weight.weight[x][..., 0]
    v = model.embedding.weight[x]
    y = model.linear.bias + (m * w).sum(dim=1)
    for i in range(H):
        for j in range(i + 1, H):
            y = y + m[:, i] * m[:, j] * (v[:, i] * v[:, j]).sum(dim=1)
    return y


CONFIGS = {"split heads, residual": {"attention_heads": 2},
           "own head size, no residual": {"attention_heads": 3, "attention_size": 5, "residual": False}}


@pytest.mark.parametrize("per_feature", [False, True], ids=["stacked", "per-feature"])
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_difm_is_its_equations_with_the_same_gradients(config, per_feature):
    torch.manual_seed(0)
    model = randomised(DIFM(N_FEATURES, H, K, hidden=(16, 8), **CONFIGS[config])).double()
    x = batch()
    assert model.use_feature_fields(x if per_feature else None) == per_feature
    assert isinstance(model.inputs(x), PerFeatureInputs if per_feature else StackedInputs)
    out, expected = model(x), reference_output(model, x)
    assert out.dtype == torch.float64 and out.shape == (len(x),)
    assert expected.std() > 0.1                                      # a function worth comparing
    assert torch.allclose(out, expected, rtol=1e-10, atol=1e-10)
    assert torch.allclose(model.factors(x), reference_factors(model, x), rtol=1e-10, atol=1e-10)
    g = torch.randn(len(x), dtype=torch.float64)
    params = [p for _, p in model.named_parameters()]
    ours = torch.autograd.grad((out * g).sum(), params)
    theirs = torch.autograd.grad((reference_output(model, x) * g).sum(), params)
    for (name, _), a, b in zip(model.named_parameters(), ours, theirs):
        assert b.abs().sum() > 0, f"the reference gives {name} no gradient"
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-10), name


def test_factors_are_one_per_field_and_depend_on_the_input():
    torch.manual_seed(1)
    model = randomised(DIFM(N_FEATURES, H, K, hidden=(16,))).double()
    x = batch(32)
    m = model.factors(x)
    assert m.shape == (32, H)
    assert torch.allclose(m, reference_factors(model, x), rtol=1e-10, atol=1e-10)
    assert (m.std(dim=0) > 1e-3).all()                              # not one weight per field for all rows


def test_difm_with_unit_factors_is_fm_on_the_same_parameters():
    torch.manual_seed(2)
    fm = randomised(FM(N_FEATURES, H, K)).double()
    difm = randomised(DIFM(N_FEATURES, H, K, hidden=(16, 8))).double()
    difm.load_state_dict(fm.fm_state(), strict=False)
    x = batch()
    assert not torch.allclose(difm(x), fm(x), atol=1e-3)             # the factors matter ...
    last = [m for m in difm.bit if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():                                            # ... until m_vec = 0 and m_bit = 1
        difm.P_vec.weight.zero_()
        last.weight.zero_()
        last.bias.fill_(1.0)                                         # MLP output: ReLU(1) = 1 in each unit
        difm.P_bit.weight.fill_(1.0 / last.out_features)
    assert torch.equal(difm.factors(x), torch.ones(len(x), H, dtype=torch.float64))
    assert torch.allclose(difm(x), fm(x), rtol=1e-12, atol=1e-12)
    assert torch.allclose(difm.forward_with_factors(x, torch.ones(len(x), H, dtype=torch.float64)), fm(x))


def test_dropout_is_random_in_training_and_off_in_eval():
    torch.manual_seed(3)
    model = randomised(DIFM(N_FEATURES, H, K, hidden=(32, 16), dropout=0.5))
    x = batch()
    model.train()
    assert not torch.allclose(model(x), model(x))                    # dropout is on while training
    model.eval()
    first = model(x)
    assert torch.equal(first, model(x))
    assert torch.allclose(first, reference_output(model, x), atol=1e-5)   # eval: the equations, no dropout


def test_difm_learns_a_small_problem():
    torch.manual_seed(4)
    x = batch(256, seed=4)
    y = ((x[:, 0] % 2 == 0) ^ (x[:, 1] % 3 == 0)).double()           # a rule on two fields' features
    model = DIFM(N_FEATURES, H, K, hidden=(16,)).double()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[1] < losses[0]
    assert losses[-1] < 0.8 * losses[0]


def test_regularized_is_the_weights_of_both_fens_and_their_projections():
    model = DIFM(N_FEATURES, H, K, hidden=(16, 8))
    expected = [model.attention[n].weight for n in ("query", "key", "value", "residual")]
    expected += [m.weight for m in model.bit if isinstance(m, nn.Linear)] + [model.P_vec.weight, model.P_bit.weight]
    assert {id(p) for p in model.regularized()} == {id(p) for p in expected}
    assert len(model.regularized()) == len(expected) == 8
    biases = {id(m.bias) for m in model.bit if isinstance(m, nn.Linear)}
    assert {id(p) for p in model.regularized(biases=True)} == {id(p) for p in expected} | biases
    assert not {id(p) for p in model.feature_parameters()} & {id(p) for p in model.regularized(biases=True)}


def test_defaults_registration_and_refusals():
    model = build_model("difm", N_FEATURES, H, K)
    assert isinstance(model, DIFM) and MODELS["difm"] is DIFM and DISPLAY_NAMES["difm"] == "DIFM"
    assert "difm" not in PRETRAINED_WITH_FM
    assert (model.heads, model.head_size) == (4, K // 4) and "residual" in model.attention
    assert [m.out_features for m in model.bit if isinstance(m, nn.Linear)] == [256, 128]
    assert model.P_vec.in_features == H * K and model.P_vec.bias is None and model.P_bit.bias is None
    with pytest.raises(ValueError, match="attention_size"):
        DIFM(N_FEATURES, H, 10)                                      # 4 heads do not split k = 10
    assert DIFM(N_FEATURES, H, 10, attention_size=3).P_vec.in_features == H * 4 * 3
    with pytest.raises(ValueError, match="hidden layer"):
        DIFM(N_FEATURES, H, K, hidden=())
