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
from tqdm import tqdm       # not tqdm.auto: in a notebook without ipywidgets it warns on import

from ifm._version import __version__
from ifm.training import protocol
from ifm.training.metrics import MONITOR, evaluate
from ifm.models import DISPLAY_NAMES, PRETRAINED_WITH_FM, build_model
from ifm.data.registry import portable_provenance

# Sparse gradients here come from torch's own embedding backward, which builds them correctly.
torch.sparse.check_sparse_tensor_invariants.disable()

# Bump when a change alters what a given config trains to; run caches key on it.
TRAINING_VERSION = 3   # 3: recipes (paper / code), test metrics every epoch, libFM's clipped step
EVAL_BATCH = 16384


@dataclass
class TrainConfig:
    """Everything that decides what a run trains to; `ifm.training.recipes` fills it per recipe and
    cites the source of every value (the paper's text or the authors' released code)."""
    model: str = "ifm"
    recipe: str = "paper"                 # which reading of the method set the fields below
    embedding_size: int = 256
    batch_size: int = 2048
    epochs: int = 100
    learning_rate: float = 0.01
    optimizer: str = "adagrad"            # "sgd" is libFM's optimiser
    adagrad_initial_accumulator: float = 1e-8   # the authors' value in every script
    loss_scale: float = 1.0               # 1: Eq. 9's summed squared error; 0.5: tf.nn.l2_loss
    l2: float = 1e-5                      # lambda of Eq. 10 on model.regularized()
    l2_half: bool = False                 # lambda/2 ||W||^2 (TensorFlow's l2_regularizer), not lambda ||W||^2
    l2_biases: bool = False               # the penalty also on the biases of the regularised layers
    stopping: str = "rises"               # "rises": stop after 4 validation rises in a row; "patience"
    patience: int = 5                     # with stopping="patience": epochs without a new best
    monitor_regression: str = "rmse"      # the validation metric that stops and picks the epoch (CTR: logloss)
    keep_last: bool = False               # keep the last epoch's weights, not the best epoch's
    batches: str = "permutation"          # or "random_blocks": N // B random contiguous blocks per epoch
    seed: int = 0
    device: str = "cpu"
    pretrain_fm: bool | None = None       # None: the paper's choice (IFM, AFM, DeepFM, Wide&Deep)
    pretrain: dict = field(default_factory=dict)   # changes of the FM pre-training run (recipe code: FM.py)
    freeze_embeddings: bool = False       # freeze w0, w_i, v_i and train only the extra component
    bound_predictions: bool = True        # clamp regression outputs to the label range before metrics
    eval_train: bool = False              # score the whole train set each epoch (Fig. 6) instead of the running loss
    sparse_embeddings: bool | None = None  # None: sparse when the table has more rows than a batch touches
    model_options: dict = field(default_factory=dict)
    protocol: dict = field(default_factory=dict)   # the open benchmark's loop (ifm.training.protocol); {}: the paper's

    def __post_init__(self):
        if self.stopping not in ("rises", "patience"):
            raise ValueError(f"stopping must be 'rises' or 'patience', got {self.stopping!r}")
        if self.batches not in ("permutation", "random_blocks"):
            raise ValueError(f"batches must be 'permutation' or 'random_blocks', got {self.batches!r}")
        if self.monitor_regression not in ("rmse", "mae"):
            raise ValueError(f"monitor_regression must be 'rmse' or 'mae', got {self.monitor_regression!r}")
        protocol.settings(self.protocol)            # unknown protocol settings are refused here

    def uses_pretraining(self) -> bool:
        return self.model in PRETRAINED_WITH_FM if self.pretrain_fm is None else self.pretrain_fm

    def sparse_for(self, num_features: int, num_fields: int) -> bool:
        """Sparse row updates win once the table outgrows the rows of one batch (MovieLens, Avazu);
        below that a dense gradient and Adagrad step is cheaper (Frappe: 5,382 rows vs 20,480).
        An L2 penalty on the embeddings needs dense gradients (torch's Adagrad decays no sparse ones),
        and so does Adam (torch's Adam takes no sparse gradient)."""
        if (self.model_options.get("regularize_embeddings") and self.l2 > 0) or self.optimizer == "adam":
            return False
        if self.sparse_embeddings is not None:
            return self.sparse_embeddings
        return num_features > self.batch_size * num_fields

    def to_dict(self) -> dict:
        """Every field; `protocol` only when set, so the records and keys of the paper's runs are those
        made before it existed."""
        d = dataclasses.asdict(self)
        if not d["protocol"]:
            del d["protocol"]
        return d

    def pretrain_config(self) -> "TrainConfig":
        """The FM whose w0, w and v initialise this model (with the recipe's `pretrain` changes)."""
        base = dataclasses.replace(self, model="fm", optimizer="adagrad", pretrain_fm=False, pretrain={}, protocol={},
                                   freeze_embeddings=False, eval_train=False, model_options={})
        return dataclasses.replace(base, **self.pretrain)


def stop_now(values: list[float], rule: str, patience: int) -> bool:
    """Early stopping on the validation curve so far (lower is better).

    "rises": the authors' rule, stop once the last four epochs each rose
    (v[-1] > v[-2] > v[-3] > v[-4] > v[-5], with more than 5 epochs; code/IFM.py:316-317);
    "patience": stop after `patience` epochs without a new best.
    """
    if rule == "rises":
        return len(values) > 5 and all(values[-i] > values[-i - 1] for i in range(1, 5))
    best = min(range(len(values)), key=values.__getitem__)
    return len(values) - 1 - best >= patience


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


def batch_indices(n: int, batch_size: int, rule: str, generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch's batches: a seeded permutation cut in order, or (the released code's rule,
    code/IFM.py:248-291) N // B blocks of a shuffled copy, each starting at a random offset:
    drawn with replacement, so blocks overlap and some instances go unseen in an epoch."""
    order = torch.randperm(n, generator=generator)
    if rule == "permutation":
        batches = list(order.split(batch_size))
        if len(batches) > 1 and len(batches[-1]) < 2:    # batch norm cannot train on one instance
            batches[-2:] = [torch.cat(batches[-2:])]
        return batches
    blocks = max(1, n // batch_size)
    starts = torch.randint(0, max(1, n - batch_size), (blocks,), generator=generator).tolist()
    return [order[s:s + batch_size] for s in starts]


def make_optimizer(model, config: TrainConfig):
    """One parameter group per kind: sparse embeddings, each L2 group, the rest.

    L2 enters as weight decay 2*lambda on its group, which is exactly the gradient of
    lambda*||W||^2 (Eq. 10) and keeps the penalty out of the hot loop.
    """
    trainable = {id(p): p for p in model.parameters() if p.requires_grad}
    groups = []
    # Under the benchmark's protocol its own lambda_e and lambda_n are the only penalties (in the step):
    # AFM's fixed attention L2 (the AFM paper's) is not FuxiCTR's, whose AFM has net_regularizer 0.
    for params, lam in [] if config.protocol else model.l2_groups(config.l2, biases=config.l2_biases):
        params = [trainable.pop(id(p)) for p in params if id(p) in trainable]
        if params:
            # d/dW of lambda ||W||^2 is 2 lambda W; of TensorFlow's lambda/2 ||W||^2, lambda W.
            groups.append({"params": params, "weight_decay": (1 if config.l2_half else 2) * lam})
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
    if config.optimizer == "adam":          # the open benchmark's (FuxiCTR's default betas and eps)
        return torch.optim.Adam(groups, lr=config.learning_rate)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; choose adagrad, sgd or adam")


def build_for(config: TrainConfig, dataset, device) -> torch.nn.Module:
    """The model of `config`, sized for `dataset`, on `device`, with its data-dependent speed-ups."""
    model = build_model(config.model, dataset.num_features, dataset.num_fields, config.embedding_size,
                        sparse=config.sparse_for(dataset.num_features, dataset.num_fields),
                        **config.model_options)
    if config.protocol:
        protocol.initialise(model, config.protocol)     # FuxiCTR's start under the benchmark's protocol
    model = model.to(device)
    model.use_feature_fields(torch.cat([dataset.train.x, dataset.valid.x, dataset.test.x]).to(device))
    return model


def train_step(model, optimizer, x: torch.Tensor, y: torch.Tensor, task: str, loss_scale: float = 1.0,
               label_range=None) -> torch.Tensor:
    """One optimiser step on one batch; returns the batch's summed loss (detached)."""
    if _plain_sgd(model, optimizer):
        return model.sgd_step(x, y, optimizer.param_groups[0]["lr"], task, label_range)
    loss = loss_scale * loss_sum(model(x), y, task)
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
    if config.protocol:
        protocol.check_task(task, dataset.name)
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
    monitor = config.monitor_regression if task == "regression" else MONITOR[task]
    if config.protocol:
        monitor = protocol.settings(config.protocol)["monitor"]
    sgn = protocol.sign(monitor)                # sgn * validation value: lower is better
    # tf.nn.l2_loss halves a squared error; no released script halves a log loss.
    loss_scale = config.loss_scale if task == "regression" else 1.0
    history, best, best_state, saved_epoch, diverged = [], float("inf"), None, None, False
    train_seconds, started = 0.0, time.perf_counter()
    bar = tqdm(range(1, config.epochs + 1), desc=f"{DISPLAY_NAMES[config.model]} on {dataset.name}",
               disable=not progress, file=sys.stderr, leave=False)
    for epoch in bar:
        model.train()
        epoch_start = time.perf_counter()
        loss_total = torch.zeros((), device=device, dtype=torch.float64)
        seen = 0
        for idx in batch_indices(n, config.batch_size, config.batches, generator):
            idx = idx.to(device)
            if config.protocol:
                loss_total += protocol.step(model, optimizer, x_train[idx], y_train[idx], config.protocol)
            else:
                loss_total += train_step(model, optimizer, x_train[idx], y_train[idx], task, loss_scale, label_range)
            seen += len(idx)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds += time.perf_counter() - epoch_start

        mean_loss = loss_total.item() / seen
        row = {"epoch": epoch, "train_loss": mean_loss, "seconds": time.perf_counter() - epoch_start}
        if config.eval_train:
            row.update({f"train_{k}": v for k, v in score(model, train_split, task, label_range).items()})
        elif task == "regression" and not _plain_sgd(model, optimizer):
            row["train_rmse"] = (mean_loss / loss_scale) ** 0.5   # running RMSE over the epoch, dropout on
        row.update({f"valid_{k}": v for k, v in score(model, valid, task, label_range).items()})
        row.update({f"test_{k}": v for k, v in score(model, test, task, label_range).items()})
        history.append(row)
        bar.set_postfix({monitor: f"{row['valid_' + monitor]:.4f}"})

        if not math.isfinite(row["valid_" + monitor]):
            diverged = True           # NaN or inf: nothing later can recover; keep the best finite epoch
            break
        values = [sgn * r["valid_" + monitor] for r in history]
        if protocol.improved(values, config.protocol) if config.protocol else values[-1] < best:
            best, best_state, saved_epoch = values[-1], copy.deepcopy(model.state_dict()), epoch
        elif config.protocol:
            protocol.cut_learning_rate(optimizer, config.protocol)
        if (protocol.epochs_without_gain(values, config.protocol) >= config.patience if config.protocol
                else stop_now(values, config.stopping, config.patience)):
            break
    bar.close()
    if best_state is not None and not (config.keep_last and not diverged):
        model.load_state_dict(best_state)
    finite = [r for r in history if math.isfinite(r["valid_" + monitor])]
    best_epoch = min(finite, key=lambda r: sgn * r["valid_" + monitor])["epoch"] if finite else None
    # The epoch whose weights are kept: under the protocol a gain below min_delta is no gain, so
    # the best epoch by value can be a later one than the weights kept.
    kept_epoch = history[-1]["epoch"] if config.keep_last and not diverged else saved_epoch or best_epoch
    record = {
        "config": config.to_dict(),
        "dataset": {"name": dataset.name, "task": task, "num_features": dataset.num_features,
                    "num_fields": dataset.num_fields, "provenance": portable_provenance(dataset.provenance)},
        "training_version": TRAINING_VERSION,
        "epochs_run": len(history),
        "monitor": monitor,
        "best_epoch": best_epoch,
        "kept_epoch": kept_epoch,
        "best_by_metric": best_by_metric(history),
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
    if hasattr(model, "factors"):
        record["factors_test"] = factor_spread(model, test.x)
    return Run(model, record)


@torch.no_grad()
def factor_spread(model, x: torch.Tensor) -> dict:
    """Percentiles of IFM's input-aware factors m_x,i over every (instance, field) of x: how far
    the FEN moves features away from the FM's factor 1 (the paper's Table 1 shows 0.05-3.12)."""
    model.eval()
    m = torch.cat([model.factors(x[i:i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)]).flatten().double()
    q = torch.quantile(m[torch.randperm(len(m), generator=torch.Generator().manual_seed(0))[:1_000_000]].cpu(),
                       torch.tensor([0.0, 0.05, 0.5, 0.95, 1.0], dtype=torch.float64))
    return {"min": q[0].item(), "p5": q[1].item(), "median": q[2].item(), "p95": q[3].item(), "max": q[4].item(),
            "std": m.std().item()}


def best_by_metric(history: list[dict]) -> dict:
    """For each validation metric, the epoch where it is best and the valid and test values there:
    MAE at its own best epoch, not only at the RMSE-best one."""
    out = {}
    for key in [k for k in (history[0] if history else {}) if k.startswith("valid_")]:
        metric = key[len("valid_"):]
        rows = [r for r in history if math.isfinite(r[key])]
        if not rows:
            continue
        pick = max if metric == "auc" else min
        row = pick(rows, key=lambda r: r[key])
        out[metric] = {"epoch": row["epoch"], "valid": row[key], "test": row.get(f"test_{metric}")}
    return out


def summary_of(record: dict) -> dict:
    """The short form of a run record: what a dependent run needs to say where it came from."""
    keys = ("best_epoch", "epochs_run", "valid", "test", "wall_seconds")
    return {"model": record["config"]["model"], **{k: record[k] for k in keys}}


def _to(split, device):
    return type(split)(split.x.to(device), split.y.to(device))
