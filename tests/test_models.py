"""The models against the paper's equations: linear-time FM, IFM's factors, shapes and gradients."""
import pytest
import torch

from ifm.models import MODELS, build_model
from ifm.models.ifm import IFM
from ifm.models.fm import FM
from ifm.models.equations import fm_interaction, fm_interaction_quadratic, weighted_fm_interaction_reference
from ifm.models.kernels import PerFeatureInputs, StackedInputs, _GatherRows, weighted_fm_interaction

H, K, N_FEATURES = 6, 8, 60


def batch(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 10, (n, H), generator=g) + torch.arange(H) * 10   # one feature per field


def fm_eq1(model: FM, x: torch.Tensor) -> torch.Tensor:
    """Eq. 1 literally: w0 + sum_i w_i + sum_{i<j} <v_i, v_j>, with a double Python loop."""
    out = []
    for row in x.tolist():
        total = model.linear.bias.item() + sum(model.linear.weight.weight[i].item() for i in row)
        for a in range(len(row)):
            for b in range(a + 1, len(row)):
                total += torch.dot(model.embedding.weight[row[a]], model.embedding.weight[row[b]]).item()
        out.append(total)
    return torch.tensor(out)


def randomised(model):
    """Give every parameter a random value (FM weights start at zero, which would hide bugs)."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return model


def test_linear_time_interaction_equals_quadratic_form():
    v = torch.randn(16, H, K, dtype=torch.float64)
    assert torch.allclose(fm_interaction(v), fm_interaction_quadratic(v))


def test_fm_forward_equals_eq1():
    torch.manual_seed(0)
    model = randomised(FM(N_FEATURES, H, K))
    x = batch(8)
    assert torch.allclose(model(x), fm_eq1(model, x), atol=1e-4)


def test_weighted_interaction_equals_interaction_of_reweighted_embeddings():
    v = torch.randn(16, H, K, dtype=torch.float64)
    m = torch.rand(16, H, dtype=torch.float64) * 3
    assert torch.allclose(weighted_fm_interaction(v, m), weighted_fm_interaction_reference(v, m))


def test_ifm_with_unit_factors_is_fm_on_the_same_parameters():
    torch.manual_seed(0)
    fm = randomised(FM(N_FEATURES, H, K))
    ifm = IFM(N_FEATURES, H, K, fen_layers=2, fen_width=16, dropout=0.0)
    ifm.load_state_dict(fm.fm_state(), strict=False)
    x = batch()
    assert torch.allclose(ifm.forward_with_factors(x, torch.ones(len(x), H)), fm(x), atol=1e-5)
    # ...and with the FEN's own factors it is a different function.
    randomised(ifm.fen)
    assert not torch.allclose(ifm(x), fm(x), atol=1e-3)


@pytest.mark.parametrize("layers", [0, 1, 3])
def test_factors_are_positive_and_sum_to_h(layers):
    torch.manual_seed(0)
    ifm = randomised(IFM(N_FEATURES, H, K, fen_layers=layers, fen_width=16, dropout=0.0)).eval()
    m = ifm.factors(batch())
    assert m.shape == (32, H)
    assert (m > 0).all()
    assert torch.allclose(m.sum(dim=1), torch.full((32,), float(H)), atol=1e-4)
    assert m.std() > 0.01          # random parameters give factors that differ from 1


def test_ifm_reweights_both_weights_and_embeddings():
    """Eq. 6: w_x,i = m_x,i w_i and v_x,i = m_x,i v_i, then Eq. 3 on them."""
    torch.manual_seed(1)
    ifm = randomised(IFM(N_FEATURES, H, K, fen_layers=1, fen_width=16, dropout=0.0)).eval()
    x = batch(4)
    m = ifm.factors(x)
    w = ifm.linear.weight.weight[x].squeeze(-1) * m
    v = ifm.embedding.weight[x] * m.unsqueeze(-1)
    expected = ifm.linear.bias + w.sum(1) + fm_interaction_quadratic(v)
    assert torch.allclose(ifm(x), expected, atol=1e-4)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("sparse", [False, True])
def test_every_model_gives_one_output_per_instance_and_gradients_reach_all_parameters(name, sparse):
    torch.manual_seed(0)
    model = build_model(name, N_FEATURES, H, K, sparse=sparse)
    randomised(model).train()
    out = model(batch())
    assert out.shape == (32,)
    out.square().sum().backward()
    for param_name, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {param_name}"
        grad = p.grad.to_dense() if p.grad.is_sparse else p.grad
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, f"{name}: zero gradient for {param_name}"


def test_dense_row_gradient_matches_torch_embedding():
    table = torch.randn(20, 4, requires_grad=True)
    x = torch.randint(0, 20, (50, 3))
    grad_out = torch.randn(50, 3, 4)
    (_GatherRows.apply(table, x) * grad_out).sum().backward()
    ours = table.grad.clone()
    table.grad = None
    (torch.nn.functional.embedding(x, table) * grad_out).sum().backward()
    assert torch.allclose(ours, table.grad, atol=1e-6)


def test_unknown_model_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="ifm"):
        build_model("xdeepfm", N_FEATURES, H, K)


def test_weighted_interaction_gradients_match_finite_differences():
    v = torch.randn(5, 4, 3, dtype=torch.float64, requires_grad=True)
    m = torch.rand(5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(weighted_fm_interaction, (v, m))


def test_dropout_drops_at_its_rate_keeps_the_mean_and_is_off_in_eval():
    from ifm.models.kernels import Dropout
    torch.manual_seed(0)
    layer = Dropout(0.3)
    x = torch.ones(400, 500)
    out = layer(x)
    assert abs((out == 0).float().mean().item() - 0.3) < 0.005
    assert abs(out.mean().item() - 1.0) < 0.01
    assert torch.equal(layer.eval()(x), x)
    with pytest.raises(ValueError):
        Dropout(1.0)


@pytest.mark.parametrize("name", ["ifm", "deepfm", "wide_deep"])
def test_per_feature_path_is_the_same_function_with_the_same_gradients(name):
    torch.manual_seed(0)
    options = {"fen_width": 16, "dropout": 0.0} if name == "ifm" else {"hidden": (16, 8), "dropout": 0.0}
    general = randomised(build_model(name, N_FEATURES, H, K, **options))
    fast = build_model(name, N_FEATURES, H, K, **options)
    fast.load_state_dict(general.state_dict())
    x = batch(64)
    assert fast.use_feature_fields(x) and isinstance(fast.inputs(x), PerFeatureInputs)
    if name == "ifm":
        assert torch.allclose(fast.factors(x), general.factors(x), atol=1e-5)
    out_fast, out_general = fast(x), general(x)
    assert torch.allclose(out_fast, out_general, atol=1e-4)
    out_fast.square().sum().backward()
    out_general.square().sum().backward()
    for (param, a), b in zip(fast.named_parameters(), general.parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-4), param
    # A small batch (fewer stacked rows than features) takes the general path.
    assert isinstance(fast.inputs(x[:2]), StackedInputs)


def test_per_feature_path_declines_shared_ids_sparse_tables_and_models_without_an_mlp():
    shared = torch.randint(0, 10, (32, H))          # the same ids in every field
    assert not IFM(N_FEATURES, H, K, fen_width=16).use_feature_fields(shared)
    assert not IFM(N_FEATURES, H, K, fen_width=16, sparse=True).use_feature_fields(batch())
    assert not FM(N_FEATURES, H, K).use_feature_fields(batch())


@pytest.mark.parametrize("dropped", [False, True], ids=["all weights", "weights dropped out"])
@pytest.mark.parametrize("attention_factor", [4, 9], ids=["hidden-kept (t<=k)", "hidden-recomputed (t>k)"])
def test_afm_attention_pooling_is_the_plain_formula_with_its_gradients(monkeypatch, attention_factor, dropped):
    """The chunked hand-written backward of AFM's attention pooling against plain autograd, on both
    of its paths (the hidden layer kept where t <= k, recomputed where it is wider), with and
    without a dropout mask on the attention weights, with chunks that do not divide the batch, and
    against finite differences."""
    from ifm.models import afm

    monkeypatch.setattr(afm, "_chunk_size", lambda v, t: 7)
    torch.manual_seed(0)
    args = [torch.randn(30, 6, 5, dtype=torch.float64, requires_grad=True),
            torch.randn(attention_factor, 5, dtype=torch.float64, requires_grad=True),
            torch.randn(attention_factor, dtype=torch.float64, requires_grad=True),
            torch.randn(attention_factor, dtype=torch.float64, requires_grad=True)]
    keep = (torch.rand(30, 15) > 0.3).double() / 0.7 if dropped else None
    ours, plain = afm.attention_pooling(*args, keep), afm.attention_pooling_reference(*args, keep)
    assert torch.allclose(ours, plain)
    weights = torch.randn_like(ours)
    for g_ours, g_plain in zip(torch.autograd.grad(ours, args, weights), torch.autograd.grad(plain, args, weights)):
        assert torch.allclose(g_ours, g_plain)
    assert torch.autograd.gradcheck(afm.attention_pooling, [a[:9].detach().requires_grad_() if a.dim() == 3 else a
                                                            for a in args] + [None if keep is None else keep[:9]])


def test_afm_pools_in_cache_sized_chunks_on_a_cpu_and_in_one_chunk_elsewhere():
    """On a CPU the chunk's widest tensor (the pair products, k wide, or the attention net's hidden
    layer, t wide) stays near 2**20 numbers; on an accelerator (a meta tensor stands in for one)
    the whole batch is one chunk, so a step launches each kernel once."""
    from ifm.models import afm

    cpu = torch.empty(2048, 10, 256)
    assert afm._chunk_size(cpu, 16) == afm._chunk_size(cpu) == (1 << 20) // (45 * 256)     # the paper: k = 256 wider
    assert afm._chunk_size(torch.empty(4096, 10, 10), 128) == (1 << 20) // (45 * 128)      # BARS: t = 128 wider
    assert afm._chunk_size(torch.empty(2048, 10, 256, device="meta"), 16) == 2048
    assert afm._chunk_size(torch.empty(3, 2, 4)) == (1 << 20) // 4     # more than the batch: one chunk


@pytest.mark.parametrize("attention_factor", [2, 6], ids=["hidden-kept (t<=k)", "hidden-recomputed (t>k)"])
def test_afm_pooling_with_frozen_embeddings_gives_the_attention_net_the_same_gradients(monkeypatch, attention_factor):
    """Table 2 freezes v: the backward then skips d/dv, and W, b, h get the plain formula's gradients."""
    from ifm.models import afm

    monkeypatch.setattr(afm, "_chunk_size", lambda v, t: 4)
    torch.manual_seed(1)
    v = torch.randn(10, 5, 3, dtype=torch.float64)                    # frozen: no gradient asked
    net = [torch.randn(attention_factor, 3, dtype=torch.float64, requires_grad=True),
           torch.randn(attention_factor, dtype=torch.float64, requires_grad=True),
           torch.randn(attention_factor, dtype=torch.float64, requires_grad=True)]
    weights = torch.randn(10, 3, dtype=torch.float64)
    ours = torch.autograd.grad((afm.attention_pooling(v, *net) * weights).sum(), net)
    plain = torch.autograd.grad((afm.attention_pooling_reference(v, *net) * weights).sum(), net)
    for g_ours, g_plain in zip(ours, plain):
        assert torch.allclose(g_ours, g_plain)


def afm_eq5(model, x: torch.Tensor, keep=None) -> torch.Tensor:
    """AFM's Eq. 5 literally, one instance and one pair at a time: w0 + sum_i w_i
    + p^T sum_{i<j} a_ij (v_i * v_j), a_ij = softmax over the pairs of h^T ReLU(W (v_i * v_j) + b);
    `keep` [batch, pairs] multiplies a_ij (FuxiCTR's dropout of the attention weights)."""
    out = []
    for n, row in enumerate(x.tolist()):
        v = [model.embedding.weight[f] for f in row]
        products = [v[i] * v[j] for i in range(len(row)) for j in range(i + 1, len(row))]
        scores = torch.stack([model.attention_h.weight[0] @ torch.relu(model.attention.weight @ e + model.attention.bias)
                              for e in products])
        a = torch.softmax(scores, dim=0) * (1 if keep is None else keep[n])
        pooled = sum(a_p * e for a_p, e in zip(a, products))
        out.append(model.linear.bias + sum(model.linear.weight.weight[f, 0] for f in row) + model.p.weight[0] @ pooled)
    return torch.stack(out)


@pytest.mark.parametrize("weight_dropout", [0.0, 0.5], ids=["eval", "weights dropped out (training)"])
@pytest.mark.parametrize("chunk", [5, None], ids=["cpu-chunks", "one-chunk (accelerator)"])
@pytest.mark.parametrize("attention_factor", [3, 16], ids=["hidden-kept (t<=k)", "hidden-recomputed (t>k)"])
def test_afm_is_eq5_with_its_gradients_on_both_paths(monkeypatch, attention_factor, chunk, weight_dropout):
    """The AFM model against Eq. 5 written out above, outputs and every parameter's gradient,
    through the chunked CPU path and the one-chunk path an accelerator takes; in training with
    FuxiCTR's dropout of the attention weights, against Eq. 5 with the same mask (drawn first,
    from the same seed, as inverted dropout of ones: 0 or 1/(1-q))."""
    from ifm.models import afm
    from ifm.models.afm import AFM

    monkeypatch.setattr(afm, "_chunk_size", lambda v, t: chunk or v.shape[0])
    torch.manual_seed(3)
    model = randomised(AFM(N_FEATURES, H, K, attention_factor=attention_factor, dropout=0.0,
                           weight_dropout=weight_dropout).double()).train(weight_dropout > 0)
    x, weights = batch(12), torch.randn(12, dtype=torch.float64)
    torch.manual_seed(4)
    ours = model(x)
    torch.manual_seed(4)
    keep = torch.nn.functional.dropout(torch.ones(12, H * (H - 1) // 2, dtype=torch.float64), weight_dropout) \
        if weight_dropout else None
    literal = afm_eq5(model, x, keep)
    if weight_dropout:
        assert 0 < int((keep == 0).sum()) < keep.numel()     # some weights dropped, not all
    assert torch.allclose(ours, literal)
    params = list(model.parameters())
    for g_ours, g_literal in zip(torch.autograd.grad((ours * weights).sum(), params),
                                 torch.autograd.grad((literal * weights).sum(), params)):
        assert torch.allclose(g_ours, g_literal)


def nfm_eqs(model, x: torch.Tensor, batch_norm: bool) -> torch.Tensor:
    """NFM's Eqs. 3-4 literally (evaluation: dropout off, batch norm with its running statistics):
    w0 + sum_i w_i + h^T z_L, z_0 = BN(sum_{i<j} v_i * v_j), z_l = ReLU(BN(W_l z_{l-1} + b_l))."""
    def bn(z, layer):
        return (z - layer.running_mean) / torch.sqrt(layer.running_var + layer.eps) * layer.weight + layer.bias

    linears = [m for m in model.dnn if isinstance(m, torch.nn.Linear)]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    out = []
    for row in x.tolist():
        v = [model.embedding.weight[f] for f in row]
        z = sum(v[i] * v[j] for i in range(len(row)) for j in range(i + 1, len(row)))
        if batch_norm:
            z = bn(z, norms[0])
        for n, layer in enumerate(linears):
            z = layer.weight @ z + layer.bias
            z = torch.relu(bn(z, norms[n + 1]) if batch_norm else z)
        out.append(model.linear.bias + sum(model.linear.weight.weight[f, 0] for f in row) + model.out.weight[0] @ z)
    return torch.stack(out)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense table", "sparse table"])
@pytest.mark.parametrize("batch_norm", [True, False], ids=["batch norm (NFM's code)", "none (FuxiCTR, BARS)"])
def test_nfm_is_its_equations_with_its_gradients(batch_norm, sparse):
    """NFM against Eqs. 3-4 written out above, outputs and every parameter's gradient, with and
    without batch norm (without: no BatchNorm module at all), on a dense and a sparse table."""
    from ifm.models.nfm import NFM

    torch.manual_seed(5)
    model = NFM(N_FEATURES, H, K, hidden=(7, 5), batch_norm=batch_norm, sparse=sparse).double()
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules()) == batch_norm
    randomised(model)
    for m in model.modules():                                   # running statistics that are not 0 and 1
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn_like(m.running_mean))
            m.running_var.copy_(torch.rand_like(m.running_var) + 0.5)
    model.eval()
    x, weights = batch(10), torch.randn(10, dtype=torch.float64)
    ours, literal = model(x), nfm_eqs(model, x, batch_norm)
    assert torch.allclose(ours, literal)
    params = [p for p in model.parameters()]
    for g_ours, g_literal in zip(torch.autograd.grad((ours * weights).sum(), params),
                                 torch.autograd.grad((literal * weights).sum(), params)):
        assert torch.allclose(g_ours.to_dense() if g_ours.is_sparse else g_ours, g_literal)


def test_lr_is_w0_plus_the_active_weights_and_has_no_embedding_table():
    from ifm.models.lr import LR

    model = randomised(LR(N_FEATURES, H, K))
    x = batch()
    w0, w = model.linear.bias, model.linear.weight.weight[:, 0]
    expected = torch.stack([w0 + sum(w[i] for i in row) for row in x.tolist()])
    torch.testing.assert_close(model(x), expected)
    names = {n for n, _ in model.named_parameters()}
    assert not any("embedding" in n for n in names) and len(list(model.parameters())) == 2
    assert model.use_feature_fields(x) is False
