"""The settings of each reading of the method, every one with its source.

A **recipe** is a reading of the paper's method:
- ``paper``: the paper's text (section 5.1, the IFM hyper-parameters of section 5.2); where the
  text is silent, the choice is ours and says why.
- ``code``: the authors' released TensorFlow code, gulyfish/Input-aware-Factorization-Machine
  (code/IFM.py at 00e37032, code/FM.py at 96f2eac2; the L2 scope of code/IFM.py at 01feef24),
  and for NFM and AFM their own authors' released code (hexiangnan/neural_factorization_machine
  NeuralFM.py, hexiangnan/attentional_factorization_machine code/AFM.py), which the paper says
  it used. DeepFM and Wide&Deep have no released code: they are the same in both recipes.
- ``legacy``: read-only; the settings of the records committed before the recipes existed
  (Adagrad accumulator 0.1, "5 epochs without a new best", NFM's dropouts swapped), so the
  book can show those records under their own name until they are re-made.

These are settings, not results: the reported numbers live in shared/paper/reported.json.
`paper_config` turns a recipe into a TrainConfig; `RECIPE_TABLE` is the book's table.
"""
from __future__ import annotations

RECIPES = ("paper", "code")
# Not a reading of the paper: the open CTR benchmark's protocol (BARS, run by FuxiCTR), under which
# every model is trained from scratch and tuned with the same budget (ifm.training.protocol).
BENCHMARK = "bars"
_BARS = "reczoo/BARS docs/CTR (the Frappe_x1 logs of each model's README)"
BARS = {"optimizer": "adam", "learning_rate": 1e-3, "batch_size": 4096, "embedding_size": 10, "epochs": 100,
        "stopping": "patience", "patience": 2, "pretrain_fm": False, "l2": 0.0, "seed": 2021,
        "protocol": {"monitor": "auc", "init": "fuxictr"}}
BARS_SOURCES = {"optimizer": _BARS, "learning_rate": _BARS, "batch_size": _BARS, "embedding_size": _BARS,
                "epochs": _BARS, "seed": _BARS, "stopping": "rank_model.py:39,167-184 (FuxiCTR)",
                "pretrain_fm": "FuxiCTR trains every model from scratch",
                "protocol": "ifm.training.protocol (init: base_model.py:44, 96-118, FuxiCTR)"}

PAPER = {
    "learning_rate": 0.01,
    "l2": 1e-5,
    "batch_size": {"frappe": 2048, "movielens": 4096, "avazu": 2048, "synthetic": 2048},
    "embedding_size": {"frappe": 256, "movielens": 256, "avazu": 40, "synthetic": 64},
    "ifm": {"fen_width": 256,
            "best": {"frappe": {"fen_layers": 2, "dropout": 0.3, "activation": "relu"},
                     "movielens": {"fen_layers": 3, "dropout": 0.4, "activation": "relu"},
                     # Not studied in the paper: Avazu and synthetic take Frappe's choice.
                     "avazu": {"fen_layers": 2, "dropout": 0.3, "activation": "relu"},
                     "synthetic": {"fen_layers": 2, "dropout": 0.3, "activation": "relu"}}},
}

# libFM's SGD is per instance; a batch of B applies B of libFM's steps at the same parameters.
# B = 8 keeps a Frappe epoch at seconds in torch (per-instance Python steps take minutes); the
# step itself is libFM's (FM.sgd_step). init_stdev 0.1 is libFM's default (libfm.cpp:119).
LIBFM = {"optimizer": "sgd", "batch_size": 8, "l2": 0.0, "model_options": {"init_std": 0.1}}

_IFM = "gulyfish/Input-aware-Factorization-Machine code/IFM.py"
_FM = "gulyfish/Input-aware-Factorization-Machine code/FM.py"
_NFM = "hexiangnan/neural_factorization_machine NeuralFM.py"
_AFM = "hexiangnan/attentional_factorization_machine code/AFM.py"

# The FEN keep probabilities of the released code, one per layer (IFM.py:29, 95, 101), and the
# one on the pooled interaction vector (keep[-1] = 0.8, IFM.py:123).
CODE_FEN_KEEP = (0.8, 0.7, 0.7)
CODE_FEN_SIZES = (512, 258, 128)      # IFM.py:27 (258, sic); an option, not the default

# The settings of the records committed before the recipes; missing fields read as these.
LEGACY_FILL = {"recipe": "legacy", "loss_scale": 1.0, "l2_half": False, "l2_biases": False,
               "stopping": "patience", "monitor_regression": "rmse", "keep_last": False,
               "batches": "permutation", "pretrain": {}}

# setting -> {"paper": (value, source), "code": (value, source)}
RECIPE_TABLE = {
    "loss": {
        "paper": ("summed squared error (Eq. 9)", "paper Eq. 9"),
        "code": ("half the summed squared error, tf.nn.l2_loss", f"{_IFM}:137,142"),
    },
    "optimiser": {
        "paper": ("Adagrad, lr 0.01", "paper section 5.1"),
        "code": ("Adagrad, lr 0.01", f"{_IFM}:30-31,148-150"),
    },
    "Adagrad initial accumulator": {
        "paper": ("1e-8 (the text is silent; the authors' value)", f"{_IFM}:148-150"),
        "code": ("1e-8", f"{_IFM}:148-150; {_FM}:115"),
    },
    "L2 on the FEN": {
        "paper": ("lambda ||W||^2 on the FEN's W and P, lambda 1e-5", "paper Eq. 10, section 5.1"),
        "code": ("lambda/2 ||.||^2 on the FEN's W, b and P, lambda 0.01",
                 f"{_IFM}:28 and @01feef24:137-138 (earlier versions, @00e37032:135-138, put it on "
                 "every weight, embeddings included)"),
    },
    "FEN sizes": {
        "paper": ("256 per layer, 2 layers (Frappe) / 3 (MovieLens)", "paper section 5.2, Fig. 3"),
        "code": ("the paper's sizes; the code's default [512, 258, 128] is an option (fen_sizes)",
                 f"{_IFM}:27"),
    },
    "FEN dropout": {
        "paper": ("0.3 (Frappe) / 0.4 (MovieLens) after each FEN layer", "paper section 5.2, Fig. 3b"),
        "code": ("1 - keep per layer: 0.2, 0.3, 0.3", f"{_IFM}:29,95,101"),
    },
    "dropout on the pooled interaction vector": {
        "paper": ("none", "paper Eqs. 6-7"),
        "code": ("0.2 (keep 0.8)", f"{_IFM}:123"),
    },
    "batch norm": {
        "paper": ("none", "not mentioned in the paper"),
        "code": ("after every FEN linear layer, decay 0.9 (torch momentum 0.1), eps 1e-3",
                 f"{_IFM}:91-101,226-232"),
    },
    "FEN init": {
        "paper": ("torch's default (the text is silent)", "not stated in the paper"),
        "code": ("W, b ~ N(0, sqrt(2/(k + t1))) for the first layer, N(0, sqrt(2/(t_{l-1} + t_l))) "
                 "after, P ~ N(0, sqrt(2/(t + 1)))", f"{_IFM}:201-222"),
    },
    "FM pre-training": {
        "paper": ("an FM with the same training settings, at its best validation epoch",
                  "paper section 5.1 ('pre-train with FM')"),
        "code": ("FM.py: batch norm and dropout 0.3 (keep 0.7) on the pooled vector, L2 0.01 (lambda/2) "
                 "on V, kept at its last epoch", f"{_FM}:30,93-96,106-107,236-238"),
    },
    "stopping": {
        "paper": ("at most 100 epochs; stop after 4 validation rises in a row (the text gives no rule; "
                  "'5 epochs without a new best' cut 17 of 18 early-stopped runs before this rule "
                  "would have, so we take the authors' rule, which stops only rising curves)",
                  f"{_IFM}:316-317"),
        "code": ("at most 100 epochs; stop after 4 validation rises in a row", f"{_IFM}:21,308,316-317"),
    },
    "validation metric (stopping, best epoch)": {
        "paper": ("RMSE (Fig. 3-5 plot it); every metric is also reported at its own best epoch",
                  "paper section 5.2"),
        "code": ("MAE for IFM and its FM; RMSE for NFM and AFM", f"{_IFM}:22,365-370; {_FM}:24; "
                 f"{_NFM}:297-306"),
    },
    "metrics": {
        "paper": ("MAE, RMSE on predictions clipped to the label range", "paper section 5.1"),
        "code": ("MAE, RMSE on predictions clipped to the label range", f"{_IFM}:362-364"),
    },
    "batches": {
        "paper": ("a seeded permutation per epoch (the text is silent)", "not stated in the paper"),
        "code": ("N // B random contiguous blocks of a shuffled copy (with replacement)",
                 f"{_IFM}:248-291"),
    },
    "NFM": {
        "paper": ("BN + dropout 0.5 on the pooled vector, hidden 512 with BN + dropout 0.2, L2 1e-5 on "
                  "the MLP", "paper section 5.1; NFM's run command read as NeuralFM.py:123-132"),
        "code": ("as paper, with NeuralFM.py's init, no L2 (its default lamda is 0) and its loop (RMSE "
                 "stopping)", f"{_NFM}:123-132,143-144,204-217,297-306"),
    },
    "AFM": {
        "paper": ("attention 16, dropout 0.5 on the pooled vector, L2 2 on the attention net",
                  "paper section 5.1"),
        "code": ("as paper, with AFM.py's init (W, b ~ N(0, sqrt(2/(A+K))), h ~ N(0, 1)), its loop (RMSE "
                 "stopping) and its FM.py pre-training (batch norm, dropout 0.3, no L2, last epoch)",
                 f"{_AFM}:134,143,157-160,216-234,332-336; its code/FM.py:33-51"),
    },
    "DeepFM, Wide&Deep": {
        "paper": ("the paper's sizes (200-200-200; 1024-512-256), dropout 0.5, L2 1e-5 on the MLP, FM "
                  "pre-training", "paper section 5.1"),
        "code": ("the same: no released code", "none released"),
    },
    "LibFM": {
        "paper": ("libFM's per-instance SGD step (clip(y_hat) - y), init_stdev 0.1, no regularisation; "
                  "lr 0.01, 8 instances per step", "srendle/libfm fm_learn_sgd_element.h:60-65, "
                  "fm_sgd.h:34-50, libfm.cpp:119,369-386"),
        "code": ("the same (libFM's own code)", "srendle/libfm"),
    },
}


def _recipe_fields(recipe: str, model: str, dataset: str) -> dict:
    """TrainConfig fields (and model options) of a recipe beyond the paper's numbers."""
    if recipe == "legacy":
        return {"adagrad_initial_accumulator": 0.1, "stopping": "patience", "patience": 5}
    if recipe == BENCHMARK:
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in BARS.items()}
    if recipe == "paper" or model in ("libfm", "deepfm", "wide_deep"):
        return {}      # libFM is its own code in both readings; DeepFM and Wide&Deep have none released
    if recipe != "code":
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES + (BENCHMARK,))}")
    # Every released script: tf.nn.l2_loss, l2_regularizer, random block batches, the 4-rises rule.
    fields = {"loss_scale": 0.5, "l2_half": True, "batches": "random_blocks"}
    options = {}
    fm_py = {"batch_norm": True, "interaction_dropout": 0.3}           # code/FM.py:30,93-96
    if model == "ifm":
        fields.update(l2=0.01, l2_biases=True, monitor_regression="mae",   # IFM.py:22,28
                      pretrain={"l2": 0.01, "l2_biases": False, "keep_last": True,
                                "model_options": {**fm_py, "regularize_embeddings": True}})
        options = {"batch_norm": True, "init": "code", "interaction_dropout": 0.2,
                   "dropout": [round(1 - k, 10) for k in CODE_FEN_KEEP]}
    elif model == "fm":                                                     # IFM's code/FM.py
        fields.update(l2=0.01, keep_last=True, monitor_regression="mae")
        options = {**fm_py, "regularize_embeddings": True}
    elif model == "nfm":                                                    # NeuralFM.py: lamda 0, RMSE
        fields.update(l2=0.0)
        options = {"init": "code"}
    elif model == "afm":                                                    # AFM.py; its FM.py: lamda 0
        fields.update(pretrain={"l2": 0.0, "keep_last": True, "model_options": dict(fm_py)})
        options = {"init": "code"}
    if options:
        fields["model_options"] = options
    return fields


def paper_config(dataset: str, model: str, recipe: str = "paper", **overrides):
    """The TrainConfig of `model` on `dataset` under `recipe`, with explicit overrides."""
    from ifm.training.loop import TrainConfig

    fields = {"model": model, "recipe": recipe, "learning_rate": PAPER["learning_rate"], "l2": PAPER["l2"],
              "batch_size": PAPER["batch_size"].get(dataset, 2048),
              "embedding_size": PAPER["embedding_size"].get(dataset, 64)}
    if model == "ifm":
        fields["model_options"] = {"fen_width": PAPER["ifm"]["fen_width"],
                                   **PAPER["ifm"]["best"].get(dataset, PAPER["ifm"]["best"]["frappe"])}
    if model == "libfm":
        fields.update({k: v for k, v in LIBFM.items() if recipe != "legacy" or k in ("optimizer", "batch_size")})
    recipe_fields = _recipe_fields(recipe, model, dataset)
    fields["model_options"] = {**fields.get("model_options", {}), **recipe_fields.pop("model_options", {})}
    fields.update(recipe_fields)
    options = overrides.pop("model_options", None)
    fields.update(overrides)
    if options:
        fields["model_options"] = {**fields.get("model_options", {}), **options}
    if not fields["model_options"]:
        del fields["model_options"]
    return TrainConfig(**fields)


def recipe_table():
    """The recipe table as a DataFrame (setting, paper, paper source, code, code source)."""
    import pandas as pd
    return pd.DataFrame([{"setting": k, "paper": v["paper"][0], "paper source": v["paper"][1],
                          "code": v["code"][0], "code source": v["code"][1]} for k, v in RECIPE_TABLE.items()])
