"""The open benchmark's training protocol (ifm.training.protocol, recipe `bars`): the loss, the
stopping and learning-rate rule and the monitor, each checked on constructed cases against the
rule written out from FuxiCTR's loop (rank_model.py@e0d5495)."""
import pytest
import torch

from ifm.models import build_model
from ifm.runs.records import config_identity
from ifm.training import protocol
from ifm.training.loop import TrainConfig, train
from ifm.training.recipes import paper_config


def test_the_regularization_is_half_lambda_e_on_the_tables_and_half_lambda_n_on_the_rest_w0_included():
    torch.manual_seed(0)
    model = build_model("nfm", 20, 3, 4)
    for p in model.parameters():
        torch.nn.init.normal_(p)
    p = {"l2_embedding": 0.3, "l2_net": 0.05}
    tables = model.linear.weight.weight.square().sum() + model.embedding.weight.square().sum()
    rest = sum(q.square().sum() for n, q in model.named_parameters()
               if n not in ("linear.weight.weight", "embedding.weight"))
    assert "linear.bias" in dict(model.named_parameters())          # w0 is among the rest
    expected = 0.3 / 2 * tables + 0.05 / 2 * rest
    assert protocol.regularization(model, p).item() == pytest.approx(expected.item(), rel=1e-6)


def test_a_step_descends_the_mean_log_loss_plus_regularization_with_the_gradient_clipped():
    torch.manual_seed(0)
    model = build_model("fm", 30, 3, 4)
    twin = build_model("fm", 30, 3, 4)
    twin.load_state_dict(model.state_dict())
    x, y = torch.randint(0, 30, (16, 3)), (torch.rand(16) < 0.5).float()
    p = {"l2_embedding": 0.1, "clip_norm": 1e-3}
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    summed = protocol.step(model, opt, x, y, p)
    # by hand: the mean log loss + regularization, its gradient scaled to norm 1e-3, one SGD step
    bce = torch.nn.functional.binary_cross_entropy_with_logits(twin(x), y)
    loss = bce + 0.05 * (twin.linear.weight.weight.square().sum() + twin.embedding.weight.square().sum())
    grads = torch.autograd.grad(loss, list(twin.parameters()))
    norm = torch.sqrt(sum(g.square().sum() for g in grads))
    with torch.no_grad():
        for q, g in zip(twin.parameters(), grads):
            q -= g * min(1.0, 1e-3 / (norm.item() + 1e-6))
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b)
    assert norm.item() > 1e-2                                 # the clip did act
    assert summed.item() == pytest.approx(16 * bce.item(), rel=1e-6)     # the batch's summed log loss


def test_fuxictrs_rule_a_gain_under_min_delta_is_no_gain_and_two_in_a_row_stop():
    p = {"min_delta": 0.01}
    values = [-0.90, -0.905, -0.95, -0.951, -0.949]          # minimised (sign * AUC)
    assert [protocol.improved(values[:i], p) for i in range(1, 6)] == [True, False, True, False, False]
    assert [protocol.epochs_without_gain(values[:i], p) for i in range(1, 6)] == [0, 1, 0, 1, 2]
    assert protocol.sign("auc") == -1 and protocol.sign("logloss") == 1
    with pytest.raises(ValueError, match="unknown protocol setting"):
        protocol.settings({"monitr": "auc"})


def test_the_learning_rate_is_cut_tenfold_after_each_epoch_without_gain_not_below_1e_6():
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    rates = [protocol.cut_learning_rate(opt, {}) for _ in range(5)]
    assert rates == pytest.approx([1e-4, 1e-5, 1e-6, 1e-6, 1e-6])


def ctr_data(n=3000, seed=1):
    """A CTR task from the synthetic generator: label 1 where its regression target is above the median."""
    import numpy as np

    from ifm.data.registry import Dataset, random_split, to_split
    from ifm.data.synthetic import make_synthetic

    x, y, _ = make_synthetic(n, seed=seed)
    y = (y > np.median(y)).astype(np.float32)
    splits = [to_split(a, b) for a, b in random_split(x, y, 0)]
    return Dataset("synthetic", "binary", int(x.max()) + 1, x.shape[1], *splits, {})


def test_a_bars_run_monitors_validation_auc_stops_after_two_epochs_without_gain_and_keeps_the_best():
    config = paper_config("synthetic", "fm", recipe="bars", epochs=40, embedding_size=4, batch_size=256,
                          learning_rate=0.05)
    run = train(config, ctr_data(), progress=False)
    record, history = run.record, run.record["history"]
    assert record["monitor"] == "auc"
    aucs = [r["valid_auc"] for r in history]
    best = max(range(len(aucs)), key=aucs.__getitem__)
    assert len(history) < 40                                  # it stopped: two epochs gained nothing
    assert len(history) - 1 - best == 2 and record["best_epoch"] == best + 1
    assert record["valid"]["auc"] == pytest.approx(aucs[best], abs=1e-9)   # the best epoch's weights kept


def test_the_paper_recipes_keys_do_not_change_with_the_protocol_field():
    config = paper_config("frappe", "ifm", recipe="code")
    assert "protocol" not in config.to_dict() and "protocol" not in config_identity(config)
    assert TrainConfig(**config.to_dict()) == config
    bars = paper_config("frappe", "ifm", recipe="bars")
    assert config_identity(bars)["protocol"] == {"monitor": "auc", "init": "fuxictr"} and bars.optimizer == "adam"
    assert not bars.uses_pretraining() and bars.sparse_for(10**7, 10) is False


def test_a_gain_under_min_delta_keeps_the_earlier_weights_and_the_record_names_their_epoch(monkeypatch):
    """Validation AUCs 0.80, 0.90, 0.9000005, 0.85: epoch 3 is the best by value but gains less
    than 1e-6, so the weights of epoch 2 are kept, kept_epoch says 2, and the record verifies."""
    from ifm.runs.verify import _history
    from ifm.training import loop

    scripted = iter([0.80, 0.80, 0.90, 0.90, 0.9000005, 0.9000005, 0.85, 0.85, 0.85, 0.85])
    real = loop.score
    calls = {"n": 0}

    def score(model, split, task, label_range=None):
        out = real(model, split, task, label_range)
        calls["n"] += 1
        if calls["n"] <= 10:                 # valid and test of each of the 5 epochs
            out["auc"] = next(scripted)
        return out

    monkeypatch.setattr(loop, "score", score)
    config = paper_config("synthetic", "fm", recipe="bars", epochs=5, embedding_size=4, batch_size=256)
    record = train(config, ctr_data(), progress=False).record
    assert [r["valid_auc"] for r in record["history"]] == [0.80, 0.90, 0.9000005, 0.85]   # 2 without gain: stop
    assert record["best_epoch"] == 3 and record["kept_epoch"] == 2
    # The kept weights score what epoch 2 logged (scripted here): the record agrees with its history.
    record["valid"]["auc"], record["test"]["auc"] = 0.90, 0.90
    assert _history(record) is None


@pytest.mark.parametrize("model_name", ["afm", "ifm", "nfm", "deepfm", "difm"])
def test_under_the_protocol_its_lambdas_are_the_only_penalty_not_the_papers_l2_groups(model_name):
    # AFM's attention L2 (2.0 in the paper's recipes, weight decay 4 on W) is the AFM paper's own;
    # FuxiCTR's AFM has net_regularizer 0 (BARS AFM_frappe_x1_011_2d591f68.log). With it, Adam
    # pulled W to 0 and our AFM stayed at validation AUC 0.913 after 5 epochs where BARS's had 0.931.
    from ifm.training.loop import make_optimizer
    bars = paper_config("frappe", model_name, recipe="bars", l2=1e-3)
    model = build_model(model_name, 100, 10, 8)
    assert all(g["weight_decay"] == 0.0 for g in make_optimizer(model, bars).param_groups)
    paper = paper_config("frappe", model_name, l2=1e-3)
    assert any(g["weight_decay"] > 0 for g in make_optimizer(model, paper).param_groups)


@pytest.mark.parametrize("model_name", ["lr", "fm", "afm", "nfm", "deepfm", "wide_deep", "ifm", "difm"])
def test_the_protocol_starts_every_model_as_fuxictr_does(model_name):
    # FuxiCTR base_model.py:44, 96-118 (31ebe17): embeddings ~ N(0, 1e-4), nn.Linear Xavier-normal
    # (std sqrt(2 / (fan_in + fan_out))) with zero bias; w0 at 0.
    from ifm.models.layers import FeatureTable
    from ifm.training.loop import build_for
    from ifm.data import load_dataset

    data = load_dataset("synthetic", n=600)
    torch.manual_seed(0)
    model = build_for(paper_config("synthetic", model_name, recipe="bars", embedding_size=8), data, "cpu")
    tables = [m for m in model.modules() if isinstance(m, FeatureTable)]
    assert tables
    for table in tables:
        assert table.weight.std().item() == pytest.approx(1e-4, rel=0.2)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    for linear in linears:
        fan_out, fan_in = linear.weight.shape
        if linear.weight.numel() >= 200:
            assert linear.weight.std().item() == pytest.approx((2 / (fan_in + fan_out)) ** 0.5, rel=0.25)
        assert linear.bias is None or not linear.bias.any()
    assert model.linear.bias.item() == 0.0
    torch.manual_seed(0)
    own = build_for(paper_config("synthetic", model_name, recipe="bars", embedding_size=8,
                                 protocol={"monitor": "auc"}), data, "cpu")
    if hasattr(own, "embedding"):
        assert own.embedding.weight.std().item() == pytest.approx(0.01, rel=0.2)    # the model's own start


def test_a_pretrained_benchmark_run_starts_from_the_fm_it_names():
    """tuning's `pretrain`: train() loads the FM's w0, w_i and v_i over FuxiCTR's start (a learning
    rate of 0 keeps them, so the trained model still holds them exactly), and without a given FM it
    trains that very FM (BARS's setting at the run's seed) first."""
    import dataclasses

    from ifm.runs import tuning

    data = ctr_data()
    params = {"l2_embedding": 0.0, "fen_sizes": "256-256", "dropout": 0.0, "batch_norm": False, "pretrain": True}
    started = tuning.config_of("ifm", params, dataset="synthetic", epochs=2)
    fm = train(started.pretrain_config(), data, progress=False)
    state = fm.model.fm_state()
    still = train(dataclasses.replace(started, learning_rate=0.0), data, pretrained=state, progress=False).model
    scratch = train(dataclasses.replace(started, learning_rate=0.0, pretrain_fm=False, pretrain={}), data,
                    progress=False).model
    for name, value in state.items():
        assert torch.equal(still.state_dict()[name], value), name
    assert not torch.equal(scratch.state_dict()["embedding.weight"], state["embedding.weight"])
    own = train(started, data, progress=False)
    assert own.record["pretrain"]["valid"] == fm.record["valid"] and own.record["pretrain"]["model"] == "fm"
