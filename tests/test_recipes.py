"""The two recipes and the baselines against references written from their equations here:
whole NFM, AFM, DeepFM, Wide&Deep and IFM (code recipe: batch norm, pooled dropout) on both
computation paths, the placement of every dropout and batch norm, initial scales, the L2 scope
and its form, the Adagrad accumulator, and the stopping rules on constructed curves."""
import math

import pytest
import torch

from ifm.models import build_model
from ifm.models.kernels import Dropout, PerFeatureInputs
from ifm.training.recipes import RECIPE_TABLE, paper_config, recipe_table
from ifm.training.loop import TrainConfig, batch_indices, make_optimizer, stop_now, train

H, K, N_FEATURES = 5, 6, 50


def batch(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 10, (n, H), generator=g) + torch.arange(H) * 10


def randomised(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if name.endswith("bn.weight") else 0.0))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.double().eval()


def pairs(v):
    """Every (i, j), i < j, of the active features: the double loop of the equations."""
    h = v.shape[1]
    return [(i, j) for i in range(h) for j in range(i + 1, h)]


def bn(layer, z):
    """Batch norm in inference: gamma (z - running mean) / sqrt(running var + eps) + beta."""
    return layer.weight * (z - layer.running_mean) / torch.sqrt(layer.running_var + layer.eps) + layer.bias


def lin(layer, z):
    return z @ layer.weight.T + (layer.bias if layer.bias is not None else 0)


def wide(model, x):
    return model.linear.bias + model.linear.weight.weight[x].squeeze(-1).sum(1)


def nfm_reference(model, x):
    """NFM (He & Chua 2017, Eq. 4-6) in inference: y = w0 + sum w_i + h^T relu(BN(W BN(f_BI) + b)),
    f_BI = sum_{i<j} v_i * v_j."""
    v = model.embedding.weight[x]
    f = sum(v[:, i] * v[:, j] for i, j in pairs(v))
    z = bn(model.pool[0], f)
    z = torch.relu(bn(model.dnn[1], lin(model.dnn[0], z)))
    return wide(model, x) + lin(model.out, z).squeeze(-1)


def afm_reference(model, x):
    """AFM (Xiao et al. 2017, Eq. 4-5): a_ij = softmax over pairs of h^T relu(W (v_i * v_j) + b),
    y = w0 + sum w_i + p^T sum_{i<j} a_ij (v_i * v_j)."""
    v = model.embedding.weight[x]
    e = torch.stack([v[:, i] * v[:, j] for i, j in pairs(v)], dim=1)
    scores = torch.relu(lin(model.attention, e)) @ model.attention_h.weight[0]
    a = torch.softmax(scores, dim=1)
    return wide(model, x) + lin(model.p, (a.unsqueeze(2) * e).sum(1)).squeeze(-1)


def mlp_reference(dnn, z):
    for layer in dnn:
        if isinstance(layer, torch.nn.Linear):
            z = torch.relu(lin(layer, z))
    return z


def wide_deep_reference(model, x):
    """Wide & Deep: w0 + sum w_i + out(MLP(concatenated v)); DeepFM adds sum_{i<j} <v_i, v_j>."""
    v = model.embedding.weight[x]
    return wide(model, x) + lin(model.out, mlp_reference(model.dnn, v.flatten(1))).squeeze(-1)


def deepfm_reference(model, x):
    v = model.embedding.weight[x]
    return wide_deep_reference(model, x) + sum((v[:, i] * v[:, j]).sum(1) for i, j in pairs(v))


def ifm_code_reference(model, x):
    """IFM as the released code computes it (code/IFM.py:90-132) in inference: FEN layers
    Linear -> BN -> ReLU on the concatenated v, m = h softmax(P u), y = w0 + sum m_i w_i +
    sum_k (sum_{i<j} m_i v_i * m_j v_j)_k (dropout on that vector is off in inference)."""
    v = model.embedding.weight[x]
    u = v.flatten(1)
    linears = [m for m in model.fen if isinstance(m, torch.nn.Linear)]
    norms = [m for m in model.fen if isinstance(m, torch.nn.BatchNorm1d)]
    for linear, norm in zip(linears, norms):
        u = torch.relu(bn(norm, lin(linear, u)))
    m = H * torch.softmax(lin(model.P, u), dim=1)
    w = model.linear.weight.weight[x].squeeze(-1)
    inter = sum(((m[:, i:i + 1] * v[:, i]) * (m[:, j:j + 1] * v[:, j])).sum(1) for i, j in pairs(v))
    return model.linear.bias + (m * w).sum(1) + inter


CASES = {
    "nfm": (dict(hidden=(7,)), nfm_reference),
    "afm": (dict(attention_factor=4), afm_reference),
    "wide_deep": (dict(hidden=(9, 4)), wide_deep_reference),
    "deepfm": (dict(hidden=(9, 4)), deepfm_reference),
    "ifm": (dict(fen_layers=2, fen_width=8, batch_norm=True, interaction_dropout=0.2, dropout=[0.2, 0.3],
                 init="code"), ifm_code_reference),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_whole_model_equals_its_equations_on_both_paths_with_gradients(name):
    options, reference = CASES[name]
    torch.manual_seed(0)
    model = randomised(build_model(name, N_FEATURES, H, K, **options))
    x = batch()
    expected = reference(model, x)
    assert torch.allclose(model(x), expected, atol=1e-10)
    if model.stacked_input_layer() is not None:          # the per-feature path: same function, same gradients
        fast = randomised(build_model(name, N_FEATURES, H, K, **options))
        fast.load_state_dict(model.state_dict())
        assert fast.use_feature_fields(x) and isinstance(fast.inputs(x), PerFeatureInputs)
        out = fast(x)
        assert torch.allclose(out, expected, atol=1e-10)
        grads = torch.autograd.grad(out.sum(), list(fast.parameters()), allow_unused=True)
        ref_grads = torch.autograd.grad(reference(model, x).sum(), list(model.parameters()), allow_unused=True)
        for (pname, _), a, b in zip(fast.named_parameters(), grads, ref_grads):
            if b is None:
                assert a is None or not a.abs().sum(), pname
            else:
                assert torch.allclose(a, b, atol=1e-9), pname


def test_the_per_feature_path_refuses_an_id_in_another_field():
    model = build_model("ifm", N_FEATURES, H, K, fen_width=8)
    x = batch()
    assert model.use_feature_fields(x)
    swapped = x.clone()
    swapped[3, [0, 1]] = swapped[3, [1, 0]]
    with pytest.raises(ValueError, match="column 0 of row 3 is not a field-0 id"):
        model(torch.cat([swapped] * 2))


def test_in_training_the_per_feature_path_draws_the_same_dropout_and_batch_statistics():
    options = CASES["ifm"][0]
    torch.manual_seed(0)
    general = randomised(build_model("ifm", N_FEATURES, H, K, **options)).train()
    fast = randomised(build_model("ifm", N_FEATURES, H, K, **options)).train()
    fast.load_state_dict(general.state_dict())
    x = batch()
    fast.use_feature_fields(x)
    torch.manual_seed(5)
    a = general(x)
    torch.manual_seed(5)
    b = fast(x)
    assert torch.allclose(a, b, atol=1e-10)


def test_nfm_dropout_sits_as_in_neuralfm_py():
    """--keep_prob [0.8,0.5]: the last keep (0.5) on the Bi-Interaction, the first (0.8) on the hidden layer."""
    nfm = build_model("nfm", N_FEATURES, H, K)
    assert [type(m).__name__ for m in nfm.pool] == ["BatchNorm1d", "Dropout"] and nfm.pool[1].p == 0.5
    assert [type(m).__name__ for m in nfm.dnn] == ["Linear", "BatchNorm1d", "ReLU", "Dropout"]
    assert nfm.dnn[3].p == 0.2


def test_ifm_code_recipe_layout_bn_dropout_and_initial_scales():
    config = paper_config("frappe", "ifm", recipe="code")
    torch.manual_seed(0)
    model = build_model("ifm", 5382, 10, 256, **config.model_options)
    kinds = [type(m).__name__ for m in model.fen]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Dropout"] * 2
    assert [m.p for m in model.fen if isinstance(m, Dropout)] == [0.2, 0.3]            # keep 0.8, 0.7
    assert isinstance(model.pool, Dropout) and model.pool.p == 0.2                       # keep[-1] = 0.8
    assert all(m.eps == 1e-3 and m.momentum == 0.1 for m in model.fen if isinstance(m, torch.nn.BatchNorm1d))
    first, second = (m for m in model.fen if isinstance(m, torch.nn.Linear))
    assert first.weight.std().item() == pytest.approx(math.sqrt(2 / (256 + 256)), rel=0.02)   # k + t1, not h k
    assert first.bias.std().item() == pytest.approx(math.sqrt(2 / (256 + 256)), rel=0.2)
    assert second.weight.std().item() == pytest.approx(math.sqrt(2 / (256 + 256)), rel=0.02)
    assert model.P.weight.std().item() == pytest.approx(math.sqrt(2 / (256 + 1)), rel=0.1)
    paper = build_model("ifm", 5382, 10, 256, **paper_config("frappe", "ifm").model_options)
    assert "BatchNorm1d" not in [type(m).__name__ for m in paper.fen] and paper.pool is None
    assert [m.p for m in paper.fen if isinstance(m, Dropout)] == [0.3, 0.3]


def test_l2_scope_and_form_per_recipe():
    model = build_model("ifm", N_FEATURES, H, K, fen_width=8)
    fen_w = {id(m.weight) for m in model.fen if isinstance(m, torch.nn.Linear)} | {id(model.P.weight)}
    fen_b = {id(m.bias) for m in model.fen if isinstance(m, torch.nn.Linear)}
    for recipe, decay, scope in (("paper", 2e-5, fen_w), ("code", 0.01, fen_w | fen_b)):
        groups = make_optimizer(model, paper_config("frappe", "ifm", recipe=recipe)).param_groups
        decayed = [g for g in groups if g["weight_decay"] > 0]
        assert len(decayed) == 1 and decayed[0]["weight_decay"] == pytest.approx(decay)
        assert {id(p) for p in decayed[0]["params"]} == scope
    fm_code = build_model("fm", N_FEATURES, H, K, **paper_config("frappe", "fm", recipe="code").model_options)
    groups = make_optimizer(fm_code, paper_config("frappe", "fm", recipe="code")).param_groups
    assert [[id(p) for p in g["params"]] for g in groups if g["weight_decay"] > 0] == [[id(fm_code.embedding.weight)]]
    assert not [g for g in make_optimizer(build_model("fm", N_FEATURES, H, K), paper_config("frappe", "fm")).param_groups
                if g["weight_decay"] > 0]


@pytest.mark.parametrize("recipe", ["paper", "code"])
def test_adagrad_starts_its_accumulator_at_the_authors_1e_8(recipe):
    model = build_model("ifm", N_FEATURES, H, K, fen_width=8)
    optimizer = make_optimizer(model, paper_config("frappe", "ifm", recipe=recipe))
    assert {g["initial_accumulator_value"] for g in optimizer.param_groups} == {1e-8}
    assert all(torch.all(optimizer.state[p]["sum"] == 1e-8) for g in optimizer.param_groups for p in g["params"])


def test_code_pretraining_is_fm_py():
    fm = paper_config("frappe", "ifm", recipe="code").pretrain_config()
    assert fm.model == "fm" and fm.keep_last and fm.l2 == 0.01 and fm.l2_half and fm.loss_scale == 0.5
    assert fm.model_options == {"batch_norm": True, "interaction_dropout": 0.3, "regularize_embeddings": True}
    from ifm.runs.experiment import config_identity
    same = config_identity(paper_config("frappe", "fm", recipe="code"))   # the FM baseline shares the record
    assert config_identity(fm) == same
    model = build_model("fm", N_FEATURES, H, K, **fm.model_options)
    assert [type(m).__name__ for m in model.pool] == ["BatchNorm1d", "Dropout"] and model.pool[1].p == 0.3
    paper = paper_config("frappe", "ifm").pretrain_config()
    assert config_identity(paper) == config_identity(paper_config("frappe", "fm")) and not paper.keep_last


CURVES = {  # validation curve -> the epoch count at which each rule stops (None: runs on)
    "falls, then rises four times, then would fall": ([5, 4, 3, 3.5, 3.6, 3.7, 3.8, 2], 7, None),
    "a slow recovery to a new best at epoch 8": ([5, 4, 4.1, 4.05, 4.02, 4.01, 4.005, 3.99], None, 7),
    "flat after an early best": ([3, 4, 4, 4, 4, 4, 4, 4], None, 6),
}


@pytest.mark.parametrize("name", sorted(CURVES))
def test_stopping_rules_on_constructed_curves(name):
    curve, rises_at, patience_at = CURVES[name]
    for rule, expected in (("rises", rises_at), ("patience", patience_at)):
        stops = [n for n in range(1, len(curve) + 1) if stop_now(curve[:n], rule, patience=5)]
        assert (stops[0] if stops else None) == expected, rule


def test_random_block_batches_are_contiguous_blocks_of_one_shuffle():
    g = torch.Generator().manual_seed(0)
    blocks = batch_indices(100, 16, "random_blocks", g)
    assert len(blocks) == 100 // 16 and all(len(b) == 16 for b in blocks)
    seen = torch.cat(blocks)
    assert len(torch.unique(seen)) < len(seen) or len(torch.unique(seen)) < 100    # with replacement
    perm = batch_indices(100, 16, "permutation", torch.Generator().manual_seed(0))
    assert sorted(torch.cat(perm).tolist()) == list(range(100))


def test_keep_last_keeps_the_last_epoch_and_every_metric_has_its_own_best_epoch():
    from ifm.data import load_dataset
    data = load_dataset("synthetic", n=1500)
    common = dict(embedding_size=8, epochs=6, stopping="patience", patience=100)
    last = train(paper_config("synthetic", "fm", keep_last=True, **common), data, progress=False).record
    assert last["kept_epoch"] == 6 and last["valid"]["rmse"] == pytest.approx(last["history"][-1]["valid_rmse"])
    best = train(paper_config("synthetic", "fm", **common), data, progress=False).record
    rows = best["history"]
    for metric in ("rmse", "mae"):
        pick = min(rows, key=lambda r: r[f"valid_{metric}"])
        assert best["best_by_metric"][metric] == {"epoch": pick["epoch"], "valid": pick[f"valid_{metric}"],
                                                  "test": pick[f"test_{metric}"]}


@pytest.mark.parametrize("model", ["fm", "libfm", "ifm", "nfm", "afm", "deepfm", "wide_deep"])
def test_every_model_trains_under_the_code_recipe(model):
    from ifm.data import load_dataset
    data = load_dataset("synthetic", n=600)
    options = {"ifm": {"fen_width": 8}, "nfm": {"hidden": [8]}, "deepfm": {"hidden": [8]},
               "wide_deep": {"hidden": [8]}}.get(model, {})
    config = paper_config("synthetic", model, recipe="code", embedding_size=4, epochs=2, batch_size=64,
                          model_options=options)
    record = train(config, data, progress=False).record
    assert record["config"]["recipe"] == "code" and math.isfinite(record["test"]["rmse"])


def test_the_recipe_table_cites_a_source_for_every_setting():
    table = recipe_table()
    assert list(table.columns) == ["setting", "paper", "paper source", "code", "code source"]
    assert table[["paper source", "code source"]].map(bool).all().all()
    assert any("IFM.py:" in s for s in table["code source"])
    assert set(RECIPE_TABLE) >= {"loss", "batch norm", "FEN init", "stopping", "FM pre-training"}
    with pytest.raises(ValueError, match="unknown recipe"):
        paper_config("frappe", "ifm", recipe="tensorflow")
    with pytest.raises(ValueError, match="stopping"):
        TrainConfig(stopping="never")


def test_no_batch_of_one_reaches_batch_norm():
    g = torch.Generator().manual_seed(0)
    sizes = [len(b) for b in batch_indices(9, 4, "permutation", g)]
    assert sizes == [4, 5] and sorted(torch.cat(batch_indices(9, 4, "permutation", g)).tolist()) == list(range(9))
    assert [len(b) for b in batch_indices(10, 4, "permutation", g)] == [4, 4, 2]


def test_table_2_measures_each_model_against_the_fm_it_starts_from():
    from ifm.runs import experiment as ex
    from ifm.book import studies
    from ifm.runs.records import config_identity
    for recipe in ("paper", "code"):
        exp = ex.Experiment("smoke", recipe=recipe, datasets=["synthetic"], seeds=[0], train_missing=False, log=None)
        for model in exp.profile.component_models:
            config = exp.config("synthetic", model, 0, pretrain_fm=True, freeze_embeddings=True)
            if recipe == "paper":     # one FM for all: the paper's reading
                assert config_identity(config.pretrain_config()) == config_identity(exp.config("synthetic", "fm", 0))
        df = studies.component_study(exp)          # nothing recorded: every run is reported missing
        assert df.empty and any("FM on synthetic" in m for m in df.attrs["missing"])


def test_table2_under_code_hands_ifm_and_afm_an_fm_trained_with_batch_norm():
    """code/FM.py trains its FM through batch norm on the pooled vector (IFM's FM.py:93-96; AFM's FM.py
    --batch_norm 1), and IFM.py / AFM.py load only its embeddings and biases; DeepFM and NFM start
    from a plain FM under both recipes."""
    from ifm.training.recipes import paper_config
    for model, expected in (("ifm", True), ("afm", True), ("deepfm", False), ("nfm", False)):
        fm = paper_config("frappe", model, "code", pretrain_fm=True, freeze_embeddings=True).pretrain_config()
        assert bool(fm.model_options.get("batch_norm")) is expected, model
        plain = paper_config("frappe", model, "paper", pretrain_fm=True, freeze_embeddings=True).pretrain_config()
        assert not plain.model_options.get("batch_norm"), model
