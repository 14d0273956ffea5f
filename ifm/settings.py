"""The paper's settings (section 5.1 and the IFM best hyper-parameters of section 5.2).

These are settings, not results: the reported numbers live in the book's data
(shared/paper/reported.json). `paper_config` turns them into a TrainConfig.
"""
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

# libFM trains with per-sample SGD. Under the summed loss a mini-batch of B applies B
# per-sample steps of lr 0.01 at once; B = 32 already diverged (NaN in the first epoch on
# Frappe at embedding 256), B = 8 is stable there and runs the batch as tensor operations.
LIBFM = {"optimizer": "sgd", "batch_size": 8}


def paper_config(dataset: str, model: str, **overrides):
    """The TrainConfig the paper would use for `model` on `dataset`, with explicit overrides."""
    from ifm.train import TrainConfig

    fields = {"model": model, "learning_rate": PAPER["learning_rate"], "l2": PAPER["l2"],
              "batch_size": PAPER["batch_size"].get(dataset, 2048),
              "embedding_size": PAPER["embedding_size"].get(dataset, 64)}
    if model == "ifm":
        fields["model_options"] = {"fen_width": PAPER["ifm"]["fen_width"],
                                   **PAPER["ifm"]["best"].get(dataset, PAPER["ifm"]["best"]["frappe"])}
    if model == "libfm":
        fields.update(LIBFM)
    options = overrides.pop("model_options", None)
    fields.update(overrides)
    if options:
        fields["model_options"] = {**fields.get("model_options", {}), **options}
    return TrainConfig(**fields)
