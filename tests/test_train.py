"""The training loop, metrics and command line on small synthetic data (no downloads)."""
import json
import math

import pytest
import torch

from ifm.training import metrics
from ifm.cli import main
from ifm.data import load_dataset
from ifm.runs.records import write_json_atomic
from ifm.training.recipes import paper_config
from ifm.training.loop import make_optimizer, train
from ifm.models import build_model


@pytest.fixture(scope="module")
def synthetic():
    return load_dataset("synthetic", n=6000)


def small(model, **overrides):
    fields = {"embedding_size": 16, "batch_size": 256, "epochs": 4, "model_options": {"fen_width": 32}}
    fields.update(overrides)
    if model != "ifm":
        fields.pop("model_options")
    return paper_config("synthetic", model, **fields)


# --- metrics -----------------------------------------------------------------------------------

def test_auc_on_known_cases_including_ties():
    y = torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert metrics.auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), y) == pytest.approx(0.75)
    assert metrics.auc(torch.tensor([0.1, 0.2, 0.3, 0.4]), y) == pytest.approx(1.0)
    # One positive tied with one negative counts one half.
    assert metrics.auc(torch.tensor([0.1, 0.5, 0.5, 0.9]), y) == pytest.approx(0.875)
    assert math.isnan(metrics.auc(torch.tensor([0.1, 0.2]), torch.tensor([1.0, 1.0])))


def test_regression_metrics_and_bounding():
    pred, y = torch.tensor([1.5, -0.5, -2.0]), torch.tensor([1.0, -1.0, -1.0])
    assert metrics.rmse(pred, y) == pytest.approx(math.sqrt((0.25 + 0.25 + 1) / 3))
    assert metrics.mae(pred, y) == pytest.approx((0.5 + 0.5 + 1) / 3)
    bounded = metrics.evaluate(pred, y, "regression", label_range=(-1.0, 1.0))
    # Bounded to [-1, 1], the 1.5 and -2.0 predictions become exact: only the -0.5 is wrong.
    assert bounded["mae"] == pytest.approx(0.5 / 3)
    assert metrics.evaluate(pred, y, "regression")["mae"] == pytest.approx(2 / 3)


def test_logloss_matches_its_definition():
    logit, y = torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0])
    expected = -(math.log(0.5) + math.log(1 - 1 / (1 + math.exp(-2)))) / 2
    assert metrics.logloss(logit, y) == pytest.approx(expected)


# --- optimiser set-up -------------------------------------------------------------------------

def test_l2_reaches_exactly_the_fen_weights_and_afm_has_its_own():
    config = paper_config("frappe", "ifm")
    model = build_model("ifm", 100, 10, 8, fen_layers=2, fen_width=16)
    decay = {id(p): g["weight_decay"] for g in make_optimizer(model, config).param_groups for p in g["params"]}
    regularised = {id(p) for p in model.regularized()}
    assert len(regularised) == 3          # W1, W2 and P
    for name, p in model.named_parameters():
        assert decay[id(p)] == (2 * 1e-5 if id(p) in regularised else 0.0), name
    afm = build_model("afm", 100, 10, 8)
    groups = make_optimizer(afm, paper_config("frappe", "afm")).param_groups
    assert [g["weight_decay"] for g in groups if any(p is afm.attention.weight for p in g["params"])] == [4.0]


def test_libfm_is_trained_by_plain_sgd_and_the_others_by_adagrad():
    assert isinstance(make_optimizer(build_model("fm", 10, 2, 4), paper_config("frappe", "libfm")),
                      torch.optim.SGD)
    assert isinstance(make_optimizer(build_model("fm", 10, 2, 4), paper_config("frappe", "fm")),
                      torch.optim.Adagrad)


# --- training ---------------------------------------------------------------------------------

def test_a_cpu_run_repeats_exactly_under_the_same_seed(synthetic):
    first = train(small("ifm", seed=3, pretrain_fm=False), synthetic, progress=False)
    second = train(small("ifm", seed=3, pretrain_fm=False), synthetic, progress=False)
    other = train(small("ifm", seed=4, pretrain_fm=False), synthetic, progress=False)
    strip = lambda h: [{k: v for k, v in row.items() if k != "seconds"} for row in h]   # noqa: E731
    assert strip(first.record["history"]) == strip(second.record["history"])
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    assert strip(first.record["history"]) != strip(other.record["history"])


def test_early_stopping_restores_the_best_epoch(synthetic):
    # A learning rate far too high makes validation RMSE worsen after the first epochs.
    run = train(small("fm", epochs=30, patience=2, learning_rate=1.0), synthetic, progress=False)
    history = run.record["history"]
    best = min(history, key=lambda r: r["valid_rmse"])
    assert run.record["best_epoch"] == best["epoch"]
    assert len(history) == best["epoch"] + 2 or len(history) == 30
    assert run.record["valid"]["rmse"] == pytest.approx(best["valid_rmse"], rel=1e-6)


def test_fm_pretraining_and_frozen_embeddings(synthetic):
    fm_run = train(small("fm"), synthetic, progress=False)
    state = fm_run.model.fm_state()
    run = train(small("ifm", freeze_embeddings=True), synthetic, pretrained=state, progress=False)
    for key, value in state.items():
        assert torch.equal(run.model.state_dict()[key], value), f"{key} moved although frozen"
    # The FEN did learn something on top of the frozen FM.
    assert run.record["valid"]["rmse"] < fm_run.record["valid"]["rmse"]
    # Without a given state, the pre-training FM is trained and reported in the record.
    assert train(small("ifm", epochs=1), synthetic, progress=False).record["pretrain"]["model"] == "fm"


def test_ifm_beats_fm_clearly_on_the_planted_input_aware_effect():
    data = load_dataset("synthetic")
    # A larger step than the paper's 0.01 so both models converge within a few seconds.
    common = {"embedding_size": 16, "batch_size": 512, "epochs": 20, "patience": 20, "learning_rate": 0.05}
    fm = train(paper_config("synthetic", "fm", **common), data, progress=False).record["test"]["rmse"]
    ifm = train(paper_config("synthetic", "ifm", pretrain_fm=False, model_options={"fen_width": 64, "dropout": 0.0},
                             **common), data, progress=False).record["test"]["rmse"]
    assert ifm < 0.6 * fm, (ifm, fm)   # measured: 0.19 against 0.62


def test_binary_task_trains_with_log_loss():
    data = load_dataset("synthetic", n=3000)
    for split in (data.train, data.valid, data.test):
        split.y = (split.y > 0).float()
    data.task = "binary"
    run = train(small("ifm", pretrain_fm=False), data, progress=False)
    assert set(run.record["test"]) == {"auc", "logloss"}
    assert run.record["test"]["auc"] > 0.6


# --- command line and records ------------------------------------------------------------------

def test_cli_train_prints_one_json_line_and_writes_the_record(tmp_path, capsys):
    out = tmp_path / "run.json"
    assert main(["train", "--dataset", "synthetic", "--model", "fm", "--epochs", "2", "--embedding-size", "8",
                 "--quiet", "--out", str(out)]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["model"] == "fm" and line["epochs_run"] == 2 and "rmse" in line["test"]
    record = json.loads(out.read_text())
    assert len(record["history"]) == 2 and record["config"]["embedding_size"] == 8
    assert list(tmp_path.iterdir()) == [out]
    # the record store's shape: its key is the one the book's runner would give this run
    from ifm.data import load_dataset
    from ifm.runs.records import TrainConfig, run_key
    key, material = run_key(TrainConfig(**record["config"]), load_dataset("synthetic"))
    assert record["cache"]["key"] == key and record["cache"]["material"] == material
    assert record["cache"]["profile"] == "cli" and record["cache"]["stem"] == "run"


def test_record_writing_is_atomic_and_json_clean(tmp_path):
    path = write_json_atomic(tmp_path / "r" / "x.json", {"a": float("nan"), "b": [1.0, float("inf")]})
    assert json.loads(path.read_text()) == {"a": None, "b": [1.0, None]}
    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "r" / "y.json", {"a": object()})
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["x.json"]


def test_cli_saves_a_state_and_starts_ifm_from_it(tmp_path, capsys):
    state = tmp_path / "fm.pt"
    common = ["--dataset", "synthetic", "--epochs", "1", "--embedding-size", "8", "--quiet"]
    assert main(["train", "--model", "fm", *common, "--save-state", str(state)]) == 0
    out = tmp_path / "ifm.json"
    assert main(["train", "--model", "ifm", *common, "--init-fm", str(state), "--freeze-embeddings",
                 "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["pretrain"] == {"from_file": str(state)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fm.pt", "ifm.json"]
    # the FM it started from is part of its key: the store never mistakes it for a self-pre-trained run
    from ifm.data.download import file_digests
    assert record["cache"]["material"]["init_fm_sha256"] == file_digests(state)[0]


def test_a_diverging_run_stops_and_says_so(synthetic):
    run = train(small("fm", optimizer="sgd", learning_rate=50.0, epochs=10), synthetic, progress=False)
    assert run.record["diverged"] is True
    assert len(run.record["history"]) < 10


@pytest.mark.parametrize("task", ["regression", "binary"])
@pytest.mark.parametrize("sparse", [False, True])
def test_the_written_out_sgd_step_of_fm_is_libfms_update(task, sparse):
    """libFM's baseline trains with FM.sgd_step: for each instance, theta -= lr * mult * d y_hat / d theta
    with mult = clip(y_hat, label range) - y (regression) or sigmoid(y_hat) - y (CTR), all instances
    at the current parameters (srendle/libfm fm_learn_sgd_element.h:60-65, fm_sgd.h:34-50). The
    reference takes d y_hat / d theta from autograd and applies the update by hand; repeated ids
    in a batch included."""
    from ifm.training.loop import train_step

    torch.manual_seed(0)
    config = paper_config("frappe", "libfm", embedding_size=6)
    written = build_model("libfm", 40, 4, 6, sparse=sparse, init_std=0.5)   # predictions leave [-1, 1]
    torch.nn.init.normal_(written.linear.weight.weight, std=0.3)
    reference = build_model("libfm", 40, 4, 6)
    reference.load_state_dict(written.state_dict())
    x = torch.stack([torch.randint(10 * j, 10 * j + 3, (8,)) for j in range(4)], dim=1)   # ids repeat
    y = torch.randint(0, 2, (8,)).float() if task == "binary" else torch.randint(0, 2, (8,)).float() * 2 - 1
    lr, label_range = config.learning_rate, (-1.0, 1.0)
    clipped_somewhere = False
    for _ in range(3):
        train_step(written, make_optimizer(written, config), x, y, task, label_range=label_range)
        y_hat = reference(x)
        with torch.no_grad():
            if task == "binary":
                multiplier = torch.sigmoid(y_hat) - y
            else:
                clipped_somewhere |= bool((y_hat.abs() > 1).any())
                multiplier = y_hat.clamp(-1, 1) - y
        reference.zero_grad()
        (multiplier * y_hat).sum().backward()                 # sum_i mult_i * d y_hat_i / d theta
        with torch.no_grad():
            for p in reference.parameters():
                p -= lr * p.grad
    assert clipped_somewhere or task == "binary"
    for name, value in reference.state_dict().items():
        assert torch.allclose(written.state_dict()[name], value, atol=1e-5), name
