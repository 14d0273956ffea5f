"""The training loop: Adagrad (or libFM's SGD), summed squared / log loss (Eqs. 9-10),
L2 on the chosen weights, early stopping on validation with the best epoch restored,
FM pre-training of the embeddings, optional freezing of them (Table 2).

The whole dataset lives on the device as two tensors; a batch is an index slice of a
seeded permutation, so there is no per-sample Python and a CPU run repeats exactly.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import platform
import sys
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ifm import __version__
from ifm.metrics import MONITOR, evaluate
from ifm.models import DISPLAY_NAMES, PRETRAINED_WITH_FM, build_model

# Sparse gradients here come from torch's own embedding backward, which builds them correctly.
torch.sparse.check_sparse_tensor_invariants.disable()

# Bump when a change alters what a given config trains to; run caches key on it.
TRAINING_VERSION = 2   # 2: per-feature computation, libFM batch 8, divergence stop
EVAL_BATCH = 16384


@dataclass
class TrainConfig:
    model: str = "ifm"
    embedding_size: int = 256
    batch_size: int = 2048
    epochs: int = 100
    learning_rate: float = 0.01
    optimizer: str = "adagrad"            # "sgd" is libFM's optimiser
    # TensorFlow's Adagrad starts its accumulator at 0.1 (the authors' code is TensorFlow); torch's at 0.
    adagrad_initial_accumulator: float = 0.1
    l2: float = 1e-5                      # lambda of Eq. 10 on model.regularized()
    patience: int = 5                     # epochs without validation improvement before stopping
    seed: int = 0
    device: str = "cpu"
    pretrain_fm: bool | None = None       # None: the paper's choice (IFM, AFM, DeepFM, Wide&Deep)
    freeze_embeddings: bool = False       # freeze w0, w_i, v_i and train only the extra component
    bound_predictions: bool = True        # clamp regression outputs to the label range before metrics
    eval_train: bool = False              # score the whole train set each epoch (Fig. 6) instead of the running loss
    sparse_embeddings: bool | None = None  # None: sparse when the table has more rows than a batch touches
    model_options: dict = field(default_factory=dict)

    def uses_pretraining(self) -> bool:
        return self.model in PRETRAINED_WITH_FM if self.pretrain_fm is None else self.pretrain_fm

    def sparse_for(self, num_features: int, num_fields: int) -> bool:
        """Sparse row updates win once the table outgrows the rows of one batch (MovieLens, Avazu);
        below that a dense gradient and Adagrad step is cheaper (Frappe: 5,382 rows vs 20,480)."""
        if self.sparse_embeddings is not None:
            return self.sparse_embeddings
        return num_features > self.batch_size * num_fields

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def pretrain_config(self) -> "TrainConfig":
        """The FM whose w0, w and v initialise this model."""
        return dataclasses.replace(self, model="fm", optimizer="adagrad", pretrain_fm=False,
                                   freeze_embeddings=False, eval_train=False, model_options={})


@dataclass
class Run:
    model: torch.nn.Module
    record: dict


def environment(device: torch.device) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "ifm": __version__,
           "platform": platform.platform(), "threads": torch.get_num_threads(), "device": str(device)}
    env["device_name"] = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        platform.processor() or platform.machine())
    return env


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def loss_sum(output: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """Eq. 9 summed over the batch (as in the authors' code), or the summed log loss."""
    if task == "binary":
        return torch.nn.functional.binary_cross_entropy_with_logits(output, y, reduction="sum")
    return (output - y).square().sum()


def make_optimizer(model, config: TrainConfig):
    """One parameter group per kind: sparse embeddings, each L2 group, the rest.

    L2 enters as weight decay 2*lambda on its group, which is exactly the gradient of
    lambda*||W||^2 (Eq. 10) and keeps the penalty out of the hot loop.
    """
    trainable = {id(p): p for p in model.parameters() if p.requires_grad}
    groups = []
    for params, lam in model.l2_groups(config.l2):
        params = [trainable.pop(id(p)) for p in params if id(p) in trainable]
        if params:
            groups.append({"params": params, "weight_decay": 2 * lam})
    sparse = [m.weight for m in model.modules() if getattr(m, "sparse", False) and id(m.weight) in trainable]
    for p in sparse:
        trainable.pop(id(p))
    groups += [{"params": sparse, "weight_decay": 0.0}, {"params": list(trainable.values()), "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if config.optimizer == "adagrad":
        return torch.optim.Adagrad(groups, lr=config.learning_rate,
                                   initial_accumulator_value=config.adagrad_initial_accumulator)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.learning_rate)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; choose adagrad or sgd")


def build_for(config: TrainConfig, dataset, device) -> torch.nn.Module:
    """The model of `config`, sized for `dataset`, on `device`, with its data-dependent speed-ups."""
    model = build_model(config.model, dataset.num_features, dataset.num_fields, config.embedding_size,
                        sparse=config.sparse_for(dataset.num_features, dataset.num_fields),
                        **config.model_options).to(device)
    model.use_feature_fields(torch.cat([dataset.train.x, dataset.valid.x, dataset.test.x]).to(device))
    return model


def train_step(model, optimizer, x: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """One optimiser step on one batch; returns the batch's summed loss (detached)."""
    if _plain_sgd(model, optimizer):
        return model.sgd_step(x, y, optimizer.param_groups[0]["lr"], task)
    loss = loss_sum(model(x), y, task)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def _plain_sgd(model, optimizer) -> bool:
    """Whether the step is plain SGD of a model that writes that step out (the libFM baseline):
    one learning rate, no momentum or weight decay, every parameter trained."""
    if not (type(optimizer) is torch.optim.SGD and hasattr(model, "sgd_step")):
        return False
    groups = optimizer.param_groups
    return (all(g["momentum"] == 0 and g["weight_decay"] == 0 and g["lr"] == groups[0]["lr"] for g in groups)
            and sum(len(g["params"]) for g in groups) == len(list(model.parameters())))


@torch.no_grad()
def predict(model, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i:i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)])


def score(model, split, task: str, label_range) -> dict:
    return evaluate(predict(model, split.x), split.y, task, label_range)


def train(config: TrainConfig, dataset, *, pretrained: dict | None = None, progress: bool = True,
          pretrain_record: dict | None = None) -> Run:
    """Train `config.model` on `dataset` and return the best-epoch model and its run record.

    `pretrained` (an FM's fm_state()) skips the FM pre-training run, e.g. when a cache has it.
    """
    device = torch.device(config.device)
    task = dataset.task
    label_range = (dataset.train.y.min().item(), dataset.train.y.max().item()) \
        if task == "regression" and config.bound_predictions else None

    if config.uses_pretraining() and pretrained is None:
        fm_run = train(config.pretrain_config(), dataset, progress=progress)
        pretrained, pretrain_record = fm_run.model.fm_state(), summary_of(fm_run.record)

    generator = seed_everything(config.seed)
    model = build_for(config, dataset, device)
    if config.uses_pretraining():
        model.load_state_dict(pretrained, strict=False)
    if config.freeze_embeddings:
        for p in model.feature_parameters():
            p.requires_grad_(False)
    optimizer = make_optimizer(model, config)

    train_split, valid, test = (_to(split, device) for split in (dataset.train, dataset.valid, dataset.test))
    x_train, y_train = train_split.x, train_split.y
    n = len(x_train)
    monitor = MONITOR[task]
    history, best, best_state, bad_epochs, diverged = [], float("inf"), None, 0, False
    train_seconds, started = 0.0, time.perf_counter()
    bar = tqdm(range(1, config.epochs + 1), desc=f"{DISPLAY_NAMES[config.model]} on {dataset.name}",
               disable=not progress, file=sys.stderr, leave=False)
    for epoch in bar:
        model.train()
        epoch_start = time.perf_counter()
        order = torch.randperm(n, generator=generator).to(device)
        loss_total = torch.zeros((), device=device, dtype=torch.float64)
        for start in range(0, n, config.batch_size):
            idx = order[start:start + config.batch_size]
            loss_total += train_step(model, optimizer, x_train[idx], y_train[idx], task)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds += time.perf_counter() - epoch_start

        mean_loss = loss_total.item() / n
        row = {"epoch": epoch, "train_loss": mean_loss, "seconds": time.perf_counter() - epoch_start}
        if config.eval_train:
            row.update({f"train_{k}": v for k, v in score(model, train_split, task, label_range).items()})
        elif task == "regression":
            row["train_rmse"] = mean_loss ** 0.5   # running RMSE over the epoch, dropout on
        row.update({f"valid_{k}": v for k, v in score(model, valid, task, label_range).items()})
        history.append(row)
        bar.set_postfix({monitor: f"{row['valid_' + monitor]:.4f}"})

        if not math.isfinite(row["valid_" + monitor]):
            diverged = True           # NaN or inf: nothing later can recover; keep the best finite epoch
            break
        if row["valid_" + monitor] < best:
            best, best_state, bad_epochs = row["valid_" + monitor], copy.deepcopy(model.state_dict()), 0
        else:
            bad_epochs += 1
            if bad_epochs >= config.patience:
                break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    finite = [r for r in history if math.isfinite(r["valid_" + monitor])]
    best_epoch = min(finite, key=lambda r: r["valid_" + monitor])["epoch"] if finite else None
    record = {
        "config": config.to_dict(),
        "dataset": {"name": dataset.name, "task": task, "num_features": dataset.num_features,
                    "num_fields": dataset.num_fields, "provenance": dataset.provenance},
        "training_version": TRAINING_VERSION,
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "diverged": diverged,
        "valid": score(model, valid, task, label_range),
        "test": score(model, test, task, label_range),
        "history": history,
        "wall_seconds": time.perf_counter() - started,
        "train_seconds": train_seconds,
        "samples_per_second": n * len(history) / train_seconds if train_seconds else float("nan"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "environment": environment(device),
        "pretrain": pretrain_record,
    }
    return Run(model, record)


def summary_of(record: dict) -> dict:
    """The short form of a run record: what a dependent run needs to say where it came from."""
    keys = ("best_epoch", "epochs_run", "valid", "test", "wall_seconds")
    return {"model": record["config"]["model"], **{k: record[k] for k in keys}}


def _to(split, device):
    return type(split)(split.x.to(device), split.y.to(device))
